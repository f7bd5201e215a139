"""Statistics of an A/B test on conversion rates: significance, intervals, power, SRM, Bayes.

Arm ``a`` is the control and arm ``b`` (then ``c``, ``d``, ... for more variants) a
treatment. Differences are treatment minus control and ratios treatment over control, so
a positive number always means the treatment converts better. Each function checks its
inputs (a `ConfigError` names the offending field), leaves the statistics to statsmodels
(scipy where statsmodels has nothing or its numerics fail), and returns a small frozen
result whose ``method`` says which method produced it and whose ``to_dict()`` is its JSON
form.

Degenerate inputs have defined answers instead of NaN: two arms both at 0% or both at
100% give z = 0 and p = 1, and the relative lift over a control without conversions is
``None`` (the ratio is unbounded).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from audience.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Sides = Literal["two-sided", "one-sided"]
TestMethod = Literal["z-pooled", "z-unpooled", "score"]
IntervalMethod = Literal["newcombe", "wald", "agresti-caffo"]
LiftMethod = Literal["koopman", "mover-r"]
PowerMethod = Literal["pooled", "cohen-h"]

SIDES: tuple[Sides, ...] = ("two-sided", "one-sided")
TEST_METHODS: tuple[TestMethod, ...] = ("z-pooled", "z-unpooled", "score")
INTERVAL_METHODS: tuple[IntervalMethod, ...] = ("newcombe", "wald", "agresti-caffo")
LIFT_METHODS: tuple[LiftMethod, ...] = ("koopman", "mover-r")
POWER_METHODS: tuple[PowerMethod, ...] = ("pooled", "cohen-h")

#: Variant arms after the control ``a``; validation errors name them (``conversions_c``).
VARIANT_ARMS = "bcdefghijklmnopqrstuvwxyz"


class Serializable:
    """Gives a frozen result dataclass its JSON form."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(cast("DataclassInstance", self))


# --- validation -----------------------------------------------------------------------


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if value < 0:
        raise ConfigError(name, f"must be >= 0, got {value}")
    return int(value)


def _arm(conversions: object, exposures: object, arm: str) -> tuple[int, int]:
    """Validated (conversions, exposures) of one arm; fields are named ``conversions_<arm>``."""
    converted = _count(f"conversions_{arm}", conversions)
    exposed = _count(f"exposures_{arm}", exposures)
    if exposed == 0:
        raise ConfigError(f"exposures_{arm}", "must be >= 1, got 0")
    if converted > exposed:
        raise ConfigError(
            f"conversions_{arm}", f"must be <= exposures_{arm} ({exposed}), got {converted}"
        )
    return converted, exposed


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number, got {value!r}")
    return float(value)


def _unit(name: str, value: object) -> float:
    """A rate or a power: strictly between 0 and 1."""
    number = _real(name, value)
    if not 0 < number < 1:
        raise ConfigError(name, f"must be in (0, 1), got {number:g}")
    return number


def _positive(name: str, value: object) -> float:
    number = _real(name, value)
    if number <= 0:
        raise ConfigError(name, f"must be > 0, got {number:g}")
    return number


def _alpha(value: object) -> float:
    number = _real("alpha", value)
    if not 0 < number <= 0.5:
        raise ConfigError("alpha", f"must be in (0, 0.5], got {number:g}")
    return number


def _choice(name: str, value: str, options: Sequence[str]) -> None:
    if value not in options:
        raise ConfigError(name, f"must be one of {', '.join(options)}; got {value!r}")


def target_rate(baseline: float, lift: float, *, relative: bool = True) -> float:
    """The treatment rate a lift implies: baseline * (1 + lift), or baseline + lift if absolute."""
    base = _unit("baseline", baseline)
    change = _real("lift", lift)
    rate = base * (1 + change) if relative else base + change
    if not 0 < rate < 1:
        raise ConfigError("lift", f"gives a treatment rate of {rate:g}, outside (0, 1)")
    if rate == base:
        raise ConfigError("lift", "is 0: there is no difference to detect")
    return rate


# --- significance and intervals ---------------------------------------------------------


@dataclass(frozen=True)
class Interval(Serializable):
    """A point estimate with a two-sided confidence interval at ``level``."""

    method: str
    estimate: float
    low: float
    high: float
    level: float


