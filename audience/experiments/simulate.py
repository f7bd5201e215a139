"""Simulated post-launch logs: campaigns whose true effect is known, to prove `judge` on.

A real log never tells what a campaign truly did, so what `judge` claims (its intervals
cover the true lift at their level, a campaign without effect is called significant at
rate alpha, a broken split trips the sample-ratio check) is shown on logs written here,
where the truth is set:

- each treatment user converts with probability baseline * (1 + lift), each holdout
  user with probability baseline, independently: one event of the conversion type on
  the campaign product at a uniform time in [launch, launch + window);
- ``background`` more events are noise a judge must see through. Their times are
  uniform from one window before the launch to two windows after it, so the log also
  holds history and runs past the window (a log of conversions alone ends at its last
  conversion, just short of the window: `judge` calls that partial). None of them is a
  conversion in any scope: an assigned user's event inside the window has another
  type, on the campaign product or another one; a conversion-type event is by a user
  outside the campaign (ids ``~background-<n>``) or falls outside the window.

Everything is drawn from one seeded numpy Generator, so a seed gives the same log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np
import polars as pl

from audience.data.schema import DEFAULT_EVENT_WEIGHTS, EVENT, EVENT_SCHEMA, PRODUCT, TIME, USER
from audience.errors import ConfigError
from audience.experiments.judge import ARM, TREATMENT, as_utc, check_assignments, check_window

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
#: Other products the background events are on, besides the campaign product, by default.
OTHER_PRODUCTS: Final = 9


def simulate_outcome(
    assignments: pl.DataFrame,
    *,
    product_id: str,
    launched_at: datetime,
    window_days: float,
    baseline: float,
    lift: float,
    seed: int,
    conversion: str = "purchased",
    background: int = 0,
    products: Sequence[str] = (),
) -> pl.DataFrame:
    """A canonical event table, sorted by time: the conversions after the launch and the
    ``background`` noise around them (see the module's docstring).

    ``assignments`` is what `judge` takes (user_id, arm); ``lift`` is relative (0 for a
    campaign without effect, -1 <= lift). ``products`` are the products background
    events are on, the campaign product among them; by default it and
    ``OTHER_PRODUCTS`` made-up ids (``<product_id>-other-<k>``).
    """
    arms = check_assignments(assignments)
    start = as_utc(launched_at)
    window = check_window(window_days)
    rates = _rates(baseline, lift)
    if isinstance(background, bool) or not isinstance(background, int) or background < 0:
        raise ConfigError("background", f"must be an integer >= 0, got {background!r}")
    if not isinstance(conversion, str) or not conversion.strip():
        raise ConfigError("conversion", f"must name an event type, got {conversion!r}")
    name = conversion.strip().lower()
    rng = np.random.default_rng(seed)
    start_us, span_us = (start - _EPOCH) // _MICROSECOND, window // _MICROSECOND
    treated = (arms.get_column(ARM) == TREATMENT).to_numpy()
    converts = rng.random(arms.height) < np.where(treated, rates[1], rates[0])
    users = arms.get_column(USER).filter(pl.Series(converts))
    conversions = pl.DataFrame(
        {
            USER: users,
            PRODUCT: pl.Series([product_id] * len(users), dtype=pl.String),
            EVENT: pl.Series([name] * len(users), dtype=pl.String),
            TIME: start_us + np.floor(rng.random(len(users)) * span_us).astype(np.int64),
        }
    )
    pool = list(products) or [
        product_id,
        *(f"{product_id}-other-{k}" for k in range(OTHER_PRODUCTS)),
    ]
    noise = _background(arms.get_column(USER), background, pool, name, start_us, span_us, rng)
    return (
        pl.concat([conversions, noise])
        .with_columns(pl.col(TIME).cast(pl.Datetime("us", "UTC")))
        .sort(TIME, USER, maintain_order=True)
        .cast(EVENT_SCHEMA)
    )


def _rates(baseline: float, lift: float) -> tuple[float, float]:
    """(holdout, treatment) conversion probabilities."""
    for name, value in (("baseline", baseline), ("lift", lift)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(name, f"must be a finite number, got {value!r}")
    if not 0 <= baseline <= 1:
        raise ConfigError("baseline", f"must be a probability in [0, 1], got {baseline:g}")
    treated = baseline * (1 + lift)
    if not 0 <= treated <= 1:
        raise ConfigError("lift", f"gives a treatment rate of {treated:g}, outside [0, 1]")
    return float(baseline), float(treated)


def _background(
    assigned: pl.Series,
    count: int,
    products: list[str],
    conversion: str,
    start_us: int,
    span_us: int,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """``count`` noise events, none a conversion of an assigned user in the window."""
    others = [kind for kind in DEFAULT_EVENT_WEIGHTS if kind != conversion]
    inside = rng.random(count) < 0.5  # by a user of the campaign
    times = start_us - span_us + np.floor(rng.random(count) * 3 * span_us).astype(np.int64)
    in_window = (times >= start_us) & (times < start_us + span_us)
    converting = (rng.random(count) < 0.5) & ~(inside & in_window)
    kinds = np.asarray(others)[rng.integers(len(others), size=count)]
    users = np.where(
        inside,
        assigned.to_numpy()[rng.integers(len(assigned), size=count)],
        np.char.add("~background-", rng.integers(count, size=count).astype(str)),
    )
    return pl.DataFrame(
        {
            USER: pl.Series(users, dtype=pl.String),
            PRODUCT: pl.Series(
                np.asarray(products)[rng.integers(len(products), size=count)], dtype=pl.String
            ),
            EVENT: pl.Series(np.where(converting, conversion, kinds), dtype=pl.String),
            TIME: times,
        }
    )
