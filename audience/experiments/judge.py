"""Judge a launched campaign from the event log: did contacting the treatment pay off?

`campaign` split an audience into a treatment (contacted) and a hashed holdout (left
alone); after the launch the event log says who converted. A user converts when the log
has an event of the conversion type in the window [launch, launch + window_days) on the
campaign's product (scope ``product``), on any product of its category (``category``,
membership from the catalog) or on any product at all (``any``). Every assigned user
counts in their arm whether or not the log shows them again (intention to treat): a
user who never came back did not convert, and dropping them would compare the active
users of two arms, which the contact itself changes.

The log's last event bounds what can be judged. A log that ends before the window does
gives a ``partial`` report saying how many days it covers: early numbers are honest about
those days but undercount a campaign whose buyers take their time. The statistics are
`abtest`'s with the holdout as control (arm a) and the treatment as arm b; the economics
are `campaign`'s plan, measured instead of assumed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl

from audience import atomic
from audience.data.schema import CATEGORY, EVENT, EVENT_SCHEMA, PRODUCT, TIME, USER
from audience.errors import ConfigError, InputError
from audience.experiments.abtest import (
    BayesComparison,
    Comparison,
    Interval,
    SampleRatioCheck,
    Serializable,
    bayes_compare,
    compare,
    sample_ratio_mismatch,
)
from audience.settings import Settings

TREATMENT: Final = "treatment"
HOLDOUT: Final = "holdout"
ARMS: Final = (TREATMENT, HOLDOUT)
#: The assignment column that holds a user's arm.
ARM: Final = "arm"

Scope = Literal["product", "category", "any"]
SCOPES: tuple[Scope, ...] = ("product", "category", "any")

REPORT_JSON: Final = "report.json"
REPORT_MD: Final = "report.md"
REPORT_PNG: Final = "report.png"

_DAY: Final = timedelta(days=1)


# --- inputs ----------------------------------------------------------------------------


def check_assignments(assignments: pl.DataFrame) -> pl.DataFrame:
    """user_id and arm of each assigned user, both strings; other columns (rank, score) go.

    A ConfigError naming ``assignments`` when a column is missing, an arm is not
    treatment or holdout, a user is listed twice or an arm has nobody: each would make
    the per-arm rates mean something else than they say.
    """
    missing = [column for column in (USER, ARM) if column not in assignments.columns]
    if missing:
        raise ConfigError(
            "assignments", f"needs columns {USER} and {ARM}; missing {', '.join(missing)}"
        )
    frame = assignments.select(pl.col(USER).cast(pl.String), pl.col(ARM).cast(pl.String))
    if frame.null_count().sum_horizontal().item():
        raise ConfigError("assignments", "has rows without a user id or an arm")
    unknown = sorted(set(frame.get_column(ARM).unique()) - set(ARMS))
    if unknown:
        raise ConfigError("assignments", f"arm must be {TREATMENT} or {HOLDOUT}; found {unknown}")
    repeated = frame.filter(pl.col(USER).is_duplicated()).get_column(USER).unique()
    if len(repeated):
        raise ConfigError(
            "assignments", f"lists {len(repeated)} users twice or more, e.g. {repeated[0]!r}"
        )
    for arm in ARMS:
        if not (frame.get_column(ARM) == arm).any():
            raise ConfigError("assignments", f"the {arm} arm has no users")
    return frame


def as_utc(moment: datetime, name: str = "launched_at") -> datetime:
    """``moment`` in UTC; a naive time is read as UTC, the zone of the canonical table."""
    if not isinstance(moment, datetime):
        raise ConfigError(name, f"must be a date and time, got {moment!r}")
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_window(window_days: float) -> timedelta:
    """The window as a timedelta; a ConfigError naming ``window_days`` unless it is > 0."""
    try:
        return timedelta(days=_number("window_days", window_days, open_at_zero=True))
    except OverflowError:
        raise ConfigError("window_days", f"is too long: {window_days!r} days") from None


def _number(name: str, value: float, *, open_at_zero: bool = False) -> float:
    """A finite number >= 0 (> 0 if ``open_at_zero``); a ConfigError naming ``name`` else."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (open_at_zero and value == 0)
    ):
        bound = "> 0" if open_at_zero else ">= 0"
        raise ConfigError(name, f"must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_events(events: pl.DataFrame) -> None:
    schema = {name: events.schema.get(name) for name in EVENT_SCHEMA.names()}
    if schema != dict(EVENT_SCHEMA):
        raise ConfigError(
            "events", f"is not a canonical event table (audience ingest): schema {schema}"
        )


def _category(product_id: str, category: str | None, catalog: pl.DataFrame | None) -> str | None:
    """The category given, else the catalog's for the product, else None."""
    if category is not None or catalog is None or CATEGORY not in catalog.columns:
        return category
    found = catalog.filter(pl.col(PRODUCT) == product_id).get_column(CATEGORY).drop_nulls()
    return str(found[0]) if len(found) else None


def _in_scope(
    scope: Scope, product_id: str, category: str | None, catalog: pl.DataFrame | None
) -> pl.Expr:
    """Which events are on a product that counts for this scope."""
    if scope not in SCOPES:
        raise ConfigError("scope", f"must be one of {', '.join(SCOPES)}; got {scope!r}")
    if scope == "product":
        return pl.col(PRODUCT) == product_id
    if scope == "any":
        return pl.lit(value=True)
    if catalog is None or CATEGORY not in catalog.columns or PRODUCT not in catalog.columns:
        raise ConfigError(
            "scope",
            "is category, which needs the catalog (products.parquet of the ingest folder, "
            "with product_id and category) to know which products are in the category",
        )
    if category is None:
        raise ConfigError(
            "scope",
            f"is category, but the catalog gives product {product_id!r} none; name one",
        )
    members = catalog.filter(pl.col(CATEGORY) == category).get_column(PRODUCT)
    if members.is_empty():
        raise ConfigError("category", f"no product of the catalog is in {category!r}")
    return pl.col(PRODUCT).is_in(members.implode())


def _check_conversion(conversion: str, events: pl.DataFrame, settings: Settings | None) -> str:
    """The conversion type in canonical (lower) case; one the log has or the settings declare
    (a type nobody did yet, say ``rating`` of a new product, is a fair conversion)."""
    if not isinstance(conversion, str) or not conversion.strip():
        raise ConfigError("conversion", f"must name an event type, got {conversion!r}")
    name = conversion.strip().lower()
    in_log = set(events.get_column(EVENT).unique().drop_nulls())
    if name not in in_log and name not in (settings or Settings()).event_types:
        raise ConfigError(
            "conversion",
            f"unknown event type {conversion!r}: not in the log ({', '.join(sorted(in_log))}) "
            "nor in the settings' event types (AUDIENCE_EVENT_WEIGHTS)",
        )
    return name


# --- the report -------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmResult(Serializable):
    """One arm: its users, how many converted, and the rate with its Wilson interval."""

    users: int
    conversions: int
    rate: float
    interval: Interval


@dataclass(frozen=True)
class CampaignReport(Serializable):
    """What the log says about a launched campaign.

    ``comparison`` is `abtest.compare` of the holdout (a) against the treatment (b), so
    its ``difference`` and ``relative_lift`` are treatment minus / over holdout; ``bayes``
    the posterior probability that the treatment converts better. With n_t treatment
    users the economics are
        incremental conversions = n_t * (rate_t - rate_h), interval n_t * the difference's
        cost                    = n_t * cost per contact
        incremental value       = incremental conversions * value per conversion
        roi                     = (incremental value - cost) / cost, None if cost is 0
    ``partial`` says the log ends before the window does; ``days_covered`` how many of its
    days the log holds. Times are UTC; ``to_dict`` writes them in ISO 8601.
    """

    method: str
    product_id: str
    category: str | None
    scope: Scope
    conversion: str
    window_start: datetime
    window_end: datetime
    window_days: float
    log_end: datetime
    partial: bool
    days_covered: float
    holdout_share: float
    alpha: float
    treatment: ArmResult
    holdout: ArmResult
    sample_ratio: SampleRatioCheck
    comparison: Comparison
    bayes: BayesComparison
    incremental_conversions: Interval
    cost_per_contact: float
    value_per_conversion: float
    cost: float
    incremental_value: Interval
    roi: Interval | None
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for key in ("window_start", "window_end", "log_end"):
            data[key] = data[key].isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CampaignReport:
        """The report back from `to_dict`'s form (as read from report.json)."""
        sample, comparison, bayes = data["sample_ratio"], data["comparison"], data["bayes"]
        return cls(
            **{
                **data,
                **{k: datetime.fromisoformat(data[k]) for k in ("window_start", "window_end")},
                "log_end": datetime.fromisoformat(data["log_end"]),
                "treatment": _arm_from(data["treatment"]),
                "holdout": _arm_from(data["holdout"]),
                "sample_ratio": SampleRatioCheck(
                    **{
                        **sample,
                        **{k: tuple(sample[k]) for k in ("observed", "shares", "expected")},
                    }
                ),
                "comparison": Comparison(
                    **{
                        **comparison,
                        "difference": Interval(**comparison["difference"]),
                        "relative_lift": _interval_from(comparison["relative_lift"]),
                    }
                ),
                "bayes": BayesComparison(
                    **{
                        **bayes,
                        **{k: tuple(bayes[k]) for k in ("prior", "posterior_a", "posterior_b")},
                    }
                ),
                "incremental_conversions": Interval(**data["incremental_conversions"]),
                "incremental_value": Interval(**data["incremental_value"]),
                "roi": _interval_from(data["roi"]),
            }
        )


def _interval_from(data: dict[str, Any] | None) -> Interval | None:
    return None if data is None else Interval(**data)


def _arm_from(data: dict[str, Any]) -> ArmResult:
    return ArmResult(**{**data, "interval": Interval(**data["interval"])})


# --- judging ----------------------------------------------------------------------------


def judge(
    assignments: pl.DataFrame,
    events: pl.DataFrame,
    *,
    product_id: str,
    category: str | None = None,
    conversion: str = "purchased",
    scope: Scope = "product",
    launched_at: datetime,
    window_days: float,
    holdout_share: float,
    cost_per_contact: float = 0.0,
    value_per_conversion: float = 0.0,
    alpha: float = 0.05,
    srm_alpha: float = 0.001,
    catalog: pl.DataFrame | None = None,
    settings: Settings | None = None,
) -> CampaignReport:
    """Count each arm's converters in the window and compare treatment with holdout.

    ``assignments`` has user_id and arm (treatment / holdout; rank and score may come
    along and are ignored); ``events`` is a canonical event table. ``category`` names
    the category for scope ``category`` (default: the catalog's for the product).
    ``holdout_share`` is the planned share, against which the sample-ratio check (at
    the strict ``srm_alpha``, see `abtest.sample_ratio_mismatch`) tests the arms' sizes.
    The test is abtest's default (pooled z, Newcombe difference, Koopman lift) at
    ``alpha``; the Bayesian probability uses uniform priors.
    """
    arms = check_assignments(assignments)
    _check_events(events)
    category = _category(product_id, category, catalog)
    in_scope = _in_scope(scope, product_id, category, catalog)
    name = _check_conversion(conversion, events, settings)
    start = as_utc(launched_at)
    try:
        end = start + check_window(window_days)
    except OverflowError:
        raise ConfigError("window_days", "runs past the year 9999") from None
    share = _number("holdout_share", holdout_share, open_at_zero=True)
    if share >= 1:
        raise ConfigError("holdout_share", f"must be in (0, 1), got {holdout_share!r}")
    cost_each = _number("cost_per_contact", cost_per_contact)
    value_each = _number("value_per_conversion", value_per_conversion)
    log_end = events.get_column(TIME).max()
    if not isinstance(log_end, datetime) or log_end < start:
        raise ConfigError(
            "log",
            f"nothing after launch at {start.isoformat()}: the log "
            + (f"ends at {log_end.isoformat()}" if isinstance(log_end, datetime) else "is empty"),
        )
    converted = (
        events.lazy()
        .filter(pl.col(EVENT) == name, pl.col(TIME) >= start, pl.col(TIME) < end, in_scope)
        .select(USER)
        .unique()
        .collect()
    )
    flags = arms.get_column(USER).is_in(converted.get_column(USER).implode())
    treated = arms.get_column(ARM) == TREATMENT
    n_t, n_h = int(treated.sum()), int((~treated).sum())
    conv_t, conv_h = int((flags & treated).sum()), int((flags & ~treated).sum())
    comparison = compare(conv_h, n_h, conv_t, n_t, alpha=alpha)
    incremental = _scaled(
        comparison.difference, n_t, f"treatment users x difference ({comparison.difference.method})"
    )
    cost = n_t * cost_each
    value = _scaled(incremental, value_each, "incremental conversions x value per conversion")
    roi = None
    if cost > 0:
        roi = _scaled(value, 1 / cost, "(incremental value - cost) / cost", offset=-1.0)
    report = CampaignReport(
        method=(
            "users with a conversion event in the window, per arm (intention to treat); "
            "abtest.compare (holdout = a, treatment = b), bayes_compare, sample_ratio_mismatch"
        ),
        product_id=product_id,
        category=category,
        scope=scope,
        conversion=name,
        window_start=start,
        window_end=end,
        window_days=float(window_days),
        log_end=log_end,
        partial=log_end < end,
        days_covered=(min(log_end, end) - start) / _DAY,
        holdout_share=share,
        alpha=comparison.alpha,
        treatment=_arm_result(conv_t, n_t, comparison.alpha),
        holdout=_arm_result(conv_h, n_h, comparison.alpha),
        sample_ratio=sample_ratio_mismatch([n_t, n_h], [1 - share, share], alpha=srm_alpha),
        comparison=comparison,
        bayes=bayes_compare(conv_h, n_h, conv_t, n_t),
        incremental_conversions=incremental,
        cost_per_contact=cost_each,
        value_per_conversion=value_each,
        cost=cost,
        incremental_value=value,
        roi=roi,
        verdict="",
    )
    return dataclasses.replace(report, verdict=_verdict(report))


def _arm_result(conversions: int, users: int, alpha: float) -> ArmResult:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(conversions, users, alpha=alpha, method="wilson")
    rate = conversions / users
    # statsmodels' Wilson bound at 0 or 100% misses the rate by a rounding error (4e-19)
    low, high = min(float(low), rate), max(float(high), rate)
    return ArmResult(users, conversions, rate, Interval("wilson", rate, low, high, 1 - alpha))


def _scaled(interval: Interval, factor: float, method: str, offset: float = 0.0) -> Interval:
    """factor * interval + offset, with the bounds in order (factor >= 0)."""
    return Interval(
        method,
        factor * interval.estimate + offset,
        factor * interval.low + offset,
        factor * interval.high + offset,
        interval.level,
    )


# --- words ------------------------------------------------------------------------------


def _pct(rate: float) -> str:
    return f"{100 * rate:.2f}%"


def _signed_pct(value: float) -> str:
    return f"{100 * value:+.1f}%"


def _points(value: float) -> str:
    return f"{100 * value:+.2f} points"


def _chance(probability: float) -> str:
    """A probability in percent that does not round a near-certainty up to certain."""
    if 0.999 < probability < 1:
        return "> 99.9%"
    return "< 0.1%" if 0 < probability < 0.001 else f"{probability:.1%}"


def _lift_words(comparison: Comparison) -> str:
    lift = comparison.relative_lift
    if lift is None:
        return "relative lift unbounded: no holdout user converted"
    return (
        f"{_signed_pct(lift.estimate)} relative, {lift.level:.0%} interval "
        f"{_signed_pct(lift.low)} to {_signed_pct(lift.high)}"
    )


def _verdict(report: CampaignReport) -> str:
    """One line a merchant can act on: trust the split first, then the effect, then money."""
    check, comparison = report.sample_ratio, report.comparison
    rates = f"treatment {_pct(report.treatment.rate)} vs holdout {_pct(report.holdout.rate)}"
    if check.mismatch:
        text = (
            f"Do not trust these numbers: the arms hold {check.observed[0]:,} treatment and "
            f"{check.observed[1]:,} holdout users where {check.shares[0]:.0%} / "
            f"{check.shares[1]:.0%} was planned (sample-ratio mismatch, p = "
            f"{check.p_value:.2g}); find out why before reading the lift ({rates})"
        )
    elif comparison.significant:
        extra = report.incremental_conversions
        text = (
            f"The campaign {'raised' if extra.estimate > 0 else 'lowered'} conversions: "
            f"{rates} ({_lift_words(comparison)}), {extra.estimate:+,.0f} conversions "
            f"({extra.low:+,.0f} to {extra.high:+,.0f})"
        )
        if report.roi is not None:
            text += (
                f", ROI {_signed_pct(report.roi.estimate)} "
                f"({_signed_pct(report.roi.low)} to {_signed_pct(report.roi.high)})"
            )
    else:
        difference = comparison.difference
        text = (
            f"No effect the test can tell from chance (p = {comparison.p_value:.2g}): {rates}; "
            f"the {difference.level:.0%} interval of the difference runs from "
            f"{_points(difference.low)} to {_points(difference.high)}"
        )
    if report.partial:
        text = (
            f"Partial, {report.days_covered:.1f} of {report.window_days:g} days in the log: {text}"
        )
    return text + "."


def report_markdown(report: CampaignReport) -> str:
    """The report as a page: verdict, the arms, the effect, the money, the checks."""
    comparison, check, level = report.comparison, report.sample_ratio, report.alpha
    label = f"{1 - level:.0%} interval"
    where = {
        "product": f"product {report.product_id}",
        "category": f"any product of category {report.category} (campaign product "
        f"{report.product_id})",
        "any": f"any product (campaign product {report.product_id})",
    }[report.scope]
    coverage = (
        f"**Partial:** the log ends at {report.log_end:%Y-%m-%d %H:%M} UTC and covers "
        f"{report.days_covered:.1f} of the window's {report.window_days:g} days."
        if report.partial
        else f"The log covers the whole window (it ends at {report.log_end:%Y-%m-%d %H:%M} UTC)."
    )
    lines = [
        f"# Campaign report: {report.product_id}",
        "",
        f"**Verdict:** {report.verdict}",
        "",
        f"A conversion is a `{report.conversion}` event on {where} from "
        f"{report.window_start:%Y-%m-%d %H:%M} to {report.window_end:%Y-%m-%d %H:%M} UTC "
        f"({report.window_days:g} days). {coverage}",
        "",
        f"| arm | users | converted | rate | {label} (Wilson) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for arm, result in ((TREATMENT, report.treatment), (HOLDOUT, report.holdout)):
        lines.append(
            f"| {arm} | {result.users:,} | {result.conversions:,} | {_pct(result.rate)} | "
            f"{_pct(result.interval.low)} to {_pct(result.interval.high)} |"
        )
    difference, lift = comparison.difference, comparison.relative_lift
    rows = [
        (
            "difference (treatment - holdout)",
            _points(difference.estimate),
            f"{_points(difference.low)} to {_points(difference.high)}",
        ),
        (
            "relative lift",
            "unbounded" if lift is None else _signed_pct(lift.estimate),
            "" if lift is None else f"{_signed_pct(lift.low)} to {_signed_pct(lift.high)}",
        ),
        _money_row("incremental conversions", report.incremental_conversions, "{:+,.1f}"),
        ("cost", f"{report.cost:,.2f}", ""),
        _money_row("incremental value", report.incremental_value, "{:+,.2f}"),
    ]
    if report.roi is not None:
        roi = report.roi
        rows.append(
            ("ROI", _signed_pct(roi.estimate), f"{_signed_pct(roi.low)} to {_signed_pct(roi.high)}")
        )
    lines += ["", f"| measure | estimate | {label} |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {estimate} | {interval} |" for name, estimate, interval in rows]
    lines += [
        "",
        f"- Test: {comparison.method}, statistic {comparison.statistic:.3f}, p = "
        f"{comparison.p_value:.3g}: {'' if comparison.significant else 'not '}significant at "
        f"alpha {comparison.alpha:g}.",
        f"- P(treatment converts better than holdout) = {_chance(report.bayes.prob_b_beats_a)} "
        f"({report.bayes.method}, Beta{report.bayes.prior} prior).",
        f"- Sample ratio: {check.observed[0]:,} treatment / {check.observed[1]:,} holdout "
        f"against a planned {check.shares[0]:.0%} / {check.shares[1]:.0%}: chi-square p = "
        f"{check.p_value:.3g}, {'MISMATCH' if check.mismatch else 'no mismatch'} at alpha "
        f"{check.alpha:g}.",
        f"- Contacts cost {report.cost_per_contact:g} each; a conversion is worth "
        f"{report.value_per_conversion:g}."
        + ("" if report.roi is not None else " ROI needs a cost per contact above 0."),
        "",
        f"![Conversion rate per arm]({REPORT_PNG})",
        "",
    ]
    return "\n".join(lines)


def _money_row(name: str, interval: Interval, form: str) -> tuple[str, str, str]:
    return (
        name,
        form.format(interval.estimate),
        f"{form.format(interval.low)} to {form.format(interval.high)}",
    )


# --- files ------------------------------------------------------------------------------


def write_report(report: CampaignReport, out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and report.png in ``out_dir``, each written atomically.

    The JSON comes last, so a reader that finds it finds the page and chart beside it.
    Returns {"chart": ..., "markdown": ..., "json": ...}.
    """
    from audience.evidence import charts

    paths = {
        "chart": out_dir / REPORT_PNG,
        "markdown": out_dir / REPORT_MD,
        "json": out_dir / REPORT_JSON,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=out_dir, prefix=f".{REPORT_PNG}.", suffix=".png")
    tmp = Path(name)
    try:
        os.close(descriptor)  # matplotlib writes by name
        charts.arm_rates(
            {
                arm: (result.rate, result.interval.low, result.interval.high)
                for arm, result in ((TREATMENT, report.treatment), (HOLDOUT, report.holdout))
            },
            tmp,
            f"{report.conversion} of {report.product_id} ({report.scope}), "
            f"{1 - report.alpha:.0%} Wilson intervals"
            + (f"; partial, {report.days_covered:.1f} days" if report.partial else ""),
        )
        tmp.replace(paths["chart"])
    finally:
        tmp.unlink(missing_ok=True)
    atomic.write_text(report_markdown(report), paths["markdown"])
    atomic.write_json(report.to_dict(), paths["json"])
    return paths


def read_report(path: Path) -> CampaignReport:
    """A report back from report.json (or the folder `write_report` wrote it in)."""
    file = path / REPORT_JSON if path.is_dir() else path
    if not file.exists():
        raise InputError(file, "no such file; judge the campaign first")
    try:
        return CampaignReport.from_dict(json.loads(file.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(file, f"is not a campaign report: {error}") from error