@dataclass(frozen=True)
class Comparison(Serializable):
    """Treatment (b) against control (a): test, difference and relative lift."""

    method: TestMethod
    pooled: bool
    sides: Sides
    alpha: float
    rate_a: float
    rate_b: float
    statistic: float
    p_value: float
    significant: bool
    difference: Interval
    relative_lift: Interval | None


def compare(
    conversions_a: int,
    exposures_a: int,
    conversions_b: int,
    exposures_b: int,
    *,
    alpha: float = 0.05,
    method: TestMethod = "z-pooled",
    interval: IntervalMethod = "newcombe",
    lift_interval: LiftMethod = "koopman",
    sides: Sides = "two-sided",
) -> Comparison:
    """Is the treatment's conversion rate different from the control's?

    Tests (statsmodels):
      z-pooled    z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b)), p the pooled rate
                  (`proportions_ztest`; the chi-square test of the 2x2 table)
      z-unpooled  Wald: the variance is p_a (1 - p_a) / n_a + p_b (1 - p_b) / n_b
      score       Miettinen-Nurminen score test (`test_proportions_2indep`); at a null
                  difference of 0 it is the pooled z times sqrt((N - 1) / N)
    One-sided means H1: p_b > p_a; the intervals are then two-sided at 1 - 2 alpha so
    that their lower bound agrees with the test.

    Intervals: the difference by Newcombe's hybrid score (method 10 of Newcombe 1998,
    default), Wald, or Agresti-Caffo; the relative lift p_b / p_a - 1 by Koopman's
    score interval for the ratio (default) or MOVER-R with Wilson limits.
    """

    control = _arm(conversions_a, exposures_a, "a")
    treatment = _arm(conversions_b, exposures_b, "b")
    alpha = _alpha(alpha)
    _choice("method", method, TEST_METHODS)
    _choice("interval", interval, INTERVAL_METHODS)
    _choice("lift_interval", lift_interval, LIFT_METHODS)
    _choice("sides", sides, SIDES)
    statistic, p_value = _test(control, treatment, method, sides)
    ci_alpha = alpha if sides == "two-sided" else 2 * alpha
    return Comparison(
        method=method,
        pooled=method != "z-unpooled",
        sides=sides,
        alpha=alpha,
        rate_a=control[0] / control[1],
        rate_b=treatment[0] / treatment[1],
        statistic=statistic,
        p_value=p_value,
        significant=p_value < alpha,
        difference=_difference(control, treatment, interval, ci_alpha),
        relative_lift=_relative_lift(control, treatment, lift_interval, ci_alpha),
    )


def _at_bound(arm: tuple[int, int]) -> bool:
    """The arm converted 0% or 100%."""
    return arm[0] in (0, arm[1])


def _test(
    control: tuple[int, int], treatment: tuple[int, int], method: TestMethod, sides: Sides
) -> tuple[float, float]:
    from statsmodels.stats.proportion import proportions_ztest, test_proportions_2indep

    (conv_a, n_a), (conv_b, n_b) = control, treatment
    if (conv_a + conv_b) in (0, n_a + n_b):
        return 0.0, 1.0  # both arms at 0% or both at 100%: nothing tells them apart
    alternative = "two-sided" if sides == "two-sided" else "larger"
    if method == "z-pooled":
        z, p = proportions_ztest([conv_b, conv_a], [n_b, n_a], alternative=alternative)
        return float(z), float(p)
    if method == "z-unpooled" and _at_bound(control) and _at_bound(treatment):
        raise ConfigError(
            "method", "z-unpooled is undefined for a 0% arm against a 100% arm; use z-pooled"
        )
    # statsmodels divides by a 0%/100% arm's zero variance in an intermediate it then
    # discards; the statistic it returns is finite (checked in tests), so mute the warning.
    with np.errstate(divide="ignore", invalid="ignore"):
        result = test_proportions_2indep(
            conv_b,
            n_b,
            conv_a,
            n_a,
            method="wald" if method == "z-unpooled" else "score",
            alternative=alternative,
        )
    return float(result.statistic), float(result.pvalue)


_STATSMODELS_DIFF = {"newcombe": "newcomb", "wald": "wald", "agresti-caffo": "agresti-caffo"}


