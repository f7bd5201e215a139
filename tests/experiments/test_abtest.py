"""experiments.abtest and experiments.campaign against published values, and `audience abtest`.

Every reference value below names where it was published. Arm a is the control and b the
treatment; differences are b - a and ratios b / a.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from audience.errors import ConfigError
from audience.experiments.abtest import (
    INTERVAL_METHODS,
    LIFT_METHODS,
    TEST_METHODS,
    _evan_miller,
    _koopman_ratio,
    _quadrature,
    achieved_power,
    bayes_compare,
    compare,
    compare_variants,
    minimum_detectable_effect,
    sample_ratio_mismatch,
    sample_size,
    target_rate,
)
from audience.experiments.campaign import (
    CONTROL,
    TREATMENT,
    assign_groups,
    holdout_draws,
    plan_campaign,
    write_groups,
)

AUDIENCE = str(Path(sys.executable).with_name("audience"))
USERS = [f"user-{i:06d}" for i in range(100_000)]


# --- published values ---------------------------------------------------------------------


def test_sample_size_matches_r_power_prop_test() -> None:
    # R, ?stats::power.prop.test examples:
    #   power.prop.test(p1 = .50, p2 = .75, power = .90)                      ## => n = 76.7
    #   power.prop.test(p1 = .5, p2 = 0.501, sig.level = .001, power = 0.90)  ## => n = 10451937
    size = sample_size(0.5, 0.75, power=0.9)
    assert size.n_control_exact == pytest.approx(76.7, abs=0.05)
    assert (size.n_control, size.n_treatment, size.total) == (77, 77, 154)
    assert sample_size(0.5, 0.501, alpha=0.001, power=0.9).n_control == 10_451_937


def test_power_and_detectable_effect_match_r_power_prop_test() -> None:
    # R, ?stats::power.prop.test examples:
    #   power.prop.test(n = 50, p1 = .50, p2 = .75)  ## => power = 0.740
    #   power.prop.test(n = 50, p1 = .5, power = .90)  ## => p2 = 0.8026
    assert achieved_power(0.5, 0.75, 50, 50).power == pytest.approx(0.740, abs=5e-4)
    mde = minimum_detectable_effect(0.5, 50, 50, power=0.9)
    assert mde.target == pytest.approx(0.8026, abs=5e-5)
    assert mde.relative == pytest.approx(mde.target / 0.5 - 1)


def test_unequal_allocation_pooled_matches_stata() -> None:
    # Stata's `power twoproportions` (Pearson chi-square test): p = 0.1 with 154 users
    # against p = 0.2 with 308 users has power 0.7995659; value quoted in statsmodels'
    # stats/tests/test_proportion.py::test_power_2indep (statsmodels issue #8049).
    assert achieved_power(0.1, 0.2, 154, 308).power == pytest.approx(0.7995659, abs=1e-7)
    size = sample_size(0.1, 0.2, power=0.7995659211532175, ratio=2)
    assert size.n_control_exact == pytest.approx(154, abs=0.01)
    assert size.n_treatment == math.ceil(2 * size.n_control_exact)


def test_unequal_allocation_cohen_h_matches_pwr() -> None:
    # Cohen (1988) Statistical Power Analysis, Exercise 6.3 p. 200, as run in R pwr's
    # ?pwr.2p2n.test: pwr.2p2n.test(h = 0.30, n1 = 80, n2 = 245, sig.level = 0.05,
    # alternative = "greater") gives power = 0.7532924.
    target = math.sin(math.asin(math.sqrt(0.5)) + 0.15) ** 2  # h = 0.30 above 50%
    power = achieved_power(0.5, target, 80, 245, sides="one-sided", method="cohen-h")
    assert power.power == pytest.approx(0.7532924, abs=1e-7)


def test_pooled_z_matches_statsmodels_documentation() -> None:
    # statsmodels proportions_ztest docstring: count = [5, 12], nobs = [83, 99]
    # -> z = -1.4078, p = 0.159 for the first minus the second; here b - a is positive.
    result = compare(5, 83, 12, 99)
    assert result.statistic == pytest.approx(1.4078, abs=5e-5)
    assert result.p_value == pytest.approx(0.159, abs=5e-4)
    assert result.pooled
    assert not result.significant


def test_score_and_unpooled_tests_follow_their_formulas() -> None:
    pooled = compare(5, 83, 12, 99)
    # Miettinen-Nurminen at a null difference of 0: the pooled z with variance * N/(N-1).
    score = compare(5, 83, 12, 99, method="score")
    assert score.statistic == pytest.approx(pooled.statistic * math.sqrt(181 / 182))
    assert score.pooled
    wald = compare(5, 83, 12, 99, method="z-unpooled")
    p_a, p_b = 5 / 83, 12 / 99
    se = math.sqrt(p_a * (1 - p_a) / 83 + p_b * (1 - p_b) / 99)
    assert wald.statistic == pytest.approx((p_b - p_a) / se)
    assert not wald.pooled


def test_one_sided_halves_the_p_value_and_narrows_the_interval() -> None:
    two, one = compare(5, 83, 12, 99), compare(5, 83, 12, 99, sides="one-sided")
    assert one.p_value == pytest.approx(two.p_value / 2)
    assert one.difference.level == pytest.approx(0.90)
    assert one.difference.low > two.difference.low


@pytest.mark.parametrize(
    ("control", "treatment", "interval", "low", "high"),
    [
        # Newcombe (1998) Stat Med 17:873-890, Table II, example (a) 56/70 - 48/80
        # (difference 0.2000): method 10 (hybrid score) 0.0524 to 0.3339; method 1 (Wald)
        # 0.0575 to 0.3425; example (b) 9/10 - 3/10: method 10 0.1705 to 0.8090.
        ((48, 80), (56, 70), "newcombe", 0.0524, 0.3339),
        ((48, 80), (56, 70), "wald", 0.0575, 0.3425),
        ((3, 10), (9, 10), "newcombe", 0.1705, 0.8090),
        # Fagerland, Lydersen & Laake (2017) Statistical Analysis of Contingency Tables,
        # ch. 4, Perondi et al. (2004) 7/34 vs 1/34 (as checked in the book's R package
        # contingencytables, tests/testthat/test-ch4.R).
        ((1, 34), (7, 34), "newcombe", 0.0189, 0.3404),
        ((1, 34), (7, 34), "wald", 0.0292, 0.3238),
        ((1, 34), (7, 34), "agresti-caffo", 0.0116, 0.3217),
    ],
)
def test_difference_intervals_match_published(
    control: tuple[int, int], treatment: tuple[int, int], interval: Any, low: float, high: float
) -> None:
    difference = compare(*control, *treatment, interval=interval).difference
    assert difference.method == interval
    assert (difference.low, difference.high) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(
    ("control", "treatment", "method", "low", "high"),
    [
        # Fagerland, Lydersen & Laake (2017), ch. 4, Perondi 7/34 vs 1/34, ratio 7:
        # Koopman asymptotic score 1.2209 to 42.5757, MOVER-R Wilson 1.1537 to 41.9763.
        ((1, 34), (7, 34), "koopman", 1.2209, 42.5757),
        ((1, 34), (7, 34), "mover-r", 1.1537, 41.9763),
        # Koopman (1984) Biometrics 40:513-517, 36/40 vs 16/80, solved by Nam (1995)
        # Biometrics 51:1335: 2.940 to 7.152.
        ((16, 80), (36, 40), "koopman", 2.940, 7.152),
    ],
)
def test_ratio_intervals_match_published(
    control: tuple[int, int], treatment: tuple[int, int], method: Any, low: float, high: float
) -> None:
    lift = compare(*control, *treatment, lift_interval=method).relative_lift
    assert lift is not None
    assert lift.estimate + 1 == pytest.approx(
        (treatment[0] / treatment[1]) / (control[0] / control[1])
    )
    decimals = 5e-5 if method == "mover-r" or low < 2 else 5e-4
    assert (lift.low + 1, lift.high + 1) == pytest.approx((low, high), abs=decimals)


# --- regressions: where statsmodels' numerics failed ------------------------------------------

CRITICAL = Decimal(repr(float(stats.norm.isf(0.025)))) ** 2


def _koopman_statistic(
    control: tuple[int, int], treatment: tuple[int, int], ratio: float
) -> Decimal:
    """Koopman's score chi-square for H0: p_b / p_a = ratio in 60-digit decimals, as a
    reference independent of the library's floating point (Miettinen & Nurminen 1985
    without the N / (N - 1) factor: the restricted MLE is the smaller root of
    N r p^2 - (n_b r + x_b + n_a + x_a r) p + x_a + x_b = 0)."""
    with localcontext() as decimals:
        decimals.prec = 60
        (x_a, n_a), (x_b, n_b) = (tuple(map(Decimal, arm)) for arm in (control, treatment))
        r = Decimal(ratio)
        a, b, c = (n_a + n_b) * r, -(n_b * r + x_b + n_a + x_a * r), x_a + x_b
        p_a = (-b - (b * b - 4 * a * c).sqrt()) / (2 * a)
        p_b = r * p_a
        variance = p_b * (1 - p_b) / n_b + r * r * p_a * (1 - p_a) / n_a
        return +((x_b / n_b - r * x_a / n_a) ** 2 / variance)


def _check_koopman(control: tuple[int, int], treatment: tuple[int, int]) -> tuple[float, float]:
    """The interval is exactly the ratios the score test accepts: a grid over six decades
    around it, and each limit to 1e-6 of its distance from the estimate or to float
    precision (brute-force inversion)."""
    low, high = _koopman_ratio(control, treatment, 0.05)
    estimate = (treatment[0] / treatment[1]) / (control[0] / control[1])
    assert 0 <= low <= estimate <= high < math.inf
    lift = compare(*control, *treatment).relative_lift  # the lift is the ratio - 1
    assert lift is not None and lift.method == "koopman"
    assert (lift.low, lift.estimate, lift.high) == (low - 1, estimate - 1, high - 1)
    assert low == 0 if treatment[0] == 0 else low > 0
    for ratio in np.geomspace(max(low, high * 1e-4) / 100, high * 100, 241):
        inside = low * (1 + 1e-9) < ratio < high * (1 - 1e-9)
        outside = ratio < low * (1 - 1e-9) or ratio > high * (1 + 1e-9)
        accepted = _koopman_statistic(control, treatment, float(ratio)) <= CRITICAL
        assert accepted if inside else (not accepted if outside else True), ratio
    for limit in (low, high) if low > 0 else (high,):
        # 1e-6 of the half-width, or a few units in the last place when that is narrower
        margin = max(1e-6 * abs(limit - estimate), 1e-15 * limit)
        below = _koopman_statistic(control, treatment, limit - margin) <= CRITICAL
        above = _koopman_statistic(control, treatment, limit + margin) <= CRITICAL
        assert below != above  # the statistic crosses the critical value at the limit
    return low, high


@pytest.mark.parametrize(
    ("control", "treatment", "low", "high"),
    [
        # test_api.py's fuzzer case: Nam's cubic had complex roots 1.105 +- 0.073i.
        ((13_095_896, 14_665_948), (0, 1), 0.0, 0.8885766),
        # The cubic's roots were real but wrong: [0.699, 0.987] around 0.555.
        ((13_199_353, 14_665_948), (1, 2), 0.1050347, 1.0060765),
        ((999_999, 1_000_000), (0, 1), 0.0, 0.7934515),
        ((10**12 - 1, 10**12), (1, 10**12), None, None),
        ((5, 10**12), (3, 7), None, None),
        ((137_393_319_455, 137_395_940_898), (137_393_319_455, 137_395_940_898), None, None),
        # Near 100% the restricted MLE's quadratic has a near-double root; 1 - ~p cancels.
        ((999_999_999, 10**9), (999_999_999_999, 10**12), None, None),
        ((10**12 - 2, 10**12 - 1), (10**12 - 3, 10**12 - 1), None, None),
        ((10**12 - 2, 10**12), (0, 10**12), None, None),
        ((1, 34), (7, 34), 1.2208529, 42.5757176),  # Fagerland et al. (2017), above
    ],
)
def test_koopman_interval_against_a_huge_arm_inverts_the_score_test(
    control: tuple[int, int], treatment: tuple[int, int], low: float | None, high: float | None
) -> None:
    """Regression: statsmodels takes Koopman's limits from the roots of Nam's cubic, whose
    coefficients grow like n^3; next to a control of millions its roots were complex
    (ComplexWarning, [0.105, 0.105] around a lift of -1) or wrong."""
    limits = _check_koopman(control, treatment)
    if low is not None and high is not None:
        assert limits == pytest.approx((low, high), abs=5e-7)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 10**12).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))),
    st.integers(1, 10**12).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))),
)
def test_koopman_interval_inverts_the_score_test_at_any_size(
    control: tuple[int, int], treatment: tuple[int, int]
) -> None:
    _check_koopman(control, treatment)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(2, 200).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))),
    st.integers(1, 200).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))),
)
def test_koopman_interval_agrees_with_statsmodels_where_its_cubic_holds(
    control: tuple[int, int], treatment: tuple[int, int]
) -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    lift = compare(*control, *treatment).relative_lift
    assert lift is not None
    expected = confint_proportions_2indep(
        *treatment, *control, compare="ratio", method="score", correction=False
    )
    assert (lift.low + 1, lift.high + 1) == pytest.approx(np.real(expected), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("sides", ["two-sided", "one-sided"])
@pytest.mark.parametrize("ratio", [0.25, 1.0, 3.0])
@pytest.mark.parametrize(
    ("baseline", "target", "power"),
    [(0.05, 0.06, 0.8), (0.5, 0.75, 0.9), (0.3, 0.1, 0.8), (0.01, 0.2, 0.95), (0.2, 0.9, 0.8)],
)
def test_cohen_h_sample_size_agrees_with_statsmodels_where_it_converges(
    baseline: float, target: float, power: float, ratio: float, sides: Any
) -> None:
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    size = sample_size(baseline, target, power=power, ratio=ratio, sides=sides, method="cohen-h")
    expected = NormalIndPower().solve_power(
        effect_size=abs(proportion_effectsize(baseline, target)),
        nobs1=None,
        alpha=0.05,
        power=power,
        ratio=ratio,
        alternative="two-sided" if sides == "two-sided" else "larger",
    )
    assert expected > 2  # statsmodels' search converged, to its own tolerance
    assert size.n_control_exact == pytest.approx(expected, rel=1e-5)
    assert size.n_control == math.ceil(size.n_control_exact)


@pytest.mark.parametrize(
    ("baseline", "target", "power", "ratio", "sides"),
    [
        (0.01, 0.99, 0.8, 1.0, "one-sided"),  # test_api.py's fuzzer case
        (0.01, 0.99, 0.8, 2.0, "one-sided"),
        (0.01, 0.99, 0.8, 2.0, "two-sided"),
        (0.5, 0.51, 0.051, 0.5, "one-sided"),  # under one user: power barely above alpha
        (0.5, 0.51, 0.051, 2.0, "one-sided"),
    ],
)
def test_cohen_h_sample_size_of_a_large_effect(
    baseline: float, target: float, power: float, ratio: float, sides: Any
) -> None:
    """Regression: statsmodels' `solve_power` searches from 2 users up and returns NaN
    (ConvergenceWarning) for all of these; math.ceil(NaN) failed. One-sided, the closed
    form (1 + 1/r) ((z(1 - alpha) + z(power)) / h)^2 (Cohen 1988, ch. 6) is exact;
    two-sided, statsmodels' power at the solution is the power asked for."""
    from statsmodels.stats.power import NormalIndPower

    h = 2 * math.asin(math.sqrt(target)) - 2 * math.asin(math.sqrt(baseline))
    size = sample_size(baseline, target, power=power, ratio=ratio, sides=sides, method="cohen-h")
    assert 0 < size.n_control_exact < 2
    if sides == "one-sided":
        closed = (1 + 1 / ratio) * ((stats.norm.isf(0.05) + stats.norm.ppf(power)) / h) ** 2
        assert size.n_control_exact == pytest.approx(closed, rel=1e-9)
    achieved = NormalIndPower().power(
        h,
        size.n_control_exact,
        0.05,
        ratio=ratio,
        alternative="two-sided" if sides == "two-sided" else "larger",
    )
    assert achieved == pytest.approx(power, abs=1e-9)
    assert size.n_control == math.ceil(size.n_control_exact) >= 1
    assert size.n_treatment == math.ceil(size.n_control_exact * ratio) >= 1


