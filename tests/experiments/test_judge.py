"""experiments.judge: counting conversions per arm from a log, and the proof by simulation.

The hand-built logs below have exact expected counts; the simulated campaigns (real user
ids of a generated sample log, split by the campaign planner's hash) show that the
judgement is calibrated: its 95% lift interval covers the true lift in about 95% of the
campaigns, a campaign without effect is significant in about 5%, and a broken split is
caught by the sample-ratio check every time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from audience.data.generate import generate
from audience.data.schema import CATEGORY, EVENT, EVENT_SCHEMA, PRODUCT, TIME, USER
from audience.errors import ConfigError, InputError
from audience.experiments.campaign import CONTROL, assign_groups
from audience.experiments.judge import (
    ARM,
    HOLDOUT,
    TREATMENT,
    CampaignReport,
    judge,
    read_report,
    report_markdown,
    write_report,
)
from audience.experiments.simulate import simulate_outcome
from audience.settings import Settings

LAUNCH = datetime(2023, 4, 1, tzinfo=UTC)
CATALOG = pl.DataFrame(
    {
        PRODUCT: ["P1", "P2", "P3"],
        "product_name": ["Novel", "Atlas", "Robot"],
        CATEGORY: ["Books", "Books", "Toys"],
        "price": [10.0, 20.0, 30.0],
    }
)


def _at(days: float) -> datetime:
    return LAUNCH + timedelta(days=days)


def _log(*rows: tuple[str, str, str, float]) -> pl.DataFrame:
    """(user, product, event type, days after launch) rows as a canonical table."""
    return pl.DataFrame(
        [(user, product, kind, _at(days)) for user, product, kind, days in rows],
        schema=EVENT_SCHEMA,
        orient="row",
    )


ARMS = pl.DataFrame(
    {
        USER: ["t1", "t2", "t3", "h1", "h2", "h3"],
        ARM: [TREATMENT] * 3 + [HOLDOUT] * 3,
        "rank": [1, 2, 3, 4, 5, 6],
        "score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    }
)
LOG = _log(
    ("h1", "P1", "purchased", -3.0),  # before the launch
    ("t1", "P1", "purchased", 1.0),
    ("t1", "P1", "purchased", 2.0),  # the same user again: one converter
    ("t2", "P2", "purchased", 2.5),  # the product's category
    ("t3", "P3", "purchased", 3.0),  # another category
    ("h2", "P1", "purchased", 0.0),  # at the launch: counted
    ("h2", "P1", "cart", 4.0),  # not the conversion type
    ("h3", "P3", "purchased", 5.0),
    ("x9", "P1", "purchased", 5.0),  # not in the campaign
    ("h1", "P1", "purchased", 7.0),  # at the window's end: not counted
    ("h3", "P2", "rating", 20.0),  # the log runs past the window
)


def _judge(arms: pl.DataFrame = ARMS, events: pl.DataFrame = LOG, **kwargs: Any) -> CampaignReport:
    given: dict[str, Any] = dict(
        product_id="P1", launched_at=LAUNCH, window_days=7, holdout_share=0.5, catalog=CATALOG
    )
    return judge(arms, events, **(given | kwargs))


# --- counting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "treatment", "holdout"),
    [("product", 1, 1), ("category", 2, 1), ("any", 3, 2)],
)
def test_scopes_count_converters_per_arm(scope: str, treatment: int, holdout: int) -> None:
    report = _judge(scope=scope)
    assert (report.treatment.users, report.treatment.conversions) == (3, treatment)
    assert (report.holdout.users, report.holdout.conversions) == (3, holdout)
    assert report.treatment.rate == treatment / 3
    assert report.category == "Books"
    assert report.scope == scope
    assert (report.partial, report.days_covered, report.window_days) == (False, 7.0, 7.0)
    assert (report.window_start, report.window_end) == (LAUNCH, _at(7))


def test_events_outside_the_window_are_not_counted() -> None:
    # h1 bought before the launch and at the window's end; a 10-day window takes the second
    assert _judge().holdout.conversions == 1
    assert _judge(window_days=10).holdout.conversions == 2
    # a later launch leaves t1's first purchase and h2's behind
    later = _judge(launched_at=_at(1.5), window_days=7)
    assert (later.treatment.conversions, later.holdout.conversions) == (1, 1)


def test_the_category_can_be_named_and_the_conversion_type_chosen() -> None:
    toys = _judge(scope="category", category="Toys")
    assert (toys.category, toys.treatment.conversions, toys.holdout.conversions) == ("Toys", 1, 1)
    carts = _judge(conversion=" Cart ")
    assert (carts.conversion, carts.treatment.conversions, carts.holdout.conversions) == (
        "cart",
        0,
        1,
    )
    # a type the settings know but nobody did yet is a valid conversion with none
    assert _judge(conversion="wishlist").treatment.conversions == 0
    custom = Settings(event_weights={"signup": 1.0})
    assert _judge(conversion="signup", settings=custom).holdout.conversions == 0


def test_users_absent_from_the_log_count_as_not_converted() -> None:
    arms = pl.concat(
        [ARMS.select(USER, ARM), pl.DataFrame({USER: ["t4", "h4"], ARM: [TREATMENT, HOLDOUT]})]
    )
    report = _judge(arms)
    assert (report.treatment.users, report.holdout.users) == (4, 4)
    assert (report.treatment.conversions, report.holdout.conversions) == (1, 1)


def test_a_log_ending_inside_the_window_gives_a_partial_report() -> None:
    report = _judge(events=LOG.filter(pl.col(TIME) <= _at(3.5)), scope="any")
    assert report.partial is True
    assert report.log_end == _at(3)  # t3's purchase, the last event
    assert report.days_covered == 3.0
    assert report.verdict.startswith("Partial, 3.0 of 7 days in the log: ")
    assert (report.treatment.conversions, report.holdout.conversions) == (3, 1)
    assert "**Partial:**" in report_markdown(report)
    # a log ending right at the launch covers nothing yet, and says so
    at_launch = _judge(events=LOG.filter(pl.col(TIME) <= LAUNCH))
    assert (at_launch.partial, at_launch.days_covered) == (True, 0.0)


# --- statistics and money -----------------------------------------------------------------


def _bulk(treated: tuple[int, int], held: tuple[int, int]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Assignments and a log with (converters, users) per arm."""
    users = [f"t{i}" for i in range(treated[1])] + [f"h{i}" for i in range(held[1])]
    arms = pl.DataFrame({USER: users, ARM: [TREATMENT] * treated[1] + [HOLDOUT] * held[1]})
    buyers = [f"t{i}" for i in range(treated[0])] + [f"h{i}" for i in range(held[0])]
    rows = [(user, "P1", "purchased", 1.0) for user in buyers]
    return arms, _log(*rows, ("t0", "P2", "rating", 30.0))


