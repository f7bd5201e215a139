"""Turn any raw interaction log into the canonical event table, losing no row silently.

`ingest` streams the input (nothing is materialised as Python objects), maps the
log's own column and event names onto the canonical ones, parses times, and
splits rows three ways: valid events (deduplicated and sorted by time), rejected
rows (kept whole, with their file, row number and reason), and exact duplicates
(counted). Outputs are written to a staging folder inside the output directory
and moved into place only when the run succeeds, so a failed run leaves the
previous output untouched.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import polars as pl

from audience.data import sources, times
from audience.data.schema import (
    CATALOG_SCHEMA,
    CATEGORY,
    COLUMN_ALIASES,
    EVENT,
    EVENT_SCHEMA,
    PRICE,
    PRODUCT,
    PRODUCT_NAME,
    ROLE_NAMES,
    TIME,
    USER,
)
from audience.errors import ConfigError, InputError, MissingColumnError, RejectLimitError
from audience.settings import Settings

EVENTS_FILE: Final = "events.parquet"
REJECTS_FILE: Final = "rejects.parquet"
CATALOG_FILE: Final = "products.parquet"
SUMMARY_FILE: Final = "ingest.json"
FAILED_DIR: Final = "failed_ingest"
REASON: Final = "reason"
_FORMAT: Final = "__time_format"

#: Optional catalog columns found in an event log, with the raw names recognised.
CATALOG_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    PRODUCT_NAME: (PRODUCT_NAME, "name", "title", "item_name", "product_title"),
    CATEGORY: (CATEGORY, "category_code", "category_name", "categoryid", "product_category"),
    PRICE: (PRICE, "unit_price", "product_price"),
}
_CATALOG_ROLES: Final = {"name": PRODUCT_NAME, "category": CATEGORY, "price": PRICE}


def parse_pairs(text: str | None, parameter: str) -> dict[str, str]:
    """`a=b,c=d` as a dict; an error naming the parameter for anything else."""
    pairs: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(
                parameter, f"expected name=value pairs separated by commas, got {item!r}"
            )
        pairs[key.strip()] = value.strip()
    return pairs


def column_mapping(text: str | None) -> dict[str, str]:
    """`--columns user=customer_id,...` as {canonical column: raw column}."""
    roles = ROLE_NAMES | _CATALOG_ROLES
    mapping = {}
    for role, raw in parse_pairs(text, "--columns").items():
        if role not in roles:
            raise ConfigError("--columns", f"unknown role {role!r}; roles are {', '.join(roles)}")
        mapping[roles[role]] = raw
    return mapping


def event_mapping(text: str | None, settings: Settings) -> dict[str, str]:
    """`--events view=search_keyword,...` as {raw event name (lower case): canonical type}."""
    mapping = {raw.lower(): target.lower() for raw, target in parse_pairs(text, "--events").items()}
    unknown = sorted(set(mapping.values()) - settings.event_types)
    if unknown:
        raise ConfigError(
            "--events",
            f"target event types {unknown} are not known; known types: "
            f"{', '.join(sorted(settings.event_types))} (declare more in AUDIENCE_EVENT_WEIGHTS)",
        )
    return mapping


def _find(found: list[str], aliases: tuple[str, ...], given: str | None) -> str | None:
    if given is not None:
        return given if given in found else None
    lower = {name.lower(): name for name in found}
    return next((lower[a.lower()] for a in aliases if a.lower() in lower), None)


def resolve_columns(found: list[str], given: dict[str, str], label: str) -> dict[str, str]:
    """{canonical: raw} for the four required columns and whichever catalog columns exist."""
    resolved = {}
    for canonical, aliases in COLUMN_ALIASES.items():
        raw = _find(found, aliases, given.get(canonical))
        if raw is None:
            role = next(r for r, c in ROLE_NAMES.items() if c == canonical)
            raise MissingColumnError(label, given.get(canonical, canonical), role, found)
        resolved[canonical] = raw
    for canonical, aliases in CATALOG_ALIASES.items():
        raw = _find(found, aliases, given.get(canonical))
        if raw is None and canonical in given:
            raise MissingColumnError(label, given[canonical], canonical, found)
        if raw is not None and raw not in resolved.values():
            resolved[canonical] = raw
    return resolved


def _text(raw: str) -> pl.Expr:
    value = pl.col(raw).cast(pl.String).str.strip_chars()
    return pl.when(value != "").then(value)


def _internal(canonical: str) -> str:
    """Working name for a parsed column, so a raw column of the same name stays as read."""
    return f"__{canonical}"


def _checked(
    frame: pl.LazyFrame,
    columns: dict[str, str],
    events: dict[str, str],
    settings: Settings,
    clock: datetime,
) -> pl.LazyFrame:
    """The input plus parsed canonical columns, how its time was read, and a rejection reason
    (null when valid): the first rule that applies, in the order of the docs' table."""
    raw_time = columns[TIME]
    dtype = frame.collect_schema()[raw_time]
    user, product, event, time = (pl.col(_internal(c)) for c in EVENT_SCHEMA.names())
    frame = frame.with_columns(
        _text(columns[USER]).alias(_internal(USER)),
        _text(columns[PRODUCT]).alias(_internal(PRODUCT)),
        _text(columns[EVENT]).str.to_lowercase().replace(events).alias(_internal(EVENT)),
        times.parse_time(raw_time, dtype).alias(_internal(TIME)),
    )
    rules = [
        ("missing user_id", user.is_null()),
        ("missing product_id", product.is_null()),
        ("missing event_type", event.is_null()),
        ("unknown event_type", ~event.is_in(sorted(settings.event_types))),
        ("missing event_time", pl.col(raw_time).is_null()),
        ("unparseable event_time", time.is_null()),
        *times.checks(time, settings.earliest_event_time, clock + settings.future_tolerance),
    ]
    return frame.with_columns(
        pl.coalesce(pl.when(rule).then(pl.lit(text)) for text, rule in rules).alias(REASON),
        pl.when(time.is_not_null()).then(times.time_format(raw_time, dtype)).alias(_FORMAT),
    )