def test_srm_matches_fabijan_et_al() -> None:
    # Fabijan et al. (KDD 2019) "Diagnosing Sample Ratio Mismatch in Online Controlled
    # Experiments": 821,588 vs 815,482 users on a 50/50 split -> chi2 = 22.77, p ~ 1.8e-6.
    check = sample_ratio_mismatch([821_588, 815_482])
    assert check.statistic == pytest.approx(22.77, abs=5e-3)
    assert check.p_value == pytest.approx(1.8e-6, rel=0.02)
    assert check.df == 1
    assert check.mismatch
    assert check.method == "chi-square goodness of fit"


def test_srm_takes_planned_weights() -> None:
    exact = sample_ratio_mismatch([9_000, 1_000], [90, 10])
    assert exact.shares == pytest.approx((0.9, 0.1))
    assert (exact.statistic, exact.p_value, exact.mismatch) == (0.0, 1.0, False)
    assert sample_ratio_mismatch([5_000, 5_000], [0.9, 0.1]).mismatch
    three = sample_ratio_mismatch([100, 100, 130])
    assert three.df == 2
    assert three.statistic == pytest.approx(stats.chisquare([100, 100, 130]).statistic)


# --- Bayesian probability to beat control ---------------------------------------------------


@pytest.mark.parametrize(
    ("control", "treatment", "expected"),
    [
        # Uniform priors. b 1/1 -> Beta(2, 1), a 0/1 -> Beta(1, 2):
        # P = integral of 2x (2x - x^2) dx over [0, 1] = 4/3 - 1/2 = 5/6.
        ((0, 1), (1, 1), 5 / 6),
        # All converted: Beta(n_b + 1, 1) vs Beta(n_a + 1, 1) -> (n_b + 1) / (n_a + n_b + 2).
        ((3, 3), (5, 5), 6 / 10),
        # None converted: Beta(1, n_b + 1) vs Beta(1, n_a + 1) -> (n_a + 1) / (n_a + n_b + 2).
        ((0, 3), (0, 5), 4 / 10),
        ((40, 1000), (40, 1000), 1 / 2),
    ],
)
def test_bayes_matches_closed_form_identities(
    control: tuple[int, int], treatment: tuple[int, int], expected: float
) -> None:
    result = bayes_compare(*control, *treatment)
    assert result.prob_b_beats_a == pytest.approx(expected, abs=1e-12)
    assert "Evan Miller" in result.method