def test_economics_follow_the_difference() -> None:
    arms, log = _bulk((200, 1_000), (100, 1_000))
    report = _judge(arms, log, cost_per_contact=1.0, value_per_conversion=15.0)
    difference = report.comparison.difference
    assert report.comparison.rate_a == 0.1 and report.comparison.rate_b == 0.2
    assert report.incremental_conversions.estimate == pytest.approx(100.0)
    assert report.incremental_conversions.low == pytest.approx(1_000 * difference.low)
    assert report.incremental_conversions.high == pytest.approx(1_000 * difference.high)
    assert report.cost == 1_000.0
    assert report.incremental_value.estimate == pytest.approx(1_500.0)
    assert report.roi is not None
    assert report.roi.estimate == pytest.approx(0.5)
    assert report.roi.low == pytest.approx(15 * difference.low - 1)
    assert report.roi.high == pytest.approx(15 * difference.high - 1)
    assert report.comparison.significant
    assert report.comparison.relative_lift is not None
    assert report.comparison.relative_lift.estimate == pytest.approx(1.0)
    assert report.bayes.prob_b_beats_a > 0.999
    assert report.treatment.interval.method == "wilson"
    assert report.treatment.interval.low < 0.2 < report.treatment.interval.high
    assert report.verdict.startswith("The campaign raised conversions: treatment 20.00% vs ")
    assert "ROI +50.0%" in report.verdict
    free = _judge(arms, log, value_per_conversion=15.0)
    assert (free.cost, free.roi) == (0.0, None)


