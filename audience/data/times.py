"""Parse event times written any common way into UTC timestamps, and say which are real.

Real logs mix formats (an export switches from dates to ISO times; one source
writes epoch milliseconds). Each row is tried against every supported form and
the first that parses wins; a row none parses stays null and is rejected by
ingest with its reason. Supported, per value:

- ISO-8601 date-times with `T` or a space, optional fraction, optional offset
  (`Z`, `+02:00`): with an offset converted to UTC, without one taken as UTC;
- dates (`2022-10-01`, `2022/10/01`): midnight UTC;
- epoch numbers: seconds below 1e11, milliseconds below 1e14, else microseconds
  (1e11 s is the year 5138 and 1e11 ms is 1973, so the ranges cannot collide
  for any plausible log). One exception: 9999-12-31, the "no end" placeholder,
  written in seconds or milliseconds is read in that unit (by magnitude it would
  be a time in 1978), so that it is rejected as a placeholder.

A parsed time is kept unless it cannot be real (`checks`): logs of any era are
valid, but not times before the floor (1970-01-01 by default), the placeholders
exports write for "unknown", or times after the run's clock plus a tolerance.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import polars as pl

_WITH_OFFSET: Final = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_NAIVE: Final = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
)
_UTC: Final = pl.Datetime("us", "UTC")
_NUMBER: Final = r"^-?\d+(\.\d+)?$"
_OFFSET: Final = r"([Zz]|[+-]\d\d:?\d\d)$"

#: 9999-12-31 in epoch seconds: [start, end).
_LAST_DAY: Final = (253_402_214_400, 253_402_300_800)
#: Epoch unit names by the factor that turns the number into microseconds.
EPOCH_UNITS: Final = {1e6: "epoch seconds", 1e3: "epoch milliseconds", 1.0: "epoch microseconds"}


def _whole_day(year: int, month: int, day: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, day, tzinfo=UTC)
    return start, start.replace(hour=23, minute=59, second=59, microsecond=999999)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Times that exports write for "unknown": (label, first, last instant), both inclusive.
#: Epoch zero is the one instant (a real event may fall later that day); 1900-01-01 and
#: 9999-12-31 are the whole UTC day, as exports write them at midnight or at 23:59:59.
PLACEHOLDERS: Final = (
    ("1970-01-01T00:00:00", _EPOCH, _EPOCH),
    ("1900-01-01", *_whole_day(1900, 1, 1)),
    ("9999-12-31", *_whole_day(9999, 12, 31)),
)
FUTURE: Final = "event_time in the future"


def placeholder_reason(label: str) -> str:
    return f"event_time is a placeholder for unknown ({label})"


def floor_reason(earliest: datetime) -> str:
    return f"event_time before {instant(earliest)}"


def instant(value: datetime) -> str:
    """A time in UTC: a date when it is midnight, else ISO-8601 (for reasons and messages)."""
    value = value.astimezone(UTC)
    midnight = value.replace(hour=0, minute=0, second=0, microsecond=0)
    return value.date().isoformat() if value == midnight else value.isoformat()


def _epoch_factor(number: pl.Expr) -> pl.Expr:
    """Microseconds per unit of an epoch number, told apart by magnitude (see the docstring)."""
    low, high = _LAST_DAY
    return (
        pl.when(number.is_between(low, high, closed="left"))
        .then(1e6)
        .when(number.is_between(low * 1e3, high * 1e3, closed="left"))
        .then(1e3)
        .when(number.abs() < 1e11)
        .then(1e6)
        .when(number.abs() < 1e14)
        .then(1e3)
        .otherwise(1.0)
    )


def _from_epoch(number: pl.Expr) -> pl.Expr:
    micros = number * _epoch_factor(number)
    return pl.from_epoch(
        micros.round().cast(pl.Int64, strict=False), time_unit="us"
    ).dt.replace_time_zone("UTC")


def _epoch_unit(number: pl.Expr) -> pl.Expr:
    return _epoch_factor(number).replace_strict(EPOCH_UNITS, return_dtype=pl.String)


def _from_text(text: pl.Expr) -> pl.Expr:
    text = text.str.strip_chars()
    offset_text = text.str.replace(r"[Zz]$", "+00:00")
    numeric = pl.when(text.str.contains(_NUMBER)).then(text.cast(pl.Float64))
    return pl.coalesce(
        _from_epoch(numeric),
        *(
            offset_text.str.to_datetime(f, strict=False, time_unit="us").dt.convert_time_zone("UTC")
            for f in _WITH_OFFSET
        ),
        *(
            text.str.to_datetime(f, strict=False, time_unit="us").dt.replace_time_zone("UTC")
            for f in _NAIVE
        ),
    )


def parse_time(column: str, dtype: pl.DataType) -> pl.Expr:
    """An expression giving `column` as UTC microsecond timestamps, null where unparseable."""
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        aware = (
            col.dt.convert_time_zone("UTC") if dtype.time_zone else col.dt.replace_time_zone("UTC")
        )
        return aware.dt.cast_time_unit("us")
    if isinstance(dtype, pl.Date):
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype.is_numeric():
        return _from_epoch(col.cast(pl.Float64))
    return _from_text(col.cast(pl.String)).cast(_UTC)


def time_format(column: str, dtype: pl.DataType) -> pl.Expr:
    """How each value of `column` is read, in words ("epoch seconds", "date", ...).

    Told from the column's type and the value's shape, not by parsing again, so it costs
    a few string tests per row; meaningful only where `parse_time` gives a time.
    """
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        zone = f", {dtype.time_zone}]" if dtype.time_zone else "] taken as UTC"
        return pl.lit(f"Parquet datetime[{dtype.time_unit}{zone}")
    if isinstance(dtype, pl.Date):
        return pl.lit("Parquet date at midnight UTC")
    if dtype.is_numeric():
        return pl.format(
            "{} from a Parquet {}", _epoch_unit(col.cast(pl.Float64)), pl.lit(str(dtype))
        )
    text = col.cast(pl.String).str.strip_chars()
    return (
        pl.when(text.str.contains(_NUMBER))
        .then(_epoch_unit(text.cast(pl.Float64, strict=False)))
        .when(text.str.contains(_OFFSET))
        .then(pl.lit("ISO-8601 date-time with offset"))
        .when(text.str.contains(":"))
        .then(pl.lit("ISO-8601 date-time without offset taken as UTC"))
        .otherwise(pl.lit("date at midnight UTC"))
    )


def checks(time: pl.Expr, earliest: datetime, latest: datetime) -> list[tuple[str, pl.Expr]]:
    """(reason, condition) for each way a parsed time cannot be real, first match wins.

    The placeholders come first, so that 1900-01-01 and 9999-12-31 get their own reason
    rather than the floor's or the future's.
    """
    found = [(placeholder_reason(label), time.is_between(a, b)) for label, a, b in PLACEHOLDERS]
    return [*found, (floor_reason(earliest), time < earliest), (FUTURE, time > latest)]


def time_reasons(earliest: datetime) -> tuple[str, ...]:
    """Every reason `checks` can give, in its order."""
    return (
        *(placeholder_reason(label) for label, _, _ in PLACEHOLDERS),
        floor_reason(earliest),
        FUTURE,
    )


def describe_tolerance(tolerance: timedelta) -> str:
    """'1 day', '36 hours', '90 seconds': a tolerance as a person writes it."""
    seconds = int(tolerance.total_seconds())
    for size, unit in ((86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second")):
        if seconds % size == 0 and seconds:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "0 seconds"


#: What moves each limit: the command-line flag, then the environment variable.
FLOOR_FLAGS: Final = "--earliest-time, or AUDIENCE_EARLIEST_EVENT_TIME"
TOLERANCE_FLAGS: Final = "--future-tolerance, or AUDIENCE_FUTURE_TOLERANCE"
ISO: Final = "%Y-%m-%dT%H:%M:%S%.f%:z"


def explain(reason: str, column: dict[str, Any]) -> str:
    """What the time check `reason` rejected, the column as read, and what changes the limit.

    `column` is ingest's summary of the time column (its "event_time" entry).
    """
    check = column["rejected_by_check"][reason]
    first, last = check["range"]
    whole_first, whole_last = column["observed_range"]
    values = f"all {first}" if first == last else f"from {first} to {last}"
    text = (
        f"those values, read as {_listed(check['read_as'])}, are {values}; "
        f"column '{column['column']}' as a whole, from {whole_first} to {whole_last}. "
        f"Times are accepted from {column['accepted_from']} ({FLOOR_FLAGS}) to "
        f"{column['accepted_until']}, the run's clock plus {column['future_tolerance']} "
        f"({TOLERANCE_FLAGS}). "
    )
    if reason == FUTURE:
        return text + (
            "If these times are real, raise --future-tolerance; if they are far ahead, check "
            "the epoch unit: numbers below 1e11 are read as seconds, below 1e14 as "
            "milliseconds, larger ones as microseconds"
        )
    if reason in {placeholder_reason(label) for label, _, _ in PLACEHOLDERS}:
        return text + (
            "Exports write this value for an unknown time, so no setting accepts it: fill in "
            "the times, or let these rows go with --max-reject-share"
        )
    return text + f"To read an older log, lower the floor: --earliest-time {first.split('T')[0]}"


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{label} ({rows:,} row{'s' * (rows != 1)})" for label, rows in counts.items())