@pytest.mark.parametrize(
    ("control", "treatment"),
    [((5, 83), (12, 99)), ((100, 10_000), (120, 10_000)), ((50_000, 10**6), (50_600, 10**6))],
)
def test_evan_millers_formula_agrees_with_quadrature(
    control: tuple[int, int], treatment: tuple[int, int]
) -> None:
    # Evan Miller, "Formulas for Bayesian A/B Testing" (2015), against direct integration.
    post_a = (1.0 + control[0], 1.0 + control[1] - control[0])
    post_b = (1.0 + treatment[0], 1.0 + treatment[1] - treatment[0])
    assert _evan_miller(post_b, post_a) == pytest.approx(_quadrature(post_b, post_a), abs=1e-7)


def test_non_integer_priors_integrate_numerically() -> None:
    result = bayes_compare(5, 83, 12, 99, prior_alpha=0.5, prior_beta=0.5)  # Jeffreys
    assert result.method == "beta-binomial, numerical integration"
    draws = np.random.default_rng(7)
    b = draws.beta(*result.posterior_b, size=2_000_000)
    a = draws.beta(*result.posterior_a, size=2_000_000)
    assert result.prob_b_beats_a == pytest.approx(float(np.mean(b > a)), abs=2e-3)
    assert result.mean_b == pytest.approx(12.5 / 100)


