"""The fitted scorer: labels by hand, honest validation, the scoring contract, clear failures."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from audience.data.generate import generate
from audience.data.schema import DEFAULT_EVENT_WEIGHTS, EVENT_SCHEMA, TIME
from audience.errors import ConfigError
from audience.model.features import user_features
from audience.model.fitted import FEATURES, FittedScorer, auc, calibration, labelled_features

AS_OF = datetime(2022, 11, 1, tzinfo=UTC)
H = timedelta(days=10)


def log(rows: Sequence[tuple[str, float]]) -> pl.DataFrame:
    """Events (user, days after AS_OF), all carts of one product."""
    return pl.DataFrame(
        [(u, "p1", "cart", AS_OF + timedelta(days=d)) for u, d in rows],
        schema=EVENT_SCHEMA,
        orient="row",
    )


def log_end(events: pl.DataFrame) -> datetime:
    """The fitted scorer's log end: the last event plus one microsecond."""
    last = events[TIME].max()
    assert isinstance(last, datetime)
    return last + timedelta(microseconds=1)


def test_labels_by_hand() -> None:
    # a returns exactly at AS_OF (the window is [AS_OF, AS_OF + H)): positive.
    # b returns exactly at AS_OF + H: outside the window, negative. c never returns.
    # d is first seen after AS_OF: no features, not in the frame. e returns at day 9.9.
    events = log(
        [("a", -5), ("a", 0), ("b", -3), ("b", 10), ("c", -1), ("d", 2), ("e", -20), ("e", 9.9)]
    )
    frame = labelled_features(events, AS_OF, H, DEFAULT_EVENT_WEIGHTS)
    got = dict(zip(frame["user_id"], frame["returned"], strict=True))
    assert got == {"a": True, "b": False, "c": False, "e": True}
    assert frame.filter(pl.col("user_id") == "a")["interactions"].item() == 1


def test_auc_by_hand_with_ties() -> None:
    # positives 0.9, 0.5; negatives 0.9, 0.1, 0.5.
    # 0.9: tie .5 + 1 + 1 = 2.5; 0.5: 0 + 1 + tie .5 = 1.5 -> 4 / 6.
    assert auc([1, 0, 1, 0, 0], [0.9, 0.9, 0.5, 0.1, 0.5]) == pytest.approx(2 / 3)
    assert auc([1, 0], [0.3, 0.3]) == 0.5
    with pytest.raises(ConfigError, match="positive and one negative"):
        auc([1, 1], [0.1, 0.2])


def test_auc_matches_pairwise_count() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(60) < 0.3
    s = rng.integers(0, 5, 60)  # many ties
    pairs = [
        1.0 if a > b else 0.5 if a == b else 0.0
        for a, b in itertools.product(s[y], s[~y])
    ]  # fmt: skip
    assert auc(y, s) == pytest.approx(float(np.mean(pairs)))


def test_calibration_by_hand() -> None:
    table = calibration([0, 1, 0, 1], [0.4, 0.8, 0.2, 0.6], bins=2)
    assert table == [
        {"bin": 1, "n": 2, "mean_predicted": pytest.approx(0.3), "observed_rate": 0.0},
        {"bin": 2, "n": 2, "mean_predicted": pytest.approx(0.7), "observed_rate": 1.0},
    ]


@pytest.fixture(scope="module")
def loyal() -> tuple[pl.DataFrame, FittedScorer]:
    events, _ = generate("loyal", scale=0.1, seed=0)
    return events, FittedScorer.fit(events, DEFAULT_EVENT_WEIGHTS, horizon_days=30)


def test_coefficients_make_sense(loyal: tuple[pl.DataFrame, FittedScorer]) -> None:
    params = loyal[1].params()
    coef = params["coefficients"]
    # Recently active users come back: a clearly positive, significant recency term.
    assert coef["recency"]["coef"] > 0 and coef["recency"]["z"] > 3
    assert coef["active_days"]["coef"] > 0
    assert params["features"] == list(FEATURES) and params["dropped"] == []
    assert all(c["se"] > 0 and 0 <= c["p"] <= 1 for c in coef.values())


def test_validation_is_out_of_time(loyal: tuple[pl.DataFrame, FittedScorer]) -> None:
    events, scorer = loyal
    params = scorer.params()
    end = log_end(events)
    assert params["as_of_validation"] == (end - timedelta(days=30)).isoformat()
    assert params["as_of_fit"] == (end - timedelta(days=60)).isoformat()
    v = params["validation"]
    assert v["auc"] > 0.5 and 0 < v["seed_auc"] < 1
    assert v["users"] != params["fit"]["users"]  # a different frame from the fitting one
    assert sum(row["n"] for row in v["calibration"]) == v["users"]
    observed = sum(row["n"] * row["observed_rate"] for row in v["calibration"])
    assert observed == pytest.approx(v["positives"])
    assert v["base_rate"] == pytest.approx(v["positives"] / v["users"])


