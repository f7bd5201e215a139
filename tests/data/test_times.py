"""Which event times are real (issue #21): each check's reason, how a value was read, and
where the floor and the tolerance come from (flag over environment over default)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from audience.data.ingest import ingest, load_events
from audience.data.times import describe_tolerance, parse_time, time_format
from audience.errors import ConfigError
from audience.settings import Settings, configured
from tests.data.test_ingest import SEED_HEADER, utc, write

CLOCK = utc(2022, 10, 1, 12)
EPOCH_ZERO = "event_time is a placeholder for unknown (1970-01-01T00:00:00)"
NINETEEN_HUNDRED = "event_time is a placeholder for unknown (1900-01-01)"
NO_END = "event_time is a placeholder for unknown (9999-12-31)"
FUTURE = "event_time in the future"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1997-09-20T03:05:10", None),  # an old log is a valid log
        ("874724710", None),
        ("1970-01-01T00:00:01", None),  # the floor is inclusive; only epoch zero is a placeholder
        ("1970-01-02", None),
        ("0", EPOCH_ZERO),
        ("0000000000000", EPOCH_ZERO),
        ("1970-01-01", EPOCH_ZERO),
        ("1970-01-01T00:00:00Z", EPOCH_ZERO),
        ("1970-01-01T01:00:00+01:00", EPOCH_ZERO),
        ("1969-12-31T23:59:59", "event_time before 1970-01-01"),
        ("-86400", "event_time before 1970-01-01"),
        ("1899-12-30", "event_time before 1970-01-01"),  # Excel's day zero: merely too early
        ("1900-01-01", NINETEEN_HUNDRED),
        ("1900-01-01 00:00:00", NINETEEN_HUNDRED),
        ("1900-01-01T23:59:59", NINETEEN_HUNDRED),  # the whole day
        ("1900-01-02", "event_time before 1970-01-01"),
        ("9999-12-31", NO_END),
        ("9999-12-31T23:59:59.999999", NO_END),
        ("253402300799", NO_END),  # in epoch seconds: by magnitude alone, a time in 1978
        ("253402300799000", NO_END),  # in epoch milliseconds
        ("2022-10-02T12:00:00", None),  # the clock plus the default tolerance, exactly
        ("2022-10-02T12:00:01", FUTURE),
        ("2999-01-01", FUTURE),
        ("99999999999999999999", "unparseable event_time"),  # no time has that many microseconds
    ],
)
def test_each_time_check_has_its_own_reason(tmp_path: Path, text: str, reason: str | None) -> None:
    src = write(tmp_path / "log.csv", f"{SEED_HEADER}c1,p1,X,cart,{text}\n")
    summary = ingest(src, tmp_path / "out", max_reject_share=1.0, clock=CLOCK)
    assert summary["rejects_by_reason"] == ({reason: 1} if reason else {})
    if reason and reason != "unparseable event_time":
        assert summary["event_time"]["rejected_by_check"][reason]["rows"] == 1


def test_the_floor_and_the_tolerance_come_from_the_settings(tmp_path: Path) -> None:
    rows = "c1,p1,X,cart,1994-12-31\nc1,p1,X,cart,1995-01-01\nc1,p1,X,cart,2022-10-03T12:00:00\n"
    src = write(tmp_path / "log.csv", SEED_HEADER + rows)
    settings = Settings(earliest_event_time="1995-01-01", future_tolerance="P2D")  # type: ignore[arg-type]
    summary = ingest(src, tmp_path / "out", max_reject_share=1.0, settings=settings, clock=CLOCK)
    assert summary["rejects_by_reason"] == {"event_time before 1995-01-01": 1}
    assert load_events(tmp_path / "out").height == 2
    assert summary["event_time"]["accepted_from"] == "1995-01-01T00:00:00+00:00"
    assert summary["event_time"]["accepted_until"] == "2022-10-03T12:00:00+00:00"
    assert summary["event_time"]["future_tolerance"] == "2 days"
    rejected = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert rejected.select("source_row", "reason").rows() == [(1, "event_time before 1995-01-01")]


def test_a_floor_with_an_offset_is_compared_in_utc(tmp_path: Path) -> None:
    src = write(tmp_path / "log.csv", SEED_HEADER + "c1,p1,X,cart,1994-12-31T23:30:00Z\n")
    settings = Settings(earliest_event_time="1995-01-01T01:00:00+02:00")  # type: ignore[arg-type]
    summary = ingest(src, tmp_path / "out", settings=settings, clock=CLOCK)
    assert summary["events"] == 1
    assert summary["event_time"]["accepted_from"] == "1994-12-31T23:00:00+00:00"


@pytest.mark.parametrize(
    ("values", "dtype", "label"),
    [
        (["874724710"], pl.String(), "epoch seconds"),
        (["874724710123"], pl.String(), "epoch milliseconds"),
        (["874724710123456"], pl.String(), "epoch microseconds"),
        (["1997-09-20"], pl.String(), "date at midnight UTC"),
        (["1997/09/20"], pl.String(), "date at midnight UTC"),
        (["1997-09-20 03:05:10"], pl.String(), "ISO-8601 date-time without offset taken as UTC"),
        (["1997-09-20T03:05:10Z"], pl.String(), "ISO-8601 date-time with offset"),
        (["1997-09-20T05:05:10+02:00"], pl.String(), "ISO-8601 date-time with offset"),
        ([874724710], pl.Int64(), "epoch seconds from a Parquet Int64"),
        ([874724710123], pl.Int64(), "epoch milliseconds from a Parquet Int64"),
        ([datetime(1997, 9, 20, 3, 5, 10)], pl.Datetime("ns"), "Parquet datetime[ns] taken as UTC"),
        ([datetime(1997, 9, 20, 3, 5, 10)], pl.Datetime("us", "UTC"), "Parquet datetime[us, UTC]"),
    ],
)
def test_how_a_value_was_read_is_named(
    values: list[object], dtype: pl.DataType, label: str
) -> None:
    frame = pl.DataFrame({"t": pl.Series(values, dtype=dtype)})
    read = frame.select(parse_time("t", dtype).alias("time"), time_format("t", dtype).alias("as"))
    assert read.item(0, "as") == label
    assert read.item(0, "time").year == 1997


def test_flag_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = {"earliest_event_time": ("--earliest-time", None)}
    assert configured(flags).earliest_event_time == utc(1970, 1, 1)
    monkeypatch.setenv("AUDIENCE_EARLIEST_EVENT_TIME", "2000-01-01")
    assert configured(flags).earliest_event_time == utc(2000, 1, 1)
    flags = {"earliest_event_time": ("--earliest-time", "1995-06-01")}
    assert configured(flags).earliest_event_time == utc(1995, 6, 1)
    monkeypatch.setenv("AUDIENCE_FUTURE_TOLERANCE", "3600")  # seconds, as text
    tolerance = {"future_tolerance": ("--future-tolerance", None)}
    assert configured(tolerance).future_tolerance == timedelta(hours=1)
    tolerance = {"future_tolerance": ("--future-tolerance", "PT36H")}
    assert configured(tolerance).future_tolerance == timedelta(hours=36)


@pytest.mark.parametrize(
    ("field", "flag", "value", "message"),
    [
        ("earliest_event_time", "--earliest-time", "1995", "such as 1995-01-01; got '1995'"),
        ("earliest_event_time", "--earliest-time", "last year", "valid datetime"),
        ("future_tolerance", "--future-tolerance", "-P1D", "greater than or equal to 0"),
        ("future_tolerance", "--future-tolerance", "soon", "valid timedelta"),
    ],
)
def test_a_bad_value_names_its_flag(field: str, flag: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        configured({field: (flag, value)})
    assert err.value.parameter == flag


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIENCE_FUTURE_TOLERANCE", "soon")
    with pytest.raises(ConfigError) as err:
        configured({"future_tolerance": ("--future-tolerance", None)})
    assert err.value.parameter == "AUDIENCE_FUTURE_TOLERANCE"
    assert configured({"future_tolerance": ("--future-tolerance", "P1D")}).future_tolerance


@pytest.mark.parametrize(
    ("tolerance", "words"),
    [
        (timedelta(days=1), "1 day"),
        (timedelta(days=2), "2 days"),
        (timedelta(hours=36), "36 hours"),
        (timedelta(seconds=90), "90 seconds"),
        (timedelta(0), "0 seconds"),
    ],
)
def test_tolerance_in_words(tolerance: timedelta, words: str) -> None:
    assert describe_tolerance(tolerance) == words