# --- several variants ------------------------------------------------------------------------


def test_holm_adjusts_the_sorted_p_values() -> None:
    # Holm (1979) Scand J Statist 6:65: the k-th smallest of m p-values is multiplied by
    # m - k + 1, then made non-decreasing.
    result = compare_variants((100, 1000), [(120, 1000), (131, 1000), (101, 1000), (150, 1000)])
    assert [v.arm for v in result.variants] == ["b", "c", "d", "e"]
    raw = [v.comparison.p_value for v in result.variants]
    order = np.argsort(raw)
    expected = np.empty(len(raw))
    running = 0.0
    for k, index in enumerate(order):
        running = max(running, min(1.0, (len(raw) - k) * raw[index]))
        expected[index] = running
    assert [v.p_adjusted for v in result.variants] == pytest.approx(expected.tolist())
    assert [v.significant for v in result.variants] == [bool(p < 0.05) for p in expected]
    # c's raw p is below 0.05 but not after correcting for four comparisons.
    c = result.variants[1]
    assert c.comparison.significant and not c.significant
    json.dumps(result.to_dict())


# --- validation and degenerate inputs ----------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field", "message"),
    [
        (lambda: compare(5, 83, 130, 99), "conversions_b", "must be <= exposures_b (99), got 130"),
        (lambda: compare(-1, 83, 12, 99), "conversions_a", "must be >= 0, got -1"),
        (lambda: compare(5.0, 83, 12, 99), "conversions_a", "must be an integer"),
        (lambda: compare(0, 0, 12, 99), "exposures_a", "must be >= 1"),
        (lambda: compare(5, 83, 12, 99, alpha=0), "alpha", "must be in (0, 0.5]"),
        (lambda: compare(5, 83, 12, 99, alpha=0.6), "alpha", "must be in (0, 0.5]"),
        (lambda: compare(5, 83, 12, 99, method="t"), "method", "must be one of"),
        (lambda: compare_variants((5, 83), [(1, 9), (11, 10)]), "conversions_c", "<= exposures_c"),
        (lambda: compare_variants((5, 83), []), "variants", "at least one"),
        (lambda: sample_size(0.0, 0.5), "baseline", "must be in (0, 1)"),
        (lambda: sample_size(0.5, 1.0), "target", "must be in (0, 1)"),
        (lambda: sample_size(0.5, 0.5), "target", "no difference to detect"),
        (lambda: sample_size(0.5, 0.6, power=1.0), "power", "must be in (0, 1)"),
        (lambda: sample_size(0.5, 0.6, power=0.04), "power", "must exceed alpha"),
        (lambda: sample_size(0.5, 0.6, ratio=0), "ratio", "must be > 0"),
        (lambda: sample_size(0.5, 0.6, ratio=math.inf), "ratio", "finite"),
        (lambda: achieved_power(0.5, 0.6, 10, 0), "n_treatment", "must be >= 1"),
        (lambda: minimum_detectable_effect(0.5, 2, 2, power=0.99), "n_control", "too small"),
        (lambda: target_rate(0.5, 1.5), "lift", "treatment rate of 1.25"),
        (lambda: target_rate(0.5, 0.0), "lift", "no difference"),
        (lambda: sample_ratio_mismatch([10]), "observed", "at least two groups"),
        (lambda: sample_ratio_mismatch([10, -1]), "observed[1]", "must be >= 0"),
        (lambda: sample_ratio_mismatch([0, 0]), "observed", "no users"),
        (lambda: sample_ratio_mismatch([5, 5], [1, 1, 1]), "shares", "3 values for 2 groups"),
        (lambda: sample_ratio_mismatch([5, 5], [1, 0]), "shares[1]", "must be > 0"),
        (lambda: bayes_compare(1, 10, 2, 10, prior_alpha=0), "prior_alpha", "must be > 0"),
        (lambda: assign_groups(["a"], "e", 0.0), "holdout_share", "must be in (0, 1)"),
        (lambda: assign_groups(["a"], "e", 1.0), "holdout_share", "must be in (0, 1)"),
        (lambda: assign_groups([], "e", 0.5), "user_ids", "is empty"),
        (lambda: assign_groups(["a", "b", "a"], "e", 0.5), "user_ids", "'a'"),
        (lambda: assign_groups(["a"], " ", 0.5), "experiment_id", "must not be empty"),
        (lambda: _plan(USERS[:10], cost_per_contact=-1), "cost_per_contact", ">= 0"),
    ],
)
def test_invalid_inputs_name_the_field(
    call: Callable[[], object], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        call()
    assert error.value.parameter == field
    assert str(error.value).startswith(f"{field}: ")
    assert message in str(error.value)


@pytest.mark.parametrize("method", TEST_METHODS)
@pytest.mark.parametrize(("rate_numerator", "lift_defined"), [(0, False), (1, True)])
def test_both_arms_at_zero_or_hundred_percent(
    method: Any, rate_numerator: int, lift_defined: bool
) -> None:
    result = compare(100 * rate_numerator, 100, 250 * rate_numerator, 250, method=method)
    assert (result.statistic, result.p_value, result.significant) == (0.0, 1.0, False)
    assert result.difference.estimate == 0.0
    assert result.difference.low < 0 < result.difference.high
    if lift_defined:
        assert result.relative_lift is not None
        assert result.relative_lift.method.startswith("mover-r")
        assert result.relative_lift.low < 0 < result.relative_lift.high
    else:
        assert result.relative_lift is None  # the ratio over a 0% control is unbounded


def test_unpooled_test_refuses_zero_against_hundred_percent() -> None:
    assert compare(0, 10, 10, 10).p_value < 1e-4
    with pytest.raises(ConfigError, match=r"^method: z-unpooled is undefined"):
        compare(0, 10, 10, 10, method="z-unpooled")


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 60).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    st.integers(1, 60).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    st.sampled_from(TEST_METHODS),
    st.sampled_from(INTERVAL_METHODS),
    st.sampled_from(LIFT_METHODS),
)
def test_every_result_is_finite_and_ordered(
    control: tuple[int, int], treatment: tuple[int, int], method: Any, interval: Any, lift: Any
) -> None:
    rates = {control[0] / control[1], treatment[0] / treatment[1]}
    if method == "z-unpooled" and rates == {0.0, 1.0}:
        return  # refused with a ConfigError, tested above
    result = compare(*control, *treatment, method=method, interval=interval, lift_interval=lift)
    assert math.isfinite(result.statistic) and 0 <= result.p_value <= 1
    intervals = [result.difference] + ([result.relative_lift] if result.relative_lift else [])
    for ci in intervals:
        assert all(math.isfinite(x) for x in (ci.estimate, ci.low, ci.high))
        assert ci.low - 1e-9 <= ci.estimate <= ci.high + 1e-9
    assert result.difference.low >= -1 and result.difference.high <= 1
    probability = bayes_compare(*control, *treatment).prob_b_beats_a
    assert 0 <= probability <= 1
    json.dumps(result.to_dict(), allow_nan=False)