def _count(path: Path) -> int:
    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def _catalog_columns(path: Path) -> dict[str, str]:
    found = sources.scan(path).collect_schema().names()
    product = _find(found, COLUMN_ALIASES[PRODUCT], None)
    if product is None:
        raise MissingColumnError(path, PRODUCT, "product", found)
    optional = {c: _find(found, aliases, None) for c, aliases in CATALOG_ALIASES.items()}
    return {PRODUCT: product} | {c: raw for c, raw in optional.items() if raw is not None}


def _write_catalog(frame: pl.LazyFrame, columns: dict[str, str], staging: Path) -> None:
    """One row per product (its last non-empty values), in CATALOG_SCHEMA; id-less rows dropped."""
    (
        frame.select(_text(raw).alias(canonical) for canonical, raw in columns.items())
        .drop_nulls(PRODUCT)
        .group_by(PRODUCT)
        .agg(pl.col(c).drop_nulls().last() for c in columns if c != PRODUCT)
        .with_columns(
            pl.lit(None, dtype).alias(c) for c, dtype in CATALOG_SCHEMA.items() if c not in columns
        )
        .select(pl.col(c).cast(dtype, strict=False) for c, dtype in CATALOG_SCHEMA.items())
        .sort(PRODUCT)
        .sink_parquet(staging / CATALOG_FILE)
    )


def _write(
    paths: list[Path],
    columns: dict[str, str],
    events: dict[str, str],
    settings: Settings,
    staging: Path,
    catalog_path: Path | None,
    clock: datetime,
) -> tuple[dict[str, int], pl.DataFrame]:
    """Stream the input once into valid / rejected rows, then dedupe and sort the valid ones.

    Also gives, from the same pass, the rows and time range per (reason, how the time
    was read): what the summary and a failed run's message say about the time column.
    """
    frame = sources.scan_all(paths)
    raw_names = [
        n
        for n in frame.collect_schema().names()
        if n not in (sources.SOURCE_FILE, sources.SOURCE_ROW)
    ]
    checked = _checked(frame, columns, events, settings, clock)
    in_log = [c for c in CATALOG_SCHEMA.names() if c in columns and c != PRODUCT]
    valid = checked.filter(pl.col(REASON).is_null()).select(
        *(pl.col(_internal(c)).alias(c) for c in EVENT_SCHEMA.names()),
        *(_text(columns[c]).alias(c) for c in in_log),
    )
    rejects = checked.filter(pl.col(REASON).is_not_null()).select(
        sources.SOURCE_FILE,
        sources.SOURCE_ROW,
        REASON,
        *(pl.col(n).cast(pl.String) for n in raw_names),
    )
    time = pl.col(_internal(TIME))
    by_format = checked.group_by(REASON, _FORMAT).agg(
        pl.len().alias("rows"), time.min().alias("first"), time.max().alias("last")
    )
    try:
        *_, time_stats = pl.collect_all(
            [
                valid.sink_parquet(staging / "valid.parquet", lazy=True),
                rejects.sink_parquet(staging / REJECTS_FILE, lazy=True),
                by_format,
            ]
        )
    except pl.exceptions.PolarsError as exc:
        raise sources.explain_read_error(paths, exc) from exc
    kept = pl.scan_parquet(staging / "valid.parquet")
    kept.select(EVENT_SCHEMA.names()).unique().sort([TIME, USER, PRODUCT, EVENT]).sink_parquet(
        staging / EVENTS_FILE
    )
    if catalog_path is not None:
        _write_catalog(sources.scan(catalog_path), _catalog_columns(catalog_path), staging)
    elif in_log:
        _write_catalog(kept, {c: c for c in (PRODUCT, *in_log)}, staging)
    counts = {
        "valid": _count(staging / "valid.parquet"),
        "rejected": _count(staging / REJECTS_FILE),
        "events": _count(staging / EVENTS_FILE),
    }
    return counts, time_stats


