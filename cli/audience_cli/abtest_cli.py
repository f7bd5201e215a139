"""`audience abtest size|test|srm|bayes|plan`: experiment statistics and the campaign planner.

Each handler calls `audience.experiments.abtest` or `.campaign` and returns (result,
human text) as `commands.py` does; `main` prints the text, or the result as JSON with `--json`.
Arms are written CONVERSIONS/EXPOSURES (``120/2400``); the control is arm a and the
variants b, c, ... in the order given, which is how error messages name them.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from audience.data.schema import USER
from audience.errors import ConfigError, InputError
from audience.experiments import abtest, campaign
from audience_cli.parsing import add_command, artifact_flag

Result = tuple[dict[str, Any], str]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `abtest` and its subcommands to the `audience` parser."""
    parent = subparsers.add_parser(
        "abtest",
        help="A/B test statistics and campaign planning",
        description="A/B test statistics and campaign planning. Arms are CONVERSIONS/EXPOSURES; "
        "the control is arm a, the variants b, c, ... in the order given.",
    )
    sub = parent.add_subparsers(dest="abtest_command", required=True, metavar="SUBCOMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], Result], help_: str
    ) -> argparse.ArgumentParser:
        return add_command(sub, name, run, help_)

    size = command(
        "size",
        run_size,
        "users per arm to detect a lift; with --n, the power (given a lift) or the "
        "minimum detectable effect (without one)",
    )
    size.add_argument("--baseline", type=float, required=True, help="control conversion rate")
    _target_arguments(size)
    size.add_argument("--n", type=int, help="control users available (treatment: n x --ratio)")
    size.add_argument("--power", type=float, default=0.8, help="wanted power (default 0.8)")
    size.add_argument("--ratio", type=float, default=1.0, help="treatment users per control user")
    size.add_argument("--method", choices=abtest.POWER_METHODS, default="pooled")
    _alpha_arguments(size)

    test = command("test", run_test, "is a variant's conversion rate different from control's?")
    _arm_arguments(test, several=True)
    test.add_argument("--method", choices=abtest.TEST_METHODS, default="z-pooled")
    test.add_argument("--interval", choices=abtest.INTERVAL_METHODS, default="newcombe")
    test.add_argument("--lift-interval", choices=abtest.LIFT_METHODS, default="koopman")
    _alpha_arguments(test)

    srm = command("srm", run_srm, "sample-ratio-mismatch check of the group sizes")
    srm.add_argument("observed", type=int, nargs="+", help="users per group, e.g. 50123 49877")
    srm.add_argument("--shares", type=_shares, help="planned split, e.g. 90,10 (default: equal)")
    srm.add_argument("--alpha", type=float, default=0.001, help="threshold (default 0.001)")

    bayes = command("bayes", run_bayes, "posterior probability that the variant beats control")
    _arm_arguments(bayes, several=False)
    bayes.add_argument("--prior-alpha", type=float, default=1.0, help="Beta prior (default 1)")
    bayes.add_argument("--prior-beta", type=float, default=1.0, help="Beta prior (default 1)")

    plan = command("plan", run_plan, "split an audience into treatment and holdout, and price it")
    plan.add_argument("--users", type=Path, help="CSV or Parquet with a user_id column, ranked")
    plan.add_argument("--product", help="plan for this product's audience (with --artifact)")
    artifact_flag(plan, "artifact root for --product")
    plan.add_argument(
        "--experiment-id", required=True, help="names the experiment; seeds the split"
    )
    plan.add_argument(
        "--holdout-share", type=float, default=0.1, help="share held out as control (default 0.1)"
    )
    plan.add_argument("--baseline", type=float, required=True, help="conversion rate untreated")
    plan.add_argument(
        "--lift", type=float, required=True, help="expected lift, relative (0.1 = +10%%)"
    )
    plan.add_argument(
        "--absolute", action="store_true", help="--lift is absolute (0.01 = +1 rate point)"
    )
    plan.add_argument("--cost-per-contact", type=float, required=True, help="cost of one contact")
    plan.add_argument("--value-per-conversion", type=float, required=True, help="value of one sale")
    plan.add_argument("--power", type=float, default=0.8, help="wanted power (default 0.8)")
    plan.add_argument("--out", type=Path, help="write the groups as CSV (user_id, group, rank)")
    _alpha_arguments(plan)


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target", type=float, help="treatment conversion rate to detect")
    target.add_argument("--lift", type=float, help="lift to detect, relative (0.1 = +10%%)")
    parser.add_argument(
        "--absolute", action="store_true", help="--lift is absolute (0.01 = +1 rate point)"
    )


def _alpha_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alpha", type=float, default=0.05, help="significance (default 0.05)")
    parser.add_argument(
        "--one-sided", action="store_true", help="one-sided test (treatment better)"
    )


