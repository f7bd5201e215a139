"""Campaigns: a segment frozen, split, launched, and judged from the log.

`create` ranks the product's segment from the served model (opt-outs and the contact
rules applied, as for any segment), splits it by the hashed treatment/holdout assignment
of `experiments.campaign` (keyed by the campaign's id), checks the split for a sample
ratio mismatch, and stores the campaign with its model version, its rules and every
user's arm, rank and score. `launch` records the treatment arm as contacted (now, or
`at` for a launch that happened elsewhere); `report` judges the launched campaign from
any event log (`experiments.judge`) and keeps the report with the campaign. The CLI,
the API and the UI all call these functions.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import polars as pl

from audience.data.schema import USER
from audience.errors import ConfigError, StateError
from audience.experiments.abtest import sample_ratio_mismatch
from audience.experiments.campaign import CONTROL, assign_groups
from audience.experiments.judge import (
    ARM,
    HOLDOUT,
    SCOPES,
    TREATMENT,
    CampaignReport,
    judge,
    write_report,
)
from audience.experiments.simulate import simulate_outcome
from audience.serving.index import Index
from audience.serving.segment import Filters, segment
from audience.settings import Settings
from audience.store.store import CREATED, LAUNCHED, Campaign, Fatigue, Store, epoch

#: The channel a launch records its contacts under unless told otherwise.
DEFAULT_CHANNEL: Final = "campaign"
#: A name holds something other than ASCII spaces (spelled out: JSON Schema and Python
#: disagree on which characters `\s` means).
NAME_PATTERN: Final = "[^ \t\n\r\f\v]"
MAX_NAME: Final = 200


@dataclass(frozen=True)
class Plan:
    """What a new campaign asks for, beyond the segment's product, size and filters."""

    name: str
    holdout_share: float = 0.5
    conversion: str = "purchased"
    scope: str = "product"
    window_days: float = 14.0
    cost_per_contact: float = 0.0
    value_per_conversion: float = 0.0
    channel: str = DEFAULT_CHANNEL
    like: tuple[str, ...] = ()
    category: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # filters, as asked, for the record

    def check(self, settings: Settings) -> None:
        if not re.search(NAME_PATTERN, self.name) or len(self.name) > MAX_NAME:
            raise ConfigError("name", f"give a name of 1 to {MAX_NAME} characters, not blank")
        if not 0 < self.holdout_share < 1:
            raise ConfigError("holdout", f"must be in (0, 1), got {self.holdout_share}")
        if self.conversion not in settings.event_types:
            known = ", ".join(sorted(settings.event_types))
            raise ConfigError(
                "conversion", f"unknown event type {self.conversion!r}; known: {known}"
            )
        if self.scope not in SCOPES:
            raise ConfigError("scope", f"must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if not self.window_days > 0:
            raise ConfigError("window_days", f"must be above 0, got {self.window_days}")
        for name in ("cost_per_contact", "value_per_conversion"):
            if getattr(self, name) < 0:
                raise ConfigError(name, "must be at least 0")


def create(
    index: Index,
    store: Store,
    settings: Settings,
    product_id: str,
    k: int,
    plan: Plan,
    filters: Filters,
    rules: Fatigue,
) -> Campaign:
    """Freeze the product's first k users (after every filter and rule), split them,
    check the split and store it all; the stored campaign."""
    plan.check(settings)
    ranked = dataclasses.replace(filters, fatigued=store.fatigued(rules))
    found = segment(index, product_id, k, plan.like, plan.category, ranked)
    if found.rows.is_empty():
        # The model and the contact history decide this, not the request: a state conflict.
        raise StateError("size", "no user qualifies for this campaign now: loosen the filters")
    cid = f"c-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
    users = found.rows.get_column(USER).to_list()
    groups = assign_groups(users, cid, plan.holdout_share)
    arms = groups.get_column("group").replace({CONTROL: HOLDOUT}).to_list()
    treated = arms.count(TREATMENT)
    notes = list(found.notes)
    if treated in (0, len(arms)):
        empty = HOLDOUT if treated else TREATMENT
        notes.append(f"the {empty} arm is empty: this campaign cannot be judged")
    srm = sample_ratio_mismatch(
        [treated, len(arms) - treated], [1 - plan.holdout_share, plan.holdout_share]
    )
    spec = {
        "size": k,
        "holdout_share": plan.holdout_share,
        "conversion": plan.conversion,
        "scope": plan.scope,
        "window_days": plan.window_days,
        "cost_per_contact": plan.cost_per_contact,
        "value_per_conversion": plan.value_per_conversion,
        "channel": plan.channel,
        "like": list(plan.like),
        "category": plan.category,
        "strategy": found.strategy,
        "filters": plan.extra,
        "fatigue": rules.as_dict(),
        "removed": found.removed,
        "notes": notes,
    }
    record = Campaign(
        id=cid,
        name=plan.name.strip(),
        product_id=product_id,
        state=CREATED,
        created_at=epoch(None),
        launched_at=None,
        model_version=index.version,
        spec=spec,
        srm=srm.to_dict(),
        treatment=treated,
        holdout=len(arms) - treated,
        report=None,
    )
    scores = found.rows.get_column("score").to_list()
    rows = [
        (user, arm, rank, score)
        for rank, (user, arm, score) in enumerate(zip(users, arms, scores, strict=True), 1)
    ]
    store.add_campaign(record, rows)
    return record


def launch(store: Store, campaign_id: str, at: datetime | None = None) -> Campaign:
    """Launch now, or record that it launched at `at` (not in the future)."""
    when = epoch(at)
    if at is not None and when > epoch(None) + 60:
        raise ConfigError("at", f"{at.isoformat()} is in the future: launch then, not now")
    channel = str(store.campaign(campaign_id).spec.get("channel", DEFAULT_CHANNEL))
    return store.launch(campaign_id, when, channel)


def assignments(store: Store, campaign_id: str, arm: str | None = None) -> pl.DataFrame:
    """The list to send: user_id, arm, rank, score (one arm, or both), by rank."""
    rows = store.assignments(campaign_id, arm)
    return pl.DataFrame(
        rows,
        schema={USER: pl.String, ARM: pl.String, "rank": pl.Int64, "score": pl.Float64},
        orient="row",
    )


def launched(store: Store, campaign_id: str) -> tuple[Campaign, datetime]:
    """The campaign and its launch time; a StateError when it is not launched."""
    found = store.campaign(campaign_id)
    if found.state != LAUNCHED or found.launched_at is None:
        raise StateError("campaign", f"{campaign_id} is not launched yet: launch it first")
    return found, datetime.fromtimestamp(found.launched_at, UTC)


def simulate(
    store: Store, campaign_id: str, baseline: float, lift: float, seed: int, background: int = 0
) -> pl.DataFrame:
    """A post-launch log of the launched campaign in which treatment users convert at
    baseline x (1 + lift) and holdout users at baseline (`experiments.simulate`)."""
    found, at = launched(store, campaign_id)
    return simulate_outcome(
        assignments(store, campaign_id),
        product_id=found.product_id,
        launched_at=at,
        window_days=found.spec["window_days"],
        baseline=baseline,
        lift=lift,
        seed=seed,
        conversion=found.spec["conversion"],
        background=background,
    )


def report(
    store: Store,
    campaign_id: str,
    events: pl.DataFrame,
    catalog: pl.DataFrame | None,
    settings: Settings,
    out_dir: Path | None = None,
) -> tuple[CampaignReport, dict[str, Path]]:
    """Judge a launched campaign from `events`, store the report with it, and write it
    (report.json, .md, .png) to `out_dir` when given."""
    found, at = launched(store, campaign_id)
    spec = found.spec
    judged = judge(
        assignments(store, campaign_id),
        events,
        product_id=found.product_id,
        category=spec.get("category"),
        conversion=spec["conversion"],
        scope=spec["scope"],
        launched_at=at,
        window_days=spec["window_days"],
        holdout_share=spec["holdout_share"],
        cost_per_contact=spec["cost_per_contact"],
        value_per_conversion=spec["value_per_conversion"],
        catalog=catalog,
        settings=settings,
    )
    store.save_report(campaign_id, judged.to_dict())
    written = write_report(judged, out_dir) if out_dir is not None else {}
    return judged, written
