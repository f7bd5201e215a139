"""The campaign loop's end-to-end proof, on the sample: 200 campaigns created from the
served model, launched, given a simulated post-launch log and judged from it, through
the same functions the CLI, the API and the UI call, with a real store.

Each campaign freezes a 10,000-user segment of a different product, split 50/50 by the
hashed assignment. Its post-launch log (`experiments.simulate`) has treatment users
convert at 5% x (1 + lift) and holdout users at 5%, with background events that do not
count. Three judgements per campaign:

- lift +20%: the report's 95% interval of the relative lift covers +20% in >= 182 of
  200 (190 expected);
- lift 0: "significant" at alpha 0.05 in <= 18 of 200 (10 expected);
- the split broken on purpose afterwards (holdout users moved to treatment until it is
  60/40 where 50/50 was planned): the sample-ratio check flags all 200.

Run `pytest tests/test_campaign_loop.py -s` to see the counts (docs/campaigns.md).
"""

from __future__ import annotations

from datetime import datetime

import pytest

from audience import artifact
from audience.data.generate import generate
from audience.data.schema import DEFAULT_EVENT_WEIGHTS
from audience.model.codes import coded
from audience.model.train import train
from audience.serving import campaigns
from audience.serving.index import Index
from audience.serving.segment import Filters
from audience.settings import Settings
from audience.store.store import Fatigue, Store

CAMPAIGNS = 200
SIZE = 10_000
LAUNCH = "2023-04-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Index, Store]:
    root = tmp_path_factory.mktemp("loop")
    events, catalog = generate("marketplace")
    trained = train(coded(events, catalog, DEFAULT_EVENT_WEIGHTS), DEFAULT_EVENT_WEIGHTS)
    artifact.publish(root, trained.tables, trained.model, {"config": {"n": 10}})
    return Index.open(root), Store.open(None, root)


def _break_split(store: Store, campaign_id: str, treatment: int, holdout: int) -> None:
    """Move holdout users to treatment until the arms are 60/40."""
    moved = holdout - round(0.4 * (treatment + holdout))
    with store.engine.transaction(write=True) as tx:
        users = tx.run(
            "SELECT user_id FROM assignments WHERE campaign_id = ? AND arm = ? "
            "ORDER BY rank LIMIT ?",
            (campaign_id, "holdout", moved),
        )
        tx.many(
            "UPDATE assignments SET arm = ? WHERE campaign_id = ? AND user_id = ?",
            [("treatment", campaign_id, u) for (u,) in users],
        )


def test_two_hundred_simulated_campaigns_judged_from_their_logs(
    sample: tuple[Index, Store],
) -> None:
    index, store = sample
    settings = Settings()
    covered = significant = flagged = 0
    for i, product in enumerate(index.sample(CAMPAIGNS, seed=7)):
        plan = campaigns.Plan(name=f"sim {i}", holdout_share=0.5, window_days=14)
        made = campaigns.create(index, store, settings, product, SIZE, plan, Filters(), Fatigue())
        campaigns.launch(store, made.id, datetime.fromisoformat(LAUNCH))
        for lift, seed in ((0.2, i), (0.0, 10_000 + i)):
            log = campaigns.simulate(store, made.id, 0.05, lift, seed, background=500)
            judged, _ = campaigns.report(store, made.id, log, None, settings)
            interval = judged.comparison.relative_lift
            assert interval is not None
            if lift and interval.low <= lift <= interval.high:
                covered += 1
            if not lift and judged.comparison.significant:
                significant += 1
        _break_split(store, made.id, made.treatment, made.holdout)
        log = campaigns.simulate(store, made.id, 0.05, 0.2, 20_000 + i, background=500)
        judged, _ = campaigns.report(store, made.id, log, None, settings)
        flagged += judged.sample_ratio.mismatch
    print(
        f"\n{CAMPAIGNS} campaigns: interval covered the true lift in {covered}; "
        f"significant without effect in {significant}; broken split flagged in {flagged}"
    )
    assert covered >= 182
    assert significant <= 18
    assert flagged == CAMPAIGNS