def _summary(staging: Path, counts: dict[str, int]) -> dict[str, Any]:
    rows = counts["valid"] + counts["rejected"]
    rejects = pl.scan_parquet(staging / REJECTS_FILE)
    by_reason = rejects.group_by(REASON).len().sort("len", descending=True).collect()
    events = pl.scan_parquet(staging / EVENTS_FILE)
    overview = (
        events.select(
            users=pl.col(USER).n_unique(),
            products=pl.col(PRODUCT).n_unique(),
            first_event=pl.col(TIME).min(),
            last_event=pl.col(TIME).max(),
        )
        .collect()
        .row(0, named=True)
    )
    mix = events.group_by(EVENT).len().sort("len", descending=True).collect()
    return {
        "rows_read": rows,
        "events": counts["events"],
        "duplicates_removed": counts["valid"] - counts["events"],
        "rejected": counts["rejected"],
        "reject_share": counts["rejected"] / rows if rows else 0.0,
        "rejects_by_reason": dict(zip(by_reason[REASON], by_reason["len"], strict=True)),
        "users": overview["users"],
        "products": overview["products"],
        "first_event": overview["first_event"].isoformat() if overview["first_event"] else None,
        "last_event": overview["last_event"].isoformat() if overview["last_event"] else None,
        "event_mix": dict(zip(mix[EVENT], mix["len"], strict=True)),
    }


def _span(frame: pl.DataFrame) -> list[str] | None:
    """[first, last] time of `frame`'s groups as ISO text (formatted by Polars: a rejected
    time may lie beyond the years a Python datetime holds); None when there is none."""
    if frame.is_empty():
        return None
    ends = frame.select(pl.col("first").min(), pl.col("last").max())
    return list(ends.select(pl.all().dt.strftime(times.ISO)).row(0))


def _read_as(frame: pl.DataFrame) -> dict[str, int]:
    forms = (
        frame.group_by(_FORMAT).agg(pl.col("rows").sum()).sort(["rows", _FORMAT], descending=True)
    )
    return dict(zip(forms[_FORMAT], forms["rows"], strict=True))


def _time_summary(
    stats: pl.DataFrame, column: str, settings: Settings, clock: datetime
) -> dict[str, Any]:
    """The time column as read (its forms and range over every parsed row, rejected ones
    too), the accepted range, and what each time check rejected."""
    read = stats.filter(pl.col(_FORMAT).is_not_null())
    by_check = {
        reason: {"rows": int(rows["rows"].sum()), "read_as": _read_as(rows), "range": _span(rows)}
        for reason in times.time_reasons(settings.earliest_event_time)
        if not (rows := read.filter(pl.col(REASON) == reason)).is_empty()
    }
    return {
        "column": column,
        "read_as": _read_as(read),
        "observed_range": _span(read),
        "accepted_from": settings.earliest_event_time.isoformat(),
        "accepted_until": (clock + settings.future_tolerance).isoformat(),
        "clock": clock.isoformat(),
        "future_tolerance": times.describe_tolerance(settings.future_tolerance),
        "rejected_by_check": by_check,
    }


def _explain(summary: dict[str, Any], rejects: Path, settings: Settings) -> str:
    """The check behind most of the rejections, what it saw and what changes it; '' when no
    one check rejected more than half."""
    reason, rows = next(iter(summary["rejects_by_reason"].items()))
    if rows * 2 <= summary["rejected"]:
        return ""
    share = "All" if rows == summary["rejected"] else "Most"
    head = f" {share} of them ({rows:,}) by one check, '{reason}': "
    columns = summary["columns"]
    if reason in summary["event_time"]["rejected_by_check"]:
        return head + times.explain(reason, summary["event_time"]) + "."
    if reason.startswith("missing "):
        canonical = reason.removeprefix("missing ")
        role = next(r for r, c in ROLE_NAMES.items() if c == canonical)
        hint = f"is '{columns[canonical]}' the {role} column? Map yours with --columns {role}=NAME"
    elif reason == "unknown event_type":
        hint = (
            f"the commonest unknown names are {summary['unknown_event_types']}; map them with "
            f"--events NAME=TYPE (types: {', '.join(sorted(settings.event_types))})"
        )
    else:  # unparseable event_time
        examples = (
            pl.scan_parquet(rejects)
            .filter(pl.col(REASON) == reason)
            .select(pl.col(columns[TIME]).unique(maintain_order=True).head(3))
            .collect()
            .to_series()
        )
        hint = (
            f"values of '{columns[TIME]}' such as {', '.join(map(repr, examples))} match no "
            "supported form (ISO-8601 date-times, dates, epoch numbers: docs/data.md, 'Times'); "
            "is it the time column? Map yours with --columns time=NAME"
        )
    return head + hint + "."