def _difference(
    control: tuple[int, int], treatment: tuple[int, int], method: IntervalMethod, alpha: float
) -> Interval:
    from statsmodels.stats.proportion import confint_proportions_2indep

    low, high = confint_proportions_2indep(
        treatment[0],
        treatment[1],
        control[0],
        control[1],
        compare="diff",
        method=_STATSMODELS_DIFF[method],
        alpha=alpha,
    )
    estimate = treatment[0] / treatment[1] - control[0] / control[1]
    # Agresti-Caffo can overshoot [-1, 1] next to a 0% or 100% arm.
    return Interval(method, estimate, max(-1.0, float(low)), min(1.0, float(high)), 1 - alpha)


def _relative_lift(
    control: tuple[int, int], treatment: tuple[int, int], method: LiftMethod, alpha: float
) -> Interval | None:
    """p_b / p_a - 1 with the ratio's interval shifted by -1; None if the control never converted.

    Koopman's score statistic has a zero variance when an arm converts 100%; there MOVER-R
    is used and ``method`` says so.
    """
    if control[0] == 0:
        return None
    label: str = method
    if method == "koopman" and (control[0] == control[1] or treatment[0] == treatment[1]):
        method, label = "mover-r", "mover-r (koopman is undefined at a 100% rate)"
    if method == "koopman":
        low, high = _koopman_ratio(control, treatment, alpha)
    else:
        low, high = _mover_ratio(control, treatment, alpha)
    ratio = (treatment[0] / treatment[1]) / (control[0] / control[1])
    return Interval(label, ratio - 1, low - 1, high - 1, 1 - alpha)


def _koopman_statistic(control: tuple[int, int], treatment: tuple[int, int], ratio: float) -> float:
    """Koopman's (1984) score chi-square for H0: p_b / p_a = ratio (Miettinen & Nurminen
    1985 without their N / (N - 1) correction; Nam 1995 shows the two forms agree):

        z^2 = (p_b - r p_a)^2 / (~p_b ~q_b / n_b + r^2 ~p_a ~q_a / n_a),    r = ratio

    with ~p_b = r ~p_a, ~q = 1 - ~p, and ~p_a the restricted maximum-likelihood rate, the
    smaller root of N r p^2 - (n_b r + x_b + n_a + x_a r) p + x_a + x_b = 0. Near 100%
    both roots of that quadratic crowd 1 and 1 - ~p_a loses its digits, so each ~q comes
    from its own quadratic (p = 1 - q substituted; y = n - x the failures):
        N r q_a^2 + ((1 - r)(N + y_a) - y_a - y_b) q_a + (r - 1) y_a = 0
        N q_b^2 + ((r - 1)(n_b + x_a) - y_a - y_b) q_b + (1 - r) y_b = 0    (larger roots)
    The coefficients, discriminants and p_b - r p_a are exact integers (r is a binary
    fraction) rounded once, and each root is taken in the form that does not cancel.
    Needs 0 < x_a < n_a and x_b < n_b.
    """
    (x_a, n_a), (x_b, n_b) = control, treatment
    y_a, y_b, total = n_a - x_a, n_b - x_b, n_a + n_b
    num, den = ratio.as_integer_ratio()
    p_a = _smaller_root(
        total * num, -(n_b * num + (x_b + n_a) * den + x_a * num), (x_a + x_b) * den, den
    )
    # the larger root of a q^2 + b q + c = 0 is minus the smaller one of a q^2 - b q + c = 0
    q_a = -_smaller_root(
        total * num, (y_a + y_b) * den - (den - num) * (total + y_a), (num - den) * y_a, den
    )
    q_b = -_smaller_root(
        total * den, (y_a + y_b) * den - (num - den) * (n_b + x_a), (den - num) * y_b, den
    )
    difference = (x_b * n_a * den - num * x_a * n_b) / (n_a * n_b * den)  # correctly rounded
    variance = ratio * p_a * q_b / n_b + ratio**2 * p_a * q_a / n_a
    return 0.0 if difference == 0 else difference**2 / variance


