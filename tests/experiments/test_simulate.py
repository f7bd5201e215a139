"""experiments.simulate: a seeded post-launch log whose truth is known, and noise that is noise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from audience.data.schema import EVENT, EVENT_SCHEMA, PRODUCT, TIME, USER
from audience.errors import ConfigError
from audience.experiments.judge import ARM, HOLDOUT, SCOPES, TREATMENT, judge
from audience.experiments.simulate import simulate_outcome

LAUNCH = datetime(2023, 4, 1, tzinfo=UTC)
WINDOW = 14
CATALOG = pl.DataFrame(
    {PRODUCT: ["P1", "P1-other-0", "P1-other-1"], "category": ["Books", "Books", "Toys"]}
)


def _arms(treatment: int, holdout: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            USER: [f"U{i:07d}" for i in range(treatment + holdout)],
            ARM: [TREATMENT] * treatment + [HOLDOUT] * holdout,
        }
    )


def _simulate(arms: pl.DataFrame, **kwargs: Any) -> pl.DataFrame:
    given: dict[str, Any] = dict(
        product_id="P1", launched_at=LAUNCH, window_days=WINDOW, baseline=0.1, lift=0.5, seed=1
    )
    return simulate_outcome(arms, **(given | kwargs))


def _in_window(events: pl.DataFrame) -> pl.DataFrame:
    end = LAUNCH + timedelta(days=WINDOW)
    return events.filter(pl.col(TIME) >= LAUNCH, pl.col(TIME) < end)


def test_canonical_sorted_and_deterministic() -> None:
    arms = _arms(2_000, 2_000)
    events = _simulate(arms, background=500)
    assert events.schema == EVENT_SCHEMA
    assert events.equals(events.sort(TIME, USER, maintain_order=True))
    assert events.equals(_simulate(arms, background=500))
    assert not events.equals(_simulate(arms, background=500, seed=2))


def test_conversions_are_one_event_each_in_the_window_at_the_set_rates() -> None:
    arms = _arms(100_000, 100_000)
    events = _simulate(arms, baseline=0.1, lift=0.5)
    assert set(events.get_column(EVENT)) == {"purchased"}
    assert set(events.get_column(PRODUCT)) == {"P1"}
    assert events.get_column(USER).is_unique().all()
    assert _in_window(events).height == events.height
    per_arm = dict(
        arms.filter(pl.col(USER).is_in(events.get_column(USER).implode()))
        .group_by(ARM)
        .len()
        .iter_rows()
    )
    for arm, rate in ((TREATMENT, 0.15), (HOLDOUT, 0.10)):
        spread = 5 * np.sqrt(100_000 * rate * (1 - rate))  # five binomial standard deviations
        assert abs(per_arm[arm] - 100_000 * rate) < spread
    # uniform in the window: each half holds about half of the conversions
    halves = (events.get_column(TIME) < LAUNCH + timedelta(days=WINDOW / 2)).mean()
    assert halves == pytest.approx(0.5, abs=0.01)


def test_a_campaign_without_effect_or_without_buyers() -> None:
    arms = _arms(50_000, 50_000)
    assert _simulate(arms, baseline=0.0).is_empty()
    events = _simulate(arms, baseline=0.2, lift=0.0)
    treated = arms.filter(pl.col(ARM) == TREATMENT).get_column(USER)
    share = events.get_column(USER).is_in(treated.implode()).mean()
    assert share == pytest.approx(0.5, abs=0.01)


def test_background_adds_noise_and_changes_no_conversion() -> None:
    arms = _arms(3_000, 3_000)
    quiet = _simulate(arms, baseline=0.05, lift=0.2)
    noisy = _simulate(arms, baseline=0.05, lift=0.2, background=20_000)
    assert noisy.height == quiet.height + 20_000
    # the conversions are drawn first: the same with or without noise
    assert noisy.join(quiet, on=list(EVENT_SCHEMA.names()), how="semi").height == quiet.height
    noise = noisy.join(quiet, on=list(EVENT_SCHEMA.names()), how="anti")
    assigned = pl.col(USER).is_in(arms.get_column(USER).implode())
    # history before the launch and a log that runs past the window
    assert noise.get_column(TIME).min() < LAUNCH
    assert noise.get_column(TIME).max() >= LAUNCH + timedelta(days=WINDOW)
    # other types, other products, other users, some of them conversions: never counted
    assert noise.get_column(EVENT).n_unique() == 5
    assert noise.get_column(PRODUCT).n_unique() == 10
    assert 0.4 < noise.select(assigned.mean()).item() < 0.6
    counted = _in_window(noise).filter(assigned, pl.col(EVENT) == "purchased")
    assert counted.is_empty()
    assert noise.filter(pl.col(EVENT) == "purchased").height > 5_000
    for scope in SCOPES:
        reports = [
            judge(
                arms,
                log,
                product_id="P1",
                scope=scope,
                launched_at=LAUNCH,
                window_days=WINDOW,
                holdout_share=0.5,
                catalog=CATALOG,
            )
            for log in (quiet, noisy)
        ]
        assert reports[0].treatment == reports[1].treatment
        assert reports[0].holdout == reports[1].holdout
        assert reports[1].partial is False  # the noise runs past the window


def test_background_on_given_products_and_another_conversion_type() -> None:
    arms = _arms(500, 500)
    events = _simulate(arms, conversion="Cart", background=5_000, products=["P1", "P2"])
    assert set(events.get_column(PRODUCT)) == {"P1", "P2"}
    noise_free = _in_window(events).filter(
        pl.col(USER).is_in(arms.get_column(USER).implode()), pl.col(EVENT) == "cart"
    )
    assert noise_free.get_column(PRODUCT).unique().to_list() == ["P1"]
    assert noise_free.get_column(USER).is_unique().all()


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("baseline", {"baseline": 1.5}),
        ("baseline", {"baseline": float("nan")}),
        ("lift", {"baseline": 0.6, "lift": 1.0}),
        ("lift", {"lift": -1.5}),
        ("background", {"background": -1}),
        ("background", {"background": 2.5}),
        ("window_days", {"window_days": 0}),
        ("launched_at", {"launched_at": "2023-04-01"}),
        ("conversion", {"conversion": " "}),
    ],
)
def test_errors_name_the_field(field: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as error:
        _simulate(_arms(10, 10), **kwargs)
    assert error.value.parameter == field


def test_assignments_are_checked() -> None:
    with pytest.raises(ConfigError) as error:
        _simulate(_arms(10, 0))
    assert error.value.parameter == "assignments"
