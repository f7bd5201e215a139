"""Parse event times written any common way into UTC timestamps, row by row.

Real logs mix formats (an export switches from dates to ISO times; one source
writes epoch milliseconds). Each row is tried against every supported form and
the first that parses wins; a row none parses stays null and is rejected by
ingest with its reason. Supported, per value:

- ISO-8601 date-times with `T` or a space, optional fraction, optional offset
  (`Z`, `+02:00`): with an offset converted to UTC, without one taken as UTC;
- dates (`2022-10-01`, `2022/10/01`): midnight UTC;
- epoch numbers: seconds below 1e11, milliseconds below 1e14, else microseconds
  (1e11 s is the year 5138 and 1e11 ms is 1973, so the ranges cannot collide
  for any plausible log).
"""

from __future__ import annotations

from typing import Final

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


def _from_epoch(number: pl.Expr) -> pl.Expr:
    magnitude = number.abs()
    micros = (
        pl.when(magnitude < 1e11)
        .then(number * 1e6)
        .when(magnitude < 1e14)
        .then(number * 1e3)
        .otherwise(number)
    )
    return pl.from_epoch(micros.round().cast(pl.Int64), time_unit="us").dt.replace_time_zone("UTC")


def _from_text(text: pl.Expr) -> pl.Expr:
    text = text.str.strip_chars()
    offset_text = text.str.replace(r"[Zz]$", "+00:00")
    numeric = pl.when(text.str.contains(r"^-?\d+(\.\d+)?$")).then(text.cast(pl.Float64))
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