def _smaller_root(a: int, b: int, c: int, scale: int) -> float:
    """The smaller root of a x^2 + b x + c = 0 (a > 0, real roots) without cancellation;
    the integer coefficients are all ``scale`` times the equation's."""
    root = math.sqrt(max(0.0, (b * b - 4 * a * c) / (scale * scale)))
    a_, b_, c_ = a / scale, b / scale, c / scale
    return 2 * c_ / (root - b_) if b_ < 0 else (-b_ - root) / (2 * a_)


def _koopman_ratio(
    control: tuple[int, int], treatment: tuple[int, int], alpha: float
) -> tuple[float, float]:
    """Koopman's (1984, Biometrics 40:513) score interval for p_b / p_a: the ratios whose
    score test (`_koopman_statistic`) does not reject at ``alpha``.

    statsmodels gets the limits from the roots of Nam's (1995, Biometrics 51:1335) cubic,
    whose coefficients grow like n^3: against a control of millions of users numpy's
    roots come out complex or wrong (0/1 against 13,095,896/14,665,948 gave 1.105 +- 0.073i;
    1/2 against 13,199,353/14,665,948 gave [0.70, 0.99] around 0.56). So the statistic
    is inverted directly, by Brent's method on log(ratio) (scipy): it is 0 at the estimate
    and grows without bound on either side, so each limit is bracketed by stepping out
    from the estimate. Without treatment conversions (x_b = 0) the statistic tends to 0
    with the ratio, and the lower limit is 0 (Koopman 1984; Gart & Nam 1988, Biometrics
    44:323), the upper one finite.
    """
    from scipy import optimize, stats

    critical = float(stats.norm.isf(alpha / 2)) ** 2

    def excess(log_ratio: float) -> float:
        return _koopman_statistic(control, treatment, math.exp(log_ratio)) - critical

    def limit(inside: float, step: float) -> float:
        """The root beyond ``inside`` (where excess < 0) in the direction of ``step``."""
        outside = inside + step
        while excess(outside) < 0:
            inside, outside, step = outside, outside + 2 * step, 2 * step
        low, high = sorted((inside, outside))
        return math.exp(float(optimize.brentq(excess, low, high, xtol=1e-15)))

    if treatment[0] == 0:
        start = math.log(control[1] / control[0])  # the ratio at which ~p_b = 1 if ~p_a = p_a
        while excess(start) >= 0:
            start -= 1.0
        return 0.0, limit(start, 1.0)
    estimate = math.log((treatment[0] / treatment[1]) / (control[0] / control[1]))
    return limit(estimate, -1.0), limit(estimate, 1.0)


def _mover_ratio(
    control: tuple[int, int], treatment: tuple[int, int], alpha: float
) -> tuple[float, float]:
    """MOVER-R (Donner & Zou 2012) for p_b / p_a from the Wilson limits (l, u) of each rate.

    With P = p_b p_a, A = l_b (2 p_b - l_b), D = u_a (2 p_a - u_a), B = u_b (2 p_b - u_b)
    and E = l_a (2 p_a - l_a):
        L = A / (P + sqrt(P^2 - A D))          (rationalised: D may be 0 or negative)
        U = (P + sqrt(P^2 - B E)) / E          (E > 0 because p_a > 0)
    It is to the ratio what Newcombe's interval is to the difference.
    """
    from statsmodels.stats.proportion import proportion_confint

    p_a, p_b = control[0] / control[1], treatment[0] / treatment[1]
    l_a, u_a = proportion_confint(*control, alpha=alpha, method="wilson")
    l_b, u_b = proportion_confint(*treatment, alpha=alpha, method="wilson")
    both = p_a * p_b
    a, d = l_b * (2 * p_b - l_b), u_a * (2 * p_a - u_a)
    b, e = u_b * (2 * p_b - u_b), l_a * (2 * p_a - l_a)
    low = 0.0 if p_b == 0 else a / (both + math.sqrt(max(0.0, both**2 - a * d)))
    return low, (both + math.sqrt(max(0.0, both**2 - b * e))) / e


@dataclass(frozen=True)
class VariantResult(Serializable):
    """One variant against the control; ``significant`` uses the Holm-adjusted p-value."""

    arm: str
    comparison: Comparison
    p_adjusted: float
    significant: bool


@dataclass(frozen=True)
class MultiComparison(Serializable):
    method: str
    alpha: float
    variants: tuple[VariantResult, ...]