# --- campaign planner --------------------------------------------------------------------


def _plan(users: list[str], **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "holdout_share": 0.2,
        "baseline_rate": 0.05,
        "lift": 0.2,
        "cost_per_contact": 0.5,
        "value_per_conversion": 20.0,
    }
    return plan_campaign(users, "spring-promo", **(options | overrides))


def test_split_is_pinned_across_versions() -> None:
    # Changing the hash would silently reshuffle every running experiment.
    draws = holdout_draws("exp-1", ["u1", "u2", "u3"])
    assert draws.tolist() == [0.733978583731434, 0.9483584982091406, 0.6444042865664396]


def test_split_is_stable_across_runs_and_processes() -> None:
    first = assign_groups(USERS[:5000], "exp-1", 0.3)
    assert first.equals(assign_groups(USERS[:5000], "exp-1", 0.3))
    code = (
        "import json; from audience.experiments.campaign import assign_groups;"
        "users = [f'user-{i:06d}' for i in range(5000)];"
        "print(json.dumps(assign_groups(users, 'exp-1', 0.3)['group'].to_list()))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=os.environ | {"PYTHONHASHSEED": "12345"},
    )
    assert json.loads(other.stdout) == first["group"].to_list()


def test_a_users_group_does_not_depend_on_the_rest_of_the_audience() -> None:
    whole = assign_groups(USERS[:2000], "exp-1", 0.5)
    reversed_part = assign_groups(USERS[999::-1], "exp-1", 0.5)
    by_user = dict(zip(reversed_part["user_id"], reversed_part["group"], strict=True))
    assert [by_user[u] for u in USERS[:1000]] == whole["group"].to_list()[:1000]
    assert reversed_part["rank"].to_list() == list(range(1, 1001))