def test_no_effect_and_a_broken_split_say_so() -> None:
    arms, log = _bulk((50, 1_000), (49, 1_000))
    flat = _judge(arms, log)
    assert not flat.comparison.significant
    assert flat.verdict.startswith("No effect the test can tell from chance (p = ")
    assert not flat.sample_ratio.mismatch
    skewed, log = _bulk((60, 1_200), (40, 800))
    broken = _judge(skewed, log)
    assert broken.sample_ratio.mismatch
    assert broken.sample_ratio.shares == (0.5, 0.5)
    assert broken.verdict.startswith("Do not trust these numbers: the arms hold 1,200 treatment")
    assert not _judge(skewed, log, holdout_share=0.4).sample_ratio.mismatch


def test_a_holdout_without_conversions_has_no_relative_lift() -> None:
    arms, log = _bulk((30, 500), (0, 500))
    report = _judge(arms, log)
    assert report.comparison.relative_lift is None
    assert "relative lift unbounded" in report.verdict
    assert "| relative lift | unbounded |" in report_markdown(report)


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("log", {"launched_at": _at(21)}),  # the log ends on day 20
        ("log", {"launched_at": _at(400)}),
        ("log", {"events": LOG.clear()}),
        ("conversion", {"conversion": "refund"}),
        ("conversion", {"conversion": ""}),
        ("assignments", {"arms": ARMS.filter(pl.col(ARM) == TREATMENT)}),
        ("assignments", {"arms": ARMS.filter(pl.col(ARM) == HOLDOUT)}),
        ("assignments", {"arms": ARMS.with_columns(pl.lit("control").alias(ARM))}),
        ("assignments", {"arms": pl.concat([ARMS, ARMS.head(1)])}),
        ("assignments", {"arms": ARMS.drop(ARM)}),
        ("scope", {"scope": "category", "catalog": None}),
        ("scope", {"scope": "category", "product_id": "P9"}),
        ("scope", {"scope": "brand"}),
        ("category", {"scope": "category", "category": "Garden"}),
        ("events", {"events": LOG.drop(TIME)}),
        ("window_days", {"window_days": 0}),
        ("window_days", {"window_days": 1e12}),
        ("holdout_share", {"holdout_share": 1.0}),
        ("holdout_share", {"holdout_share": 0}),
        ("cost_per_contact", {"cost_per_contact": -1.0}),
        ("value_per_conversion", {"value_per_conversion": float("inf")}),
        ("alpha", {"alpha": 0.7}),
        ("launched_at", {"launched_at": "2023-04-01"}),
    ],
)
def test_errors_name_the_field(field: str, kwargs: dict[str, Any]) -> None:
    arms, events = kwargs.pop("arms", ARMS), kwargs.pop("events", LOG)
    with pytest.raises(ConfigError) as error:
        _judge(arms, events, **kwargs)
    assert error.value.parameter == field


def test_the_log_error_says_where_the_log_ends() -> None:
    with pytest.raises(ConfigError, match=r"^log: nothing after launch at 2023-04-22T00:00:00"):
        _judge(launched_at=_at(21))
    with pytest.raises(ConfigError, match="ends at 2023-04-21T00:00:00"):
        _judge(launched_at=_at(21))


def test_a_naive_launch_time_is_utc() -> None:
    assert _judge(launched_at=datetime(2023, 4, 1)) == _judge()


# --- files -------------------------------------------------------------------------------