def compare_variants(
    control: tuple[int, int],
    variants: Sequence[tuple[int, int]],
    *,
    alpha: float = 0.05,
    method: TestMethod = "z-pooled",
    interval: IntervalMethod = "newcombe",
    lift_interval: LiftMethod = "koopman",
    sides: Sides = "two-sided",
) -> MultiComparison:
    """Each variant (conversions, exposures) against the control, Holm-corrected.

    Holm's step-down procedure (statsmodels `multipletests`): the k-th smallest of m
    p-values is multiplied by m - k + 1, made non-decreasing and capped at 1; rejecting
    where the adjusted p < alpha keeps the family-wise error rate at alpha. The
    intervals inside each comparison are not adjusted.
    """
    from statsmodels.stats.multitest import multipletests

    if not variants:
        raise ConfigError("variants", "needs at least one variant")
    if len(variants) > len(VARIANT_ARMS):
        raise ConfigError("variants", f"at most {len(VARIANT_ARMS)}, got {len(variants)}")
    alpha = _alpha(alpha)
    base = _arm(*control, "a")
    arms = [_arm(*variant, arm) for variant, arm in zip(variants, VARIANT_ARMS, strict=False)]
    comparisons = [
        compare(
            *base,
            *arm,
            alpha=alpha,
            method=method,
            interval=interval,
            lift_interval=lift_interval,
            sides=sides,
        )
        for arm in arms
    ]
    reject, adjusted, _, _ = multipletests(
        [c.p_value for c in comparisons], alpha=alpha, method="holm"
    )
    return MultiComparison(
        method=f"holm over {method}",
        alpha=alpha,
        variants=tuple(
            VariantResult(arm, c, float(p), bool(r))
            for arm, c, p, r in zip(VARIANT_ARMS, comparisons, adjusted, reject, strict=False)
        ),
    )


# --- sample size, power, minimum detectable effect ---------------------------------------


@dataclass(frozen=True)
class SampleSize(Serializable):
    """Users needed per arm; ``n_control_exact`` is the unrounded solution (R's ``n``)."""

    method: PowerMethod
    baseline: float
    target: float
    alpha: float
    power: float
    ratio: float
    sides: Sides
    n_control_exact: float
    n_control: int
    n_treatment: int
    total: int


@dataclass(frozen=True)
class Power(Serializable):
    method: PowerMethod
    baseline: float
    target: float
    alpha: float
    sides: Sides
    n_control: int
    n_treatment: int
    power: float


@dataclass(frozen=True)
class DetectableEffect(Serializable):
    """The smallest treatment rate above the baseline detected with the given power."""

    method: PowerMethod
    baseline: float
    alpha: float
    power: float
    sides: Sides
    n_control: int
    n_treatment: int
    target: float
    absolute: float
    relative: float


def _power(
    baseline: float,
    target: float,
    n_control: float,
    ratio: float,
    alpha: float,
    sides: Sides,
    method: PowerMethod,
) -> float:
    """Power of the test of control (baseline) against treatment (target), n_t = ratio * n_c.

    pooled: the z-test's null variance uses the pooled rate, the alternative's the two
    rates (`power_proportions_2indep`; R's power.prop.test for ratio 1). cohen-h: the
    arcsine-transformed effect h = 2 asin(sqrt(p_a)) - 2 asin(sqrt(p_b)) with unit
    variance (`NormalIndPower`; R's pwr.2p2n.test). Two-sided power counts both tails;
    one-sided tests in the direction of the effect.
    """
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import power_proportions_2indep, proportion_effectsize

    alternative = (
        "two-sided" if sides == "two-sided" else "larger" if baseline > target else "smaller"
    )
    if method == "pooled":
        return float(
            power_proportions_2indep(
                baseline - target,
                target,
                n_control,
                ratio=ratio,
                alpha=alpha,
                alternative=alternative,
                return_results=False,
            )
        )
    effect = float(proportion_effectsize(baseline, target))
    return float(
        NormalIndPower().power(
            effect, nobs1=n_control, alpha=alpha, ratio=ratio, alternative=alternative
        )
    )


