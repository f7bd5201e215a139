"""Campaign planner: split a ranked audience into treatment and a random holdout, and price it.

Each user's group comes from a hash of (experiment id, user id), so it is the same in
every run, process and library version (Python's and polars' hashes are not), it does not
depend on the user's rank or on who else is in the audience, and two experiments split
independently. Only the treatment group is contacted; the holdout (control) measures what
the campaign adds. The planner takes plain user ids so that any audience source (a file,
a trained artifact) can feed it.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from audience import atomic
from audience.data.schema import USER
from audience.errors import ConfigError
from audience.experiments.abtest import (
    SampleSize,
    Serializable,
    Sides,
    achieved_power,
    sample_size,
    target_rate,
)

TREATMENT, CONTROL = "treatment", "control"


def holdout_draws(experiment_id: str, user_ids: Sequence[str]) -> np.ndarray:
    """One uniform number in [0, 1) per user, fixed by (experiment id, user id).

    The top 53 bits of BLAKE2b-64(user id), keyed with BLAKE2b-256(experiment id) so that
    no choice of ids can make two (experiment, user) pairs hash the same input.
    """
    key = hashlib.blake2b(experiment_id.encode(), digest_size=32).digest()
    digests = b"".join(
        hashlib.blake2b(user.encode(), key=key, digest_size=8).digest() for user in user_ids
    )
    words = np.frombuffer(digests, dtype=">u8") >> np.uint64(11)
    return words.astype(np.float64) / float(2**53)


def assign_groups(
    user_ids: Sequence[str], experiment_id: str, holdout_share: float
) -> pl.DataFrame:
    """user_id, group, rank (1 = first given): control where the user's draw < holdout_share."""
    users = _user_ids(user_ids)
    share = _holdout_share(holdout_share)
    experiment = _experiment_id(experiment_id)
    control = holdout_draws(experiment, users) < share
    return pl.DataFrame(
        {
            USER: pl.Series(users, dtype=pl.String),
            "group": np.where(control, CONTROL, TREATMENT),
            "rank": np.arange(1, len(users) + 1, dtype=np.int64),
        }
    )


def write_groups(groups: pl.DataFrame, path: Path) -> None:
    """The assignment as CSV (user_id, group, rank), written atomically."""
    atomic.write_text(groups.write_csv(), path)


@dataclass(frozen=True)
class CampaignPlan(Serializable):
    """Expected economics of contacting the treatment group, and whether the test can see it.

    Conversions and money are expectations at the given rates. ``roi`` is
    (incremental value - cost) / cost, None when contacting is free. ``sample_size`` is
    what the planned split needs to detect the lift; ``warning`` says when the audience
    falls short of it.
    """

    method: str
    experiment_id: str
    audience_size: int
    treatment_size: int
    control_size: int
    holdout_share: float
    baseline_rate: float
    treatment_rate: float
    expected_conversions: float
    incremental_conversions: float
    cost: float
    incremental_value: float
    roi: float | None
    sample_size: SampleSize
    power: float | None
    warning: str | None


def plan_campaign(
    user_ids: Sequence[str],
    experiment_id: str,
    *,
    holdout_share: float,
    baseline_rate: float,
    lift: float,
    relative_lift: bool = True,
    cost_per_contact: float,
    value_per_conversion: float,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: Sides = "two-sided",
) -> tuple[CampaignPlan, pl.DataFrame]:
    """Split ``user_ids`` (in rank order) and price the campaign; returns (plan, groups).

    ``lift`` is relative (treatment rate = baseline * (1 + lift)) unless ``relative_lift``
    is False (treatment rate = baseline + lift). With n_t treatment users:
        expected conversions    = n_t * treatment rate
        incremental conversions = n_t * (treatment rate - baseline rate)
        cost                    = n_t * cost per contact
        incremental value       = incremental conversions * value per conversion
    The sample size is the pooled z-test's (R's power.prop.test) at the planned
    allocation treatment : control = (1 - holdout share) : holdout share.
    """
    groups = assign_groups(user_ids, experiment_id, holdout_share)
    rate = target_rate(baseline_rate, lift, relative=relative_lift)
    cost_each = _non_negative("cost_per_contact", cost_per_contact)
    value_each = _non_negative("value_per_conversion", value_per_conversion)
    share = float(holdout_share)
    needed = sample_size(
        baseline_rate, rate, alpha=alpha, power=power, ratio=(1 - share) / share, sides=sides
    )
    n_control = int((groups["group"] == CONTROL).sum())
    n_treatment = groups.height - n_control
    incremental = n_treatment * (rate - baseline_rate)
    cost = n_treatment * cost_each
    plan = CampaignPlan(
        method="blake2b(experiment id, user id) split; pooled z-test sample size",
        experiment_id=experiment_id,
        audience_size=groups.height,
        treatment_size=n_treatment,
        control_size=n_control,
        holdout_share=share,
        baseline_rate=baseline_rate,
        treatment_rate=rate,
        expected_conversions=n_treatment * rate,
        incremental_conversions=incremental,
        cost=cost,
        incremental_value=incremental * value_each,
        roi=(incremental * value_each - cost) / cost if cost > 0 else None,
        sample_size=needed,
        power=_power(baseline_rate, rate, n_control, n_treatment, alpha, sides),
        warning=_shortfall(needed, n_control, n_treatment),
    )
    return plan, groups


def _power(
    baseline: float, rate: float, n_control: int, n_treatment: int, alpha: float, sides: Sides
) -> float | None:
    """Power with the groups as drawn; None when one of them is empty."""
    if n_control == 0 or n_treatment == 0:
        return None
    return achieved_power(baseline, rate, n_control, n_treatment, alpha=alpha, sides=sides).power


def _shortfall(needed: SampleSize, n_control: int, n_treatment: int) -> str | None:
    if n_control >= needed.n_control and n_treatment >= needed.n_treatment:
        return None
    return (
        f"audience too small to measure the lift: needs {needed.n_control:,} control and "
        f"{needed.n_treatment:,} treatment users ({needed.total:,} in all) for power "
        f"{needed.power:g} at alpha {needed.alpha:g}; has {n_control:,} and {n_treatment:,}"
    )


def _user_ids(user_ids: Sequence[str]) -> list[str]:
    users = [str(user) for user in user_ids]
    if not users:
        raise ConfigError("user_ids", "is empty")
    repeated = [user for user, count in Counter(users).items() if count > 1]
    if repeated:
        raise ConfigError(
            "user_ids",
            f"must be unique (one rank each); {len(repeated)} repeat, e.g. {repeated[0]!r}",
        )
    return users


def _holdout_share(value: float) -> float:
    if not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigError("holdout_share", f"must be in (0, 1), got {value!r}")
    return float(value)


def _experiment_id(value: str) -> str:
    if not value.strip():
        raise ConfigError("experiment_id", "must not be empty")
    return value


def _non_negative(name: str, value: float) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(name, f"must be a finite number >= 0, got {value!r}")
    return float(value)