def test_control_share_is_within_binomial_bounds() -> None:
    groups = assign_groups(USERS, "exp-1", 0.1)
    control = int((groups["group"] == CONTROL).sum())
    low, high = stats.binom(len(USERS), 0.1).interval(1 - 1e-6)
    assert low <= control <= high
    assert stats.kstest(holdout_draws("exp-1", USERS), "uniform").pvalue > 1e-3


def test_control_share_does_not_depend_on_rank() -> None:
    groups = assign_groups(USERS, "exp-1", 0.1).with_columns(
        decile=(pl.col("rank") - 1) * 10 // len(USERS)
    )
    table = groups.pivot(on="group", index="decile", values="rank", aggregate_function="len")
    counts = table.sort("decile").select(CONTROL, TREATMENT).to_numpy()
    assert stats.chi2_contingency(counts).pvalue > 1e-3


def test_splits_of_two_experiments_are_independent() -> None:
    one = assign_groups(USERS, "exp-1", 0.5)["group"] == CONTROL
    two = assign_groups(USERS, "exp-2", 0.5)["group"] == CONTROL
    table = pl.DataFrame({"one": one, "two": two}).group_by("one", "two").len().sort("one", "two")
    counts = table["len"].to_numpy().reshape(2, 2)
    assert stats.chi2_contingency(counts).pvalue > 1e-3
    assert 0.24 < float((one & two).mean()) < 0.26