def _power_inputs(alpha: float, power: float, sides: Sides, method: PowerMethod) -> float:
    alpha = _alpha(alpha)
    if _unit("power", power) <= alpha:
        raise ConfigError("power", f"must exceed alpha ({alpha:g}), got {power:g}")
    _choice("sides", sides, SIDES)
    _choice("method", method, POWER_METHODS)
    return alpha


def sample_size(
    baseline: float,
    target: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    sides: Sides = "two-sided",
    method: PowerMethod = "pooled",
) -> SampleSize:
    """Users per arm to detect ``target`` against ``baseline``; n_treatment = ratio * n_control.

    pooled (default; R's power.prop.test generalised to unequal allocation, Fleiss,
    Tytun & Ury 1980 without continuity correction):
        n_c = (z_a sqrt(p (1 - p) (1 + 1/r)) + z_b sqrt(p_a q_a + p_b q_b / r))^2 / (p_b - p_a)^2
    with p = (p_a + r p_b) / (1 + r), z_a = z(1 - alpha/2) (z(1 - alpha) one-sided) and
    z_b = z(power); the far tail of a two-sided test is ignored, as R does by default.
    cohen-h: solves `NormalIndPower`'s power for n with h = 2 asin(sqrt(p_a)) - 2 asin(sqrt(p_b))
    (see `_cohen_h_size`). Either can need under one user per arm for a large effect;
    ``n_control_exact`` says so, and the rounded sizes are at least 1.
    """
    from statsmodels.stats.proportion import samplesize_proportions_2indep_onetail

    base, goal = _unit("baseline", baseline), _unit("target", target)
    if goal == base:
        raise ConfigError("target", f"equals baseline ({base:g}): there is no difference to detect")
    alpha = _power_inputs(alpha, power, sides, method)
    ratio = _positive("ratio", ratio)
    if method == "pooled":
        exact = samplesize_proportions_2indep_onetail(
            base - goal,
            goal,
            power,
            ratio=ratio,
            alpha=alpha,
            alternative="two-sided" if sides == "two-sided" else "larger",
        )
    else:
        exact = _cohen_h_size(base, goal, alpha, power, ratio, sides)
    n_control, n_treatment = math.ceil(float(exact)), math.ceil(float(exact) * ratio)
    return SampleSize(
        method=method,
        baseline=base,
        target=goal,
        alpha=alpha,
        power=power,
        ratio=ratio,
        sides=sides,
        n_control_exact=float(exact),
        n_control=n_control,
        n_treatment=n_treatment,
        total=n_control + n_treatment,
    )


def _cohen_h_size(
    baseline: float, target: float, alpha: float, power: float, ratio: float, sides: Sides
) -> float:
    """The n_control at which `NormalIndPower` (Cohen's h) reaches ``power``.

    statsmodels' `solve_power` searches n from 2 upwards and returns NaN (with a
    ConvergenceWarning) when fewer users suffice, as for 1% against 99%. Its power
    function is solved here instead, by Brent's method (scipy) between 0, where the power
    is alpha, and a multiple of the closed form (Cohen 1988, ch. 6)
        n_c = (1 + 1/r) ((z(1 - alpha/2) + z(power)) / h)^2    (z(1 - alpha) one-sided)
    which ignores only the far tail of a two-sided test; the power grows with n.
    """
    from scipy import optimize, stats
    from statsmodels.stats.proportion import proportion_effectsize

    def shortfall(n_control: float) -> float:
        if n_control == 0:  # statsmodels divides by n; its power tends to alpha
            return alpha - power
        return _power(baseline, target, n_control, ratio, alpha, sides, "cohen-h") - power

    effect = abs(float(proportion_effectsize(baseline, target)))
    z_alpha = stats.norm.isf(alpha / 2 if sides == "two-sided" else alpha)
    high = 2 * (1 + 1 / ratio) * ((z_alpha + stats.norm.ppf(power)) / effect) ** 2
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-12, rtol=1e-14))