def test_score_contract(loyal: tuple[pl.DataFrame, FittedScorer]) -> None:
    events, scorer = loyal
    end = log_end(events)
    features = user_features(events, end, DEFAULT_EVENT_WEIGHTS).sample(fraction=1.0, seed=3)
    scores = scorer.score(features)
    components = [f"c_{name}" for name in FEATURES]
    assert scores.columns == ["user_id", "score", *components]
    assert scores["user_id"].to_list() == features["user_id"].to_list()
    p = scores["score"].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert scorer.intercept == scorer.params()["coefficients"]["const"]["coef"]
    logit = scorer.intercept + scores.select(components).to_numpy().sum(axis=1)
    np.testing.assert_allclose(logit, np.log(p / (1 - p)), rtol=1e-9, atol=1e-9)


def test_params_are_json(loyal: tuple[pl.DataFrame, FittedScorer]) -> None:
    params = loyal[1].params()
    assert params["model"] == "fitted" and params["horizon_days"] == 30.0
    assert json.loads(json.dumps(params, allow_nan=False)) == params


def test_explicit_as_of_must_leave_two_horizons(loyal: tuple[pl.DataFrame, FittedScorer]) -> None:
    events = loyal[0]
    late = log_end(events) - timedelta(days=30)
    with pytest.raises(ConfigError) as err:
        FittedScorer.fit(events, DEFAULT_EVENT_WEIGHTS, as_of=late)
    assert err.value.parameter == "as_of"


def test_log_too_short_for_two_horizons() -> None:
    events = log([("a", 0), ("a", 20), ("b", 40)])
    with pytest.raises(ConfigError, match=r"spans 40\.0 days") as err:
        FittedScorer.fit(events, DEFAULT_EVENT_WEIGHTS, horizon_days=30)
    assert err.value.parameter == "horizon_days"
    with pytest.raises(ConfigError, match="positive number"):
        FittedScorer.fit(events, DEFAULT_EVENT_WEIGHTS, horizon_days=0)


def test_no_returning_users_is_a_clear_error() -> None:
    # Fifty users active once in the first days; one newcomer at day 100 stretches the log.
    events = log([(f"u{i:02d}", i % 5) for i in range(50)] + [("late", 100)])
    with pytest.raises(ConfigError, match="none of the 50 users returns") as err:
        FittedScorer.fit(events, DEFAULT_EVENT_WEIGHTS, horizon_days=30)
    assert err.value.parameter == "scorer"


def test_perfect_separation_is_a_clear_error() -> None:
    # Daily users always return, one-off users never do: the MLE does not exist.
    daily = [(f"d{i}", float(day)) for i in range(5) for day in range(101)]
    once = [(f"o{i}", float(i)) for i in range(10)] + [(f"n{i}", 45.0 + i) for i in range(10)]
    with pytest.raises(ConfigError, match="cannot be fitted") as err:
        FittedScorer.fit(log(daily + once), DEFAULT_EVENT_WEIGHTS, horizon_days=30)
    assert err.value.parameter == "scorer"


def test_a_large_log_is_fitted_on_a_seeded_sample_of_users(
    loyal: tuple[pl.DataFrame, FittedScorer],
) -> None:
    events, whole = loyal
    users = events.get_column("user_id").n_unique()
    fits = [
        FittedScorer.fit(events, DEFAULT_EVENT_WEIGHTS, seed=s, max_users=users // 2).params()
        for s in (0, 0, 1)
    ]
    assert whole.params()["users_sampled"] == whole.params()["users_in_log"] == users
    assert fits[0]["users_sampled"] == users // 2 and fits[0]["users_in_log"] == users
    assert fits[0]["fit"]["users"] < whole.params()["fit"]["users"]
    assert fits[0]["coefficients"] == fits[1]["coefficients"]  # the seed fixes the sample
    assert fits[0]["coefficients"] != fits[2]["coefficients"]
    # Half the users still find the same signal.
    assert fits[0]["coefficients"]["recency"]["coef"] > 0
    assert fits[0]["validation"]["auc"] == pytest.approx(
        whole.params()["validation"]["auc"], abs=0.05
    )