def test_plan_economics() -> None:
    plan, groups = _plan(USERS[:1000])
    n_t = plan.treatment_size
    assert n_t + plan.control_size == plan.audience_size == groups.height == 1000
    assert plan.treatment_rate == pytest.approx(0.06)
    assert plan.expected_conversions == pytest.approx(n_t * 0.06)
    assert plan.incremental_conversions == pytest.approx(n_t * 0.01)
    assert plan.cost == pytest.approx(n_t * 0.5)
    assert plan.incremental_value == pytest.approx(n_t * 0.01 * 20)
    assert plan.roi == pytest.approx((0.2 - 0.5) / 0.5)
    absolute, _ = _plan(USERS[:1000], lift=0.01, relative_lift=False)
    assert absolute.treatment_rate == pytest.approx(0.06)
    free, _ = _plan(USERS[:1000], cost_per_contact=0.0)
    assert free.roi is None


def test_plan_sample_size_uses_the_planned_split() -> None:
    plan, _ = _plan(USERS[:1000])
    assert plan.sample_size == sample_size(0.05, 0.06, ratio=4.0)
    assert plan.warning is not None and "audience too small" in plan.warning
    assert plan.power == pytest.approx(
        achieved_power(0.05, 0.06, plan.control_size, plan.treatment_size).power
    )
    enough, _ = _plan(USERS[:2000], baseline_rate=0.1, lift=1.0, holdout_share=0.5)
    assert enough.warning is None
    assert enough.power is not None and enough.power > 0.8


def test_groups_csv_round_trip(tmp_path: Path) -> None:
    users = ["007", "b", "c", "042"]
    _, groups = _plan(users)
    write_groups(groups, tmp_path / "groups.csv")
    back = pl.read_csv(tmp_path / "groups.csv", infer_schema=False)
    assert back.columns == ["user_id", "group", "rank"]
    assert back["user_id"].to_list() == users
    assert back["rank"].to_list() == ["1", "2", "3", "4"]
    assert set(back["group"]) <= {CONTROL, TREATMENT}


