"""Analysis statistics, the CF task set-up and the verdict, on logs worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from audience.data.schema import DEFAULT_EVENT_WEIGHTS, EVENT_SCHEMA
from audience.data.stats import ceiling, retention_curve
from audience.evidence.analyze import cohorts, monthly_active, verdict
from audience.evidence.baselines import popularity
from audience.model.cf import Task
from audience.model.quality import hits

DAY0 = datetime(2022, 10, 1, 12, tzinfo=UTC)


def log(rows: list[tuple[str, str, int]], event: str = "cart") -> pl.DataFrame:
    return pl.DataFrame(
        [(u, p, event, DAY0 + timedelta(days=d)) for u, p, d in rows],
        schema=EVENT_SCHEMA,
        orient="row",
    )


def test_ceiling_counts_late_interactions_with_known_user_and_product() -> None:
    early = log([("a", "p1", 0), ("b", "p2", 1)])
    late = log([("a", "p2", 5), ("a", "p3", 5), ("c", "p1", 6), ("b", "p1", 7)])
    # (a, p2) and (b, p1) are known on both sides; p3 is new, c is new.
    assert ceiling(early, late) == pytest.approx(2 / 4)


def test_retention_window_past_the_log_end_has_no_eligible_users() -> None:
    # Log days 0..10. a returns on day 3; c never returns; b starts on the last day,
    # so no 5-day window of b's fits in the log and b is not counted.
    events = log([("a", "p1", 0), ("a", "p1", 3), ("c", "p1", 2), ("b", "p1", 10)])
    short, long = retention_curve(events, [5, 30])
    assert (short["eligible_users"], short["retained_users"], short["share"]) == (2, 1, 0.5)
    assert (long["eligible_users"], long["share"]) == (0, None)


def test_monthly_active_and_cohorts() -> None:
    # a: Oct, Nov; b: Oct; c: Nov. The log ends in November (day 40 = Nov 10).
    events = log([("a", "p1", 0), ("b", "p1", 2), ("a", "p1", 35), ("c", "p1", 40)])
    assert monthly_active(events) == [
        {"month": "2022-10", "active_users": 2},
        {"month": "2022-11", "active_users": 2},
    ]
    table = cohorts(events, horizon=2)
    assert table[0] == {"cohort": "2022-10", "users": 2, "month_1": 0.5, "month_2": None}
    assert table[1] == {"cohort": "2022-11", "users": 1, "month_1": None, "month_2": None}


def test_task_candidates_exclusions_and_relevance() -> None:
    train = log([("a", "p1", 0), ("b", "p1", 1), ("c", "p2", 2)])
    test = log(
        [
            ("a", "p2", 10),  # relevant: a is known and new to p2
            ("d", "p1", 11),  # d unknown at the cut: not a candidate
            ("b", "p1", 12),  # b already interacted with p1: excluded, not relevant
            ("c", "p3", 13),  # p3 only exists in the test period: cannot be ranked
        ]
    )
    task = Task(train, test, DEFAULT_EVENT_WEIGHTS)
    assert task.index.users.to_list() == ["a", "b", "c"]
    assert task.rows.tolist() == [1]  # only p2 has a relevant known user
    assert task.truth.codes.tolist() == [0 * 3 + 0]  # (row 0, user a)
    assert task.excluded.tolist() == [0 * 3 + 2]  # c already interacted with p2
    # Popularity: everyone has one event, ties by user id -> a, b (c excluded).
    ranking = popularity(task.activity, task.excluded, n_rows=1, k=3)
    assert ranking.tolist() == [[0, 1, -1]]
    assert hits(ranking, task.truth).tolist() == [[True, False, False]]


def _baseline(gain_random: float, gain_popularity: float) -> dict[str, object]:
    return {
        "gains": {
            "als_over_random": {"mean": 0.0, "ci95_low": gain_random, "ci95_high": 1.0},
            "als_over_popularity": {"mean": 0.0, "ci95_low": gain_popularity, "ci95_high": 1.0},
        }
    }


def test_verdict_needs_every_criterion() -> None:
    good = {"retention_30d": 0.4, "split": {"ceiling": 0.8}}
    assert verdict(good, _baseline(0.05, 0.01))["viable"] is True
    churny = {"retention_30d": 0.03, "split": {"ceiling": 0.05}}
    result = verdict(churny, _baseline(0.05, -0.01))
    assert result["viable"] is False
    assert [n for n, c in result["checks"].items() if not c["passed"]] == [
        "retention_30d",
        "ceiling",
        "als_gain_ci_low",
    ]
    assert "30-day retention" in result["summary"] and "0.03" in result["summary"]
    assert verdict(good, _baseline(0.05, 0.0))["viable"] is False  # no gain over popularity


def test_random_baseline_never_ranks_excluded_or_repeated_users() -> None:
    from audience.evidence.baselines import random

    excluded = np.array([0 * 5 + 1, 0 * 5 + 2, 1 * 5 + 0], dtype=np.int64)
    ranking = random(5, excluded, n_rows=2, k=4, seed=3)
    assert sorted(ranking[0][ranking[0] >= 0].tolist()) == [0, 3, 4]  # only 3 allowed
    assert sorted(ranking[1].tolist()) == [1, 2, 3, 4]
    assert random(5, excluded, 2, 4, seed=3).tolist() == ranking.tolist()