def _arm_arguments(parser: argparse.ArgumentParser, several: bool) -> None:
    parser.add_argument("--control", type=_arm, required=True, help="CONVERSIONS/EXPOSURES")
    parser.add_argument(
        "--variant",
        type=_arm,
        required=True,
        action="append" if several else "store",
        help="CONVERSIONS/EXPOSURES" + (" (repeat for more; Holm-corrected)" if several else ""),
    )


def _arm(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected CONVERSIONS/EXPOSURES such as 120/2400, got {text!r}"
        )
    return int(match[1]), int(match[2])


def _shares(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 90,10, got {text!r}") from None


def _sides(args: argparse.Namespace) -> abtest.Sides:
    return "one-sided" if args.one_sided else "two-sided"


# --- handlers ---------------------------------------------------------------------------


def run_size(args: argparse.Namespace) -> Result:
    target = None
    if args.target is not None:
        target = args.target
    elif args.lift is not None:
        target = abtest.target_rate(args.baseline, args.lift, relative=not args.absolute)
    common = {"alpha": args.alpha, "sides": _sides(args), "method": args.method}
    if args.n is None:
        if target is None:
            raise ConfigError(
                "target", "give --target or --lift (or --n for the detectable effect)"
            )
        size = abtest.sample_size(
            args.baseline, target, power=args.power, ratio=args.ratio, **common
        )
        return size.to_dict(), _size_text(size)
    if not (math.isfinite(args.ratio) and args.ratio > 0):
        raise ConfigError("ratio", f"must be a finite number > 0, got {args.ratio:g}")
    n_treatment = round(args.n * args.ratio)
    if target is None:
        mde = abtest.minimum_detectable_effect(
            args.baseline, args.n, n_treatment, power=args.power, **common
        )
        return mde.to_dict(), _mde_text(mde)
    power = abtest.achieved_power(args.baseline, target, args.n, n_treatment, **common)
    return power.to_dict(), _power_text(power)


def run_test(args: argparse.Namespace) -> Result:
    options = {
        "alpha": args.alpha,
        "method": args.method,
        "interval": args.interval,
        "lift_interval": args.lift_interval,
        "sides": _sides(args),
    }
    if len(args.variant) == 1:
        result = abtest.compare(*args.control, *args.variant[0], **options)
        return result.to_dict(), _comparison_text(result, "b", result.significant)
    many = abtest.compare_variants(args.control, args.variant, **options)
    texts = [
        _comparison_text(
            v.comparison, v.arm, v.significant, f"Holm-adjusted p = {v.p_adjusted:.4g}"
        )
        for v in many.variants
    ]
    return many.to_dict(), "\n\n".join(texts)


def run_srm(args: argparse.Namespace) -> Result:
    check = abtest.sample_ratio_mismatch(args.observed, args.shares, alpha=args.alpha)
    verdict = (
        "SAMPLE RATIO MISMATCH: the split is broken; do not trust this experiment's results"
        if check.mismatch
        else "no sample ratio mismatch detected"
    )
    rows = "\n".join(
        f"  group {i + 1}: {o:>12,} observed  {e:>14,.1f} expected  ({s:.2%} planned)"
        for i, (o, e, s) in enumerate(
            zip(check.observed, check.expected, check.shares, strict=True)
        )
    )
    text = (
        f"{rows}\nchi-square = {check.statistic:.4g} (df {check.df}), "
        f"p = {check.p_value:.3g} (threshold {check.alpha:g})\n{verdict}"
    )
    return check.to_dict(), text


def run_bayes(args: argparse.Namespace) -> Result:
    result = abtest.bayes_compare(
        *args.control, *args.variant, prior_alpha=args.prior_alpha, prior_beta=args.prior_beta
    )
    text = (
        f"P(variant beats control) = {result.prob_b_beats_a:.2%}  ({result.method})\n"
        f"posterior mean rate: control {result.mean_a:.3%}, variant {result.mean_b:.3%} "
        f"(Beta({result.prior[0]:g}, {result.prior[1]:g}) prior)"
    )
    return result.to_dict(), text


def run_plan(args: argparse.Namespace) -> Result:
    plan, groups = campaign.plan_campaign(
        _audience(args),
        args.experiment_id,
        holdout_share=args.holdout_share,
        baseline_rate=args.baseline,
        lift=args.lift,
        relative_lift=not args.absolute,
        cost_per_contact=args.cost_per_contact,
        value_per_conversion=args.value_per_conversion,
        alpha=args.alpha,
        power=args.power,
        sides=_sides(args),
    )
    if args.out is not None:
        campaign.write_groups(groups, args.out)
    result = plan.to_dict() | {"groups_csv": None if args.out is None else str(args.out)}
    return result, _plan_text(plan, args.out)


def _audience(args: argparse.Namespace) -> list[str]:
    """The ranked user ids to plan for: --users FILE, or --product's audience in the model."""
    if (args.users is None) == (args.product is None):
        raise ConfigError("--users/--product", "give exactly one source of the audience")
    if args.users is not None:
        return _read_user_ids(args.users)
    from audience.serving.index import Index

    index = Index.open(args.artifact)
    return [m.user_id for m in index.recommend(args.product, index.n).audience]


def _read_user_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.suffix not in (".csv", ".parquet"):
        raise InputError(path, "expected a .csv or .parquet file")
    try:
        frame = (
            pl.read_csv(path, infer_schema=False)
            if path.suffix == ".csv"
            else pl.read_parquet(path)
        )
    except pl.exceptions.PolarsError as exc:
        raise InputError(path, f"cannot be read: {str(exc).splitlines()[0]}") from exc
    if USER not in frame.columns:
        raise InputError(path, f"has no '{USER}' column; columns found: {', '.join(frame.columns)}")
    ids = frame[USER].cast(pl.String)
    if ids.null_count():
        raise InputError(path, f"has {ids.null_count()} empty '{USER}' value(s)")
    return ids.to_list()


# --- human summaries --------------------------------------------------------------------


def _size_text(size: abtest.SampleSize) -> str:
    return (
        f"{size.n_control:,} control + {size.n_treatment:,} treatment users "
        f"({size.total:,} in all; exact n per control arm {size.n_control_exact:.1f})\n"
        f"to detect {size.baseline:.3%} -> {size.target:.3%} with power {size.power:g} at "
        f"alpha {size.alpha:g} ({size.sides}, {size.method})"
    )


def _power_text(power: abtest.Power) -> str:
    return (
        f"power {power.power:.3f} to detect {power.baseline:.3%} -> {power.target:.3%} with "
        f"{power.n_control:,} control and {power.n_treatment:,} treatment users "
        f"(alpha {power.alpha:g}, {power.sides}, {power.method})"
    )


def _mde_text(mde: abtest.DetectableEffect) -> str:
    return (
        f"minimum detectable effect: {mde.baseline:.3%} -> {mde.target:.3%} "
        f"({mde.absolute * 100:+.3f} points, {mde.relative:+.2%} relative)\n"
        f"with {mde.n_control:,} control and {mde.n_treatment:,} treatment users, power "
        f"{mde.power:g} at alpha {mde.alpha:g} ({mde.sides}, {mde.method})"
    )


def _comparison_text(
    result: abtest.Comparison, arm: str, significant: bool, adjusted: str = ""
) -> str:
    diff, lift = result.difference, result.relative_lift
    verdict = "significant" if significant else "not significant"
    lines = [
        f"control a: {result.rate_a:.3%}   variant {arm}: {result.rate_b:.3%}",
        f"difference {arm} - a: {diff.estimate * 100:+.3f} points "
        f"({diff.level:.0%} CI {diff.low * 100:+.3f} to {diff.high * 100:+.3f}, {diff.method})",
        "relative lift: undefined (control has no conversions)"
        if lift is None
        else f"relative lift: {lift.estimate:+.2%} "
        f"({lift.level:.0%} CI {lift.low:+.2%} to {lift.high:+.2%}, {lift.method})",
        f"{result.method} test ({'pooled' if result.pooled else 'unpooled'} variance, "
        f"{result.sides}): z = {result.statistic:.4f}, p = {result.p_value:.4g}",
        f"{adjusted + ' ' if adjusted else ''}-> {verdict} at alpha {result.alpha:g}",
    ]
    return "\n".join(lines)


def _plan_text(plan: campaign.CampaignPlan, out: Path | None) -> str:
    roi = "n/a (no contact cost)" if plan.roi is None else f"{plan.roi:+.1%}"
    power = "n/a (a group is empty)" if plan.power is None else f"{plan.power:.3f}"
    lines = [
        f"experiment {plan.experiment_id}: {plan.audience_size:,} users -> "
        f"{plan.treatment_size:,} treatment, {plan.control_size:,} control "
        f"(holdout {plan.holdout_share:.1%})",
        f"conversion {plan.baseline_rate:.3%} -> {plan.treatment_rate:.3%} among the contacted",
        f"expected conversions {plan.expected_conversions:,.1f}, "
        f"incremental {plan.incremental_conversions:,.1f}",
        f"cost {plan.cost:,.2f}, incremental value {plan.incremental_value:,.2f}, ROI {roi}",
        f"needs {plan.sample_size.n_control:,} control and {plan.sample_size.n_treatment:,} "
        f"treatment users to detect the lift; power with this audience {power}",
    ]
    if plan.warning:
        lines.append(f"WARNING: {plan.warning}")
    if out is not None:
        lines.append(f"wrote {out}")
    return "\n".join(lines)