# --- `audience abtest` ---------------------------------------------------------------------


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUDIENCE, "abtest", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_json(*args: str | Path) -> dict[str, Any]:
    done = run(*args, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_cli_size_power_and_detectable_effect() -> None:
    size = run_json("size", "--baseline", "0.5", "--target", "0.75", "--power", "0.9")
    assert size["n_control_exact"] == pytest.approx(76.7, abs=0.05)
    assert size["method"] == "pooled"
    by_lift = run_json("size", "--baseline", "0.5", "--lift", "0.5", "--power", "0.9")
    assert by_lift["n_control"] == 77
    power = run_json("size", "--baseline", "0.5", "--target", "0.75", "--n", "50")
    assert power["power"] == pytest.approx(0.740, abs=5e-4)
    mde = run_json("size", "--baseline", "0.5", "--n", "50", "--power", "0.9")
    assert mde["target"] == pytest.approx(0.8026, abs=5e-5)
    text = run("size", "--baseline", "0.5", "--target", "0.75", "--power", "0.9").stdout
    assert text.startswith("77 control + 77 treatment users (154 in all")


def test_cli_test_one_and_several_variants() -> None:
    one = run_json("test", "--control", "5/83", "--variant", "12/99")
    assert one["statistic"] == pytest.approx(1.4078, abs=5e-5)
    assert one["relative_lift"]["method"] == "koopman"
    many = run_json(
        "test", "--control", "100/1000", "--variant", "120/1000", "--variant", "130/1000"
    )
    assert [v["arm"] for v in many["variants"]] == ["b", "c"]
    assert many["method"] == "holm over z-pooled"
    text = run("test", "--control", "5/83", "--variant", "12/99").stdout
    assert "z = 1.4078, p = 0.1592" in text


def test_cli_srm_and_bayes() -> None:
    srm = run_json("srm", "821588", "815482")
    assert srm["statistic"] == pytest.approx(22.77, abs=5e-3)
    assert srm["mismatch"] is True
    assert "SAMPLE RATIO MISMATCH" in run("srm", "821588", "815482").stdout
    assert run_json("srm", "9000", "1000", "--shares", "90,10")["mismatch"] is False
    bayes = run_json("bayes", "--control", "0/1", "--variant", "1/1")
    assert bayes["prob_b_beats_a"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_plan_writes_groups(tmp_path: Path, suffix: str) -> None:
    audience = pl.DataFrame({"user_id": USERS[:3000], "score": np.arange(3000.0)})
    path = tmp_path / f"audience{suffix}"
    if suffix == ".csv":
        audience.write_csv(path)
    else:
        audience.write_parquet(path)
    plan = run_json(
        "plan", "--users", path, "--experiment-id", "exp-9", "--holdout-share", "0.2",
        "--baseline", "0.05", "--lift", "0.2", "--cost-per-contact", "0.5",
        "--value-per-conversion", "20", "--out", tmp_path / "groups.csv",
    )  # fmt: skip
    assert plan["audience_size"] == 3000
    assert plan["groups_csv"] == str(tmp_path / "groups.csv")
    assert plan["warning"].startswith("audience too small")
    groups = pl.read_csv(tmp_path / "groups.csv")
    assert groups["group"].to_list() == assign_groups(USERS[:3000], "exp-9", 0.2)["group"].to_list()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["test", "--control", "5/83", "--variant", "130/99"], "conversions_b"),
        (["size", "--baseline", "1.5", "--target", "0.2"], "baseline"),
        (["size", "--baseline", "0.5", "--target", "0.5"], "target"),
        (["srm", "10", "10", "--shares", "1,1,1"], "shares"),
        (["bayes", "--control", "1/10", "--variant", "1/10", "--prior-beta", "-1"], "prior_beta"),
    ],
)
def test_cli_invalid_input_exits_2_naming_the_field(args: list[str], field: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"audience abtest: error: {field}: ")
    assert done.stderr.count("\n") == 1
    error = json.loads(run(*args, "--json").stdout)
    assert error["type"] == "ConfigError"


def test_cli_plan_rejects_a_file_without_user_ids(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("customer,score\na,1\n")
    done = run(
        "plan", "--users", tmp_path / "users.csv", "--experiment-id", "e", "--baseline", "0.1",
        "--lift", "0.1", "--cost-per-contact", "1", "--value-per-conversion", "5",
    )  # fmt: skip
    assert done.returncode == 2
    assert "has no 'user_id' column; columns found: customer, score" in done.stderr