def test_writers_produce_the_three_files_and_the_json_round_trips(tmp_path: Path) -> None:
    arms, log = _bulk((200, 1_000), (100, 1_000))
    report = _judge(arms, log, scope="category", cost_per_contact=0.5, value_per_conversion=9.0)
    paths = write_report(report, tmp_path / "campaign")
    assert sorted(path.name for path in paths.values()) == [
        "report.json",
        "report.md",
        "report.png",
    ]
    assert sorted(p.name for p in (tmp_path / "campaign").iterdir()) == sorted(
        p.name for p in paths.values()
    )  # no temporary file left behind
    assert paths["chart"].read_bytes().startswith(b"\x89PNG")
    data = json.loads(paths["json"].read_text())
    assert data == json.loads(json.dumps(report.to_dict()))  # JSON has lists for tuples
    assert data["window_start"] == "2023-04-01T00:00:00+00:00"
    assert data["treatment"] == {
        "users": 1_000,
        "conversions": 200,
        "rate": 0.2,
        "interval": report.to_dict()["treatment"]["interval"],
    }
    assert read_report(paths["json"]) == report
    assert read_report(tmp_path / "campaign") == report
    page = paths["markdown"].read_text()
    assert report.verdict in page
    assert "| treatment | 1,000 | 200 | 20.00% |" in page
    assert "| holdout | 1,000 | 100 | 10.00% |" in page
    assert "![Conversion rate per arm](report.png)" in page
    # a report without lift or ROI round-trips too
    bare = _judge(*_bulk((30, 500), (0, 500)))
    assert bare.holdout.interval.low == 0.0
    assert read_report(write_report(bare, tmp_path / "bare")["json"]) == bare


def test_reading_a_missing_or_foreign_report_fails_on_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_report(tmp_path)
    (tmp_path / "report.json").write_text('{"verdict": "yes"}')
    with pytest.raises(InputError, match="is not a campaign report"):
        read_report(tmp_path)


# --- the proof by simulation ----------------------------------------------------------------

CAMPAIGNS = 200
USERS = 20_000
BASELINE, LIFT = 0.05, 0.2
Sample = tuple[list[str], pl.DataFrame, str]


@pytest.fixture(scope="module")
def sample() -> Sample:
    """20,000 real user ids of a generated sample log, the log as history, and the product
    its users bought most (so the history holds purchases the judge must leave out)."""
    events, _ = generate("marketplace", scale=0.05, seed=0)
    users = events.get_column(USER).unique(maintain_order=True).head(USERS).to_list()
    assert len(users) == USERS
    product = events.filter(pl.col(EVENT) == "purchased").get_column(PRODUCT).mode().sort()[0]
    assert events.get_column(TIME).max() < LAUNCH
    return users, events, str(product)


def _campaign(sample: Sample, i: int, *, lift: float, drawn_share: float) -> CampaignReport:
    """Campaign ``i``: split at ``drawn_share``, simulated, judged against a 50/50 plan."""
    users, history, product = sample
    arms = assign_groups(users, experiment_id=f"sim-{i}", holdout_share=drawn_share).select(
        USER, pl.col("group").replace({CONTROL: HOLDOUT}).alias(ARM)
    )
    outcome = simulate_outcome(
        arms,
        product_id=product,
        launched_at=LAUNCH,
        window_days=14,
        baseline=BASELINE,
        lift=lift,
        seed=i + (0 if lift else 10_000),
        background=1_000,
    )
    report = judge(
        arms,
        pl.concat([history, outcome]),
        product_id=product,
        launched_at=LAUNCH,
        window_days=14,
        holdout_share=0.5,
        settings=Settings(),
    )
    assert not report.partial
    return report


def test_the_lift_interval_covers_the_true_lift(sample: Sample) -> None:
    covered = 0
    for i in range(CAMPAIGNS):
        lift = _campaign(sample, i, lift=LIFT, drawn_share=0.5).comparison.relative_lift
        assert lift is not None
        covered += lift.low <= LIFT <= lift.high
    assert covered >= 182  # 190 expected at 95%; 182 is 2.1 binomial sd below


def test_a_campaign_without_effect_is_significant_at_rate_alpha(sample: Sample) -> None:
    significant = sum(
        _campaign(sample, i, lift=0.0, drawn_share=0.5).comparison.significant
        for i in range(CAMPAIGNS)
    )
    assert significant <= 18  # 10 expected at alpha 0.05


def test_a_broken_split_is_caught_by_the_sample_ratio_check(sample: Sample) -> None:
    flagged = sum(
        _campaign(sample, i, lift=LIFT, drawn_share=0.4).sample_ratio.mismatch
        for i in range(CAMPAIGNS)
    )
    assert flagged == CAMPAIGNS