def achieved_power(
    baseline: float,
    target: float,
    n_control: int,
    n_treatment: int,
    *,
    alpha: float = 0.05,
    sides: Sides = "two-sided",
    method: PowerMethod = "pooled",
) -> Power:
    """Probability that the test detects ``target`` with these group sizes (see `_power`)."""
    base, goal = _unit("baseline", baseline), _unit("target", target)
    alpha = _alpha(alpha)
    _choice("sides", sides, SIDES)
    _choice("method", method, POWER_METHODS)
    n_c, n_t = _group_sizes(n_control, n_treatment)
    value = _power(base, goal, n_c, n_t / n_c, alpha, sides, method)
    return Power(method, base, goal, alpha, sides, n_c, n_t, value)


def _group_sizes(n_control: int, n_treatment: int) -> tuple[int, int]:
    sizes = _count("n_control", n_control), _count("n_treatment", n_treatment)
    for name, size in zip(("n_control", "n_treatment"), sizes, strict=True):
        if size == 0:
            raise ConfigError(name, "must be >= 1, got 0")
    return sizes


def minimum_detectable_effect(
    baseline: float,
    n_control: int,
    n_treatment: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    sides: Sides = "two-sided",
    method: PowerMethod = "pooled",
) -> DetectableEffect:
    """The treatment rate above ``baseline`` these group sizes detect with ``power``.

    Solves power(target) = power for target in (baseline, 1] with Brent's method (scipy;
    statsmodels solves only for Cohen's h). Power grows with the target, from alpha at
    the baseline, so the root is unique.
    """
    from scipy import optimize

    base = _unit("baseline", baseline)
    alpha = _power_inputs(alpha, power, sides, method)
    n_c, n_t = _group_sizes(n_control, n_treatment)

    def shortfall(target: float) -> float:
        return _power(base, target, n_c, n_t / n_c, alpha, sides, method) - power

    if shortfall(1.0) < 0:
        raise ConfigError(
            "n_control",
            f"too small: with {n_c} control and {n_t} treatment users even a 100% "
            f"treatment rate is detected with power {shortfall(1.0) + power:.3f} < {power:g}",
        )
    target = float(optimize.brentq(shortfall, base, 1.0, xtol=1e-12))
    return DetectableEffect(
        method, base, alpha, power, sides, n_c, n_t, target, target - base, target / base - 1
    )


# --- sample ratio mismatch ---------------------------------------------------------------


@dataclass(frozen=True)
class SampleRatioCheck(Serializable):
    """Did the groups receive the planned shares of users?"""

    method: str
    observed: tuple[int, ...]
    shares: tuple[float, ...]
    expected: tuple[float, ...]
    statistic: float
    df: int
    p_value: float
    alpha: float
    mismatch: bool


def sample_ratio_mismatch(
    observed: Sequence[int], shares: Sequence[float] | None = None, *, alpha: float = 0.001
) -> SampleRatioCheck:
    """Pearson's chi-square goodness of fit of the group sizes to the planned split.

    chi2 = sum (O_i - E_i)^2 / E_i with E_i = share_i * sum(O), k - 1 degrees of freedom
    (scipy `chisquare`). ``shares`` are weights (90/10 or 0.9/0.1), equal by default. The
    default alpha is strict because the check runs on every experiment, where a false
    alarm costs an investigation, and a true mismatch is usually glaring.
    """
    from scipy import stats

    if len(observed) < 2:
        raise ConfigError("observed", f"needs at least two groups, got {len(observed)}")
    counts = tuple(_count(f"observed[{i}]", value) for i, value in enumerate(observed))
    if sum(counts) == 0:
        raise ConfigError("observed", "has no users in any group")
    weights = [1.0] * len(counts) if shares is None else list(shares)
    if len(weights) != len(counts):
        raise ConfigError("shares", f"has {len(weights)} values for {len(counts)} groups")
    weights = [_positive(f"shares[{i}]", value) for i, value in enumerate(weights)]
    planned = tuple(w / sum(weights) for w in weights)
    expected = tuple(share * sum(counts) for share in planned)
    alpha = _alpha(alpha)
    statistic, p_value = stats.chisquare(counts, f_exp=expected)
    return SampleRatioCheck(
        method="chi-square goodness of fit",
        observed=counts,
        shares=planned,
        expected=expected,
        statistic=float(statistic),
        df=len(counts) - 1,
        p_value=float(p_value),
        alpha=alpha,
        mismatch=bool(p_value < alpha),
    )


# --- Bayesian probability to beat control -----------------------------------------------

