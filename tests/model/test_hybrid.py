"""The collaborative term (`audience.model.hybrid`): `auto` follows the log's evidence,
the weight is chosen on a slice of the training period only, and the term's users come
with their own reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from audience.data.generate import generate
from audience.data.schema import TIME
from audience.data.stats import ceiling, retention, time_split
from audience.errors import ConfigError
from audience.evidence.evaluate import backtest, split
from audience.model import cf, hybrid
from audience.model.audiences import AudienceConfig
from audience.model.codes import coded
from audience.model.train import train
from audience.settings import DEFAULT_EVENT_WEIGHTS
from tests.cli.test_cli import run


@pytest.fixture(scope="module")
def loyal() -> tuple[pl.DataFrame, pl.DataFrame]:
    return generate("loyal", scale=0.05)


def test_auto_follows_the_cheap_criteria(loyal: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    log = coded(*loyal, DEFAULT_EVENT_WEIGHTS)
    on = hybrid.decide("auto", log)
    assert on.on and on.criteria["retention_30d"] > 0.10 and on.criteria["ceiling"] > 0.30
    assert "supports CF" in on.why
    marketplace = coded(*generate("marketplace", scale=0.05), DEFAULT_EVENT_WEIGHTS)
    off = hybrid.decide("auto", marketplace)
    assert not off.on and off.criteria["retention_30d"] < 0.10
    assert "retention_30d" in off.why and "does not support" in off.why
    assert hybrid.decide("on", marketplace).on and not hybrid.decide("off", log).on
    assert not hybrid.decide("auto", log, AudienceConfig(repeat=True)).on
    with pytest.raises(ConfigError, match="cf"):
        hybrid.decide("on", log, AudienceConfig(repeat=True))
    # Past cart abandoners kept as candidates: the slice cannot judge the term on them.
    kept = hybrid.decide("auto", log, AudienceConfig(exclude=("purchased",)))
    assert not kept.on and "--exclude" in kept.why
    with pytest.raises(ConfigError, match="--exclude"):
        hybrid.decide("on", log, AudienceConfig(exclude=("purchased",)))
    # A cap deals users from category pools, which cannot carry a term per product.
    capped = hybrid.decide("auto", log, AudienceConfig(cap=3))
    assert not capped.on and "--cap" in capped.why
    with pytest.raises(ConfigError, match="--cap"):
        hybrid.decide("on", log, AudienceConfig(cap=3))
    every = tuple(sorted(DEFAULT_EVENT_WEIGHTS))  # naming every type is the default
    assert hybrid.decide("auto", log, AudienceConfig(exclude=every)).on
    with pytest.raises(ConfigError, match="unknown mode"):
        hybrid.decide("sometimes", log)


@pytest.mark.parametrize("preset", ["loyal", "marketplace"])
def test_the_criteria_are_the_analysis_figures(preset: str) -> None:
    """`hybrid.criteria` (NumPy, on the coded log) and `audience analyze`'s statistics
    (Polars, on the events) agree."""
    events, catalog = generate(preset, scale=0.05)
    found = hybrid.criteria(coded(events, catalog, DEFAULT_EVENT_WEIGHTS))
    assert found["retention_30d"] == pytest.approx(retention(events, 30), abs=1e-12)
    assert found["ceiling"] == pytest.approx(ceiling(*time_split(events)), abs=1e-12)


def test_the_weight_is_chosen_before_the_test_period(
    loyal: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """Trained as `audience evaluate` trains (on the events before its cutoff), the
    validation slice and the fit before it both end before the cutoff, in order."""
    events, catalog = loyal
    early, _, cutoff = split(events, None)
    trained = train(coded(early, catalog, DEFAULT_EVENT_WEIGHTS), DEFAULT_EVENT_WEIGHTS, cf="on")
    made = trained.model["cf"]
    assert made["on"] and made["mode"] == "on"
    fit, check = made["validation"]["slice"]["fit"], made["validation"]["slice"]["validation"]
    moments = [datetime.fromisoformat(fit[k]) for k in ("first", "last")]
    moments += [datetime.fromisoformat(check[k]) for k in ("first", "last")]
    assert moments == sorted(moments) and moments[-1] < cutoff
    fit_part, validation = time_split(early)
    assert (fit["events"], check["events"]) == (fit_part.height, validation.height)
    assert moments[2] == validation.get_column(TIME).min()
    trials = made["validation"]["ndcg@10_by_weight"]
    assert set(trials) == {f"{w:g}" for w in hybrid.WEIGHTS}
    assert made["weight"] in hybrid.WEIGHTS
    assert trials[f"{made['weight']:g}"] == max(trials.values())


def test_off_trains_the_plain_model_and_says_why(
    loyal: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    events, catalog = loyal
    log = coded(events, catalog, DEFAULT_EVENT_WEIGHTS)
    off = train(log, DEFAULT_EVENT_WEIGHTS, cf="off")
    assert off.model["cf"] == {"mode": "off", "on": False, "why": "--cf off", "criteria": {}}
    said = off.tables["audiences"].collect().get_column("reasons").explode()  # type: ignore[union-attr]
    assert "shoppers like this one buy it" not in said.to_list()


def test_analysis_of_another_log_is_refused(tmp_path: Path) -> None:
    done = run("analyze", "--preset", "loyal", "--scale", "0.02", "--out", tmp_path / "a")
    assert done.returncode == 0, done.stderr
    other = run(
        "train", "--preset", "loyal", "--scale", "0.03", "--out", tmp_path / "art",
        "--cf", "on", "--analysis", tmp_path / "a",
    )  # fmt: skip
    assert other.returncode == 2 and "--analysis" in other.stderr
    assert "another log" in other.stderr
    same = run(
        "train", "--preset", "loyal", "--scale", "0.02", "--out", tmp_path / "art",
        "--cf", "on", "--analysis", tmp_path / "a", "--json",
    )  # fmt: skip
    assert same.returncode == 0, same.stderr
    tuned = json.loads((tmp_path / "a" / "cf_metrics.json").read_text())
    model = json.loads(next((tmp_path / "art" / "versions").glob("*/model.json")).read_text())
    assert model["cf"]["als"] == tuned["cf_baseline"]["tuning"]["chosen"]
    assert "tuning ALS" not in same.stderr  # taken from the analysis, not searched again


def test_auto_falls_back_when_the_slice_has_nothing_to_judge() -> None:
    """Users who come back every day to the same three products pass the criteria, but
    leave the validation slice no new (user, product) pair to judge a weight on: `auto`
    trains without the term and says why; `on` is refused, naming `cf`."""
    start = datetime(2023, 1, 1, tzinfo=UTC)
    events = pl.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(40) for _ in range(150) for _ in range(3)],
            "product_id": [f"p{p}" for _ in range(40) for _ in range(150) for p in range(3)],
            "event_type": "cart",
            "event_time": [start + timedelta(days=d, minutes=u) for u in range(40)
                           for d in range(150) for _ in range(3)],
        }
    )  # fmt: skip
    log = coded(events, None, DEFAULT_EVENT_WEIGHTS)
    auto = train(log, DEFAULT_EVENT_WEIGHTS, "seed", cf="auto").model["cf"]
    assert not auto["on"] and "supports CF" in auto["why"]
    assert "cannot be tuned" in auto["why"] and "no product has a relevant user" in auto["why"]
    with pytest.raises(ConfigError, match="cf"):
        train(log, DEFAULT_EVENT_WEIGHTS, "seed", cf="on")


def test_a_slice_too_short_for_the_scorer_skips_the_hybrid_not_the_backtest(
    loyal: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """88 days: enough for the fitted scorer before the backtest's cutoff, not on the
    80% of that before the validation slice. The backtest still runs, and says why."""
    events, catalog = loyal
    last = events.get_column(TIME).max()
    assert isinstance(last, datetime)
    short = events.filter(pl.col(TIME) > last - timedelta(days=88))
    result = backtest(short, catalog, DEFAULT_EVENT_WEIGHTS, activity_ns=(100,))
    models = result["task_a"]["models"]
    assert "metrics" in models["audiences_fitted"]
    assert "validation slice's model cannot be trained" in models["audiences_hybrid"]["skipped"]


def test_the_search_fits_in_processes_what_one_process_fits(
    loyal: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """`cf.fits` (one process per core) returns, per trial, the model and ranking a fit
    in this process makes; the quick search tries `cf.QUICK` only and keeps its best."""
    early, _ = time_split(loyal[0])
    fit_part, validation = time_split(early)
    task = cf.Task(fit_part, validation, DEFAULT_EVENT_WEIGHTS, cf.VALIDATION_PRODUCTS)
    done = cf.fits(task.items, cf.QUICK, 0, task.rows)
    assert len(done) == len(cf.QUICK) == 2
    for params, (model, top) in zip(cf.QUICK, done, strict=True):
        here = cf.fit(task.items, params, 0)
        assert (model.item_factors == here.item_factors).all()
        assert (top == cf.rank(here, task.items, task.rows, cf.K)).all()
    quick = cf.tune(early, DEFAULT_EVENT_WEIGHTS, 0, lambda _: None, quick=True)
    tried = [{k: t[k] for k in ("factors", "regularization", "alpha")} for t in quick["trials"]]
    assert tried == [{k: getattr(p, k) for k in tried[0]} for p in cf.QUICK]
    best = max(quick["trials"], key=lambda t: t[f"validation_ndcg@{cf.K}"])
    assert quick["best"].alpha == best["alpha"] and quick["best"].factors == best["factors"]