def _unknown_events(staging: Path, column: str) -> dict[str, int]:
    top = (
        pl.scan_parquet(staging / REJECTS_FILE)
        .filter(pl.col(REASON) == "unknown event_type")
        .group_by(column)
        .len()
        .sort("len", descending=True)
        .head(10)
        .collect()
    )
    return {str(k): int(v) for k, v in zip(top[column], top["len"], strict=True)}


def ingest(
    source: str | Path,
    out_dir: Path,
    *,
    columns: dict[str, str] | None = None,
    events: dict[str, str] | None = None,
    catalog: Path | None = None,
    max_reject_share: float | None = None,
    settings: Settings | None = None,
    clock: datetime | None = None,
) -> dict[str, Any]:
    """Ingest `source` (a file or glob) into `out_dir`; returns the run's summary.

    The catalog comes from `catalog` (a CSV/Parquet file with product_id and any of
    product_name, category, price) if given, else from such columns in the log.
    Times later than `clock` (default: now, when the run starts) plus the settings'
    future tolerance are rejected.
    Raises `InputError` (or a subclass) naming the file, column or row at fault;
    then nothing in `out_dir` from an earlier run has changed.
    """
    settings = settings or Settings()
    clock = clock or datetime.now(UTC)
    limit = settings.max_reject_share if max_reject_share is None else max_reject_share
    if not 0.0 <= limit <= 1.0:
        raise ConfigError("--max-reject-share", f"must be between 0 and 1, got {limit}")
    paths = sources.resolve(source)
    found = sources.scan_all(paths).collect_schema().names()
    found = [n for n in found if n not in (sources.SOURCE_FILE, sources.SOURCE_ROW)]
    resolved = resolve_columns(found, columns or {}, str(source))
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ingest-", dir=out_dir))
    try:
        counts, time_stats = _write(
            paths, resolved, events or {}, settings, staging, catalog, clock
        )
        summary = {
            "source": str(source),
            "files": [str(p) for p in paths],
            "columns": resolved,
            **_summary(staging, counts),
            "unknown_event_types": _unknown_events(staging, resolved[EVENT]),
            "max_reject_share": limit,
            "accepted_time_range": [
                settings.earliest_event_time.isoformat(),
                f"ingest time + {settings.future_tolerance}",
            ],
            "event_time": _time_summary(time_stats, resolved[TIME], settings, clock),
        }
        if summary["rows_read"] == 0:
            raise InputError(source, "has no data rows")
        if summary["reject_share"] > limit:
            failed = out_dir / FAILED_DIR
            shutil.rmtree(failed, ignore_errors=True)
            failed.mkdir()
            (staging / REJECTS_FILE).replace(failed / REJECTS_FILE)
            summary["outputs"] = {"rejects": str(failed / REJECTS_FILE)}
            (failed / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
            raise RejectLimitError(
                source,
                summary,
                f"{summary['rejected']:,} of {summary['rows_read']:,} rows rejected "
                f"({summary['reject_share']:.2%} > limit {limit:.2%}); nothing published. "
                f"Reasons: {summary['rejects_by_reason']}."
                f"{_explain(summary, failed / REJECTS_FILE, settings)}"
                f" Rejected rows: {failed / REJECTS_FILE}. "
                "Fix the input, map columns/events, or raise --max-reject-share",
            )
        return _publish(staging, out_dir, summary)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Move the run's files into place; a catalog left by an earlier run is removed."""
    outputs = {}
    for name in (EVENTS_FILE, REJECTS_FILE, CATALOG_FILE):
        target = out_dir / name
        if (staging / name).exists():
            (staging / name).replace(target)
            outputs[name.split(".")[0]] = str(target)
        else:
            target.unlink(missing_ok=True)
    summary["outputs"] = outputs
    tmp = staging / SUMMARY_FILE
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(out_dir / SUMMARY_FILE)
    shutil.rmtree(out_dir / FAILED_DIR, ignore_errors=True)
    return summary


def load_events(path: Path) -> pl.DataFrame:
    """A canonical event table from `path` (an ingest output folder or its events.parquet)."""
    file = path / EVENTS_FILE if path.is_dir() else path
    if not file.exists():
        raise InputError(file, "no such file; run `audience ingest` or `audience generate` first")
    frame = pl.read_parquet(file)
    if frame.schema != EVENT_SCHEMA:
        raise InputError(file, f"is not a canonical event table: schema {dict(frame.schema)}")
    return frame