CLOSED_FORM = "beta-binomial, exact closed form (Evan Miller)"
QUADRATURE = "beta-binomial, numerical integration"


@dataclass(frozen=True)
class BayesComparison(Serializable):
    """Posterior Beta(alpha, beta) of each arm's rate and P(p_b > p_a)."""

    method: str
    prior: tuple[float, float]
    posterior_a: tuple[float, float]
    posterior_b: tuple[float, float]
    mean_a: float
    mean_b: float
    prob_b_beats_a: float


def bayes_compare(
    conversions_a: int,
    exposures_a: int,
    conversions_b: int,
    exposures_b: int,
    *,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
) -> BayesComparison:
    """P(p_b > p_a) with independent Beta(prior_alpha, prior_beta) priors (uniform by default).

    The posterior of an arm is Beta(prior_alpha + conversions, prior_beta + failures). The
    probability is exact: Evan Miller's closed form when a posterior alpha is an integer,
    otherwise adaptive quadrature of the integral of f_b(x) F_a(x) over [0, 1].
    """
    conv_a, n_a = _arm(conversions_a, exposures_a, "a")
    conv_b, n_b = _arm(conversions_b, exposures_b, "b")
    prior = _positive("prior_alpha", prior_alpha), _positive("prior_beta", prior_beta)
    post_a = (prior[0] + conv_a, prior[1] + n_a - conv_a)
    post_b = (prior[0] + conv_b, prior[1] + n_b - conv_b)
    probability, method = _prob_greater(post_b, post_a)
    return BayesComparison(
        method=method,
        prior=prior,
        posterior_a=post_a,
        posterior_b=post_b,
        mean_a=post_a[0] / sum(post_a),
        mean_b=post_b[0] / sum(post_b),
        prob_b_beats_a=probability,
    )


def _prob_greater(x: tuple[float, float], y: tuple[float, float]) -> tuple[float, str]:
    """P(X > Y) for X ~ Beta(*x), Y ~ Beta(*y); the closed form sums alpha terms, so use the
    smaller integer alpha (P(X > Y) = 1 - P(Y > X) for continuous X, Y)."""
    x_integer, y_integer = float(x[0]).is_integer(), float(y[0]).is_integer()
    if x_integer and (not y_integer or x[0] <= y[0]):
        return _evan_miller(x, y), CLOSED_FORM
    if y_integer:
        return 1.0 - _evan_miller(y, x), CLOSED_FORM
    return _quadrature(x, y), QUADRATURE


def _evan_miller(x: tuple[float, float], y: tuple[float, float]) -> float:
    """P(X > Y) for an integer alpha_x (Evan Miller, "Formulas for Bayesian A/B testing"):

    sum_{i=0}^{alpha_x - 1} B(alpha_y + i, beta_y + beta_x)
                            / ((beta_x + i) B(1 + i, beta_x) B(alpha_y, beta_y)),
    summed in log space because the terms under- and overflow for large counts.
    """
    from scipy import special

    (a_x, b_x), (a_y, b_y) = x, y
    i = np.arange(int(a_x))
    log_terms = (
        special.betaln(a_y + i, b_y + b_x)
        - np.log(b_x + i)
        - special.betaln(1 + i, b_x)
        - special.betaln(a_y, b_y)
    )
    return float(np.clip(np.exp(special.logsumexp(log_terms)), 0.0, 1.0))


def _quadrature(x: tuple[float, float], y: tuple[float, float]) -> float:
    """P(X > Y) = integral of f_X(t) F_Y(t) dt over X's effective support.

    Break points at Y's bulk and X's mean keep the adaptive rule from stepping over a
    narrow posterior.
    """
    from scipy import integrate, stats

    dist_x, dist_y = stats.beta(*x), stats.beta(*y)
    low, high = dist_x.ppf(1e-15), dist_x.isf(1e-15)
    marks = (dist_y.ppf(1e-12), dist_y.mean(), dist_y.isf(1e-12), dist_x.mean())
    points = sorted(p for p in marks if low < p < high)
    value, _ = integrate.quad(
        lambda t: dist_x.pdf(t) * dist_y.cdf(t),
        low,
        high,
        points=points or None,
        limit=500,
        epsabs=1e-13,
    )
    return float(np.clip(value, 0.0, 1.0))
