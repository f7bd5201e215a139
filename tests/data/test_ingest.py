"""Ingest: every bad-input case of issue #2, the column and event mappings, each time format."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience.data.ingest import column_mapping, event_mapping, ingest, load_events
from audience.data.schema import CATALOG_SCHEMA, EVENT_SCHEMA
from audience.errors import ConfigError, InputError, MissingColumnError, RejectLimitError
from audience.settings import Settings

SEED_HEADER = "customer_id,product_id,product_name,Event,Event_Date\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_seed_004_format_reads_without_flags(tmp_path: Path) -> None:
    src = write(
        tmp_path / "log.csv",
        SEED_HEADER
        + "c1,p1,Phone X,purchased,2022-10-01\n"
        + "c2,p1,Phone X,cart,2022-10-02\n"
        + "c2,p2,Case,wishlist,2022-10-03\n",
    )
    summary = ingest(src, tmp_path / "out")
    events = load_events(tmp_path / "out")
    assert events.schema == EVENT_SCHEMA
    assert events.rows() == [
        ("c1", "p1", "purchased", utc(2022, 10, 1)),
        ("c2", "p1", "cart", utc(2022, 10, 2)),
        ("c2", "p2", "wishlist", utc(2022, 10, 3)),
    ]
    assert summary["columns"]["user_id"] == "customer_id"
    assert (summary["events"], summary["rejected"], summary["users"], summary["products"]) == (
        3,
        0,
        2,
        2,
    )
    catalog = pl.read_parquet(tmp_path / "out" / "products.parquet")
    assert catalog.schema == CATALOG_SCHEMA
    assert catalog.select("product_id", "product_name").rows() == [
        ("p1", "Phone X"),
        ("p2", "Case"),
    ]


def test_column_and_event_mapping_reads_retailrocket_style(tmp_path: Path) -> None:
    src = write(
        tmp_path / "rr.csv",
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,addtocart,248676,\n"
        "1433221999827,111016,transaction,318965,4000\n",
    )
    mapping = event_mapping("view=search_keyword,addtocart=cart,transaction=purchased", Settings())
    columns = column_mapping("user=visitorid,product=itemid,event=event,time=timestamp")
    ingest(src, tmp_path / "out", columns=columns, events=mapping)
    events = load_events(tmp_path / "out")
    assert sorted(events.get_column("event_type")) == ["cart", "purchased", "search_keyword"]
    assert events.get_column("event_time").min() == datetime(
        2015, 6, 2, 5, 2, 12, 117000, tzinfo=UTC
    )


def test_mapped_column_that_does_not_exist_is_named(tmp_path: Path) -> None:
    src = write(tmp_path / "log.csv", SEED_HEADER + "c1,p1,X,cart,2022-10-01\n")
    with pytest.raises(
        MissingColumnError, match=r"'buyer'.*columns found: customer_id, product_id"
    ):
        ingest(src, tmp_path / "out", columns=column_mapping("user=buyer"))


def test_missing_required_column_names_it_and_lists_found(tmp_path: Path) -> None:
    src = write(tmp_path / "log.csv", "customer_id,product_id,Event\nc1,p1,cart\n")
    with pytest.raises(MissingColumnError) as err:
        ingest(src, tmp_path / "out")
    assert err.value.column == "event_time"
    assert err.value.found == ["customer_id", "product_id", "Event"]
    assert "customer_id, product_id, Event" in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-10-01", utc(2022, 10, 1)),
        ("2022/10/01", utc(2022, 10, 1)),
        ("2022-10-01 13:45:10", utc(2022, 10, 1, 13, 45, 10)),
        ("2022-10-01T13:45:10.250", datetime(2022, 10, 1, 13, 45, 10, 250000, tzinfo=UTC)),
        ("2022-10-01T13:45", utc(2022, 10, 1, 13, 45)),
        ("2022-10-01T13:45:10Z", utc(2022, 10, 1, 13, 45, 10)),
        ("2022-10-01T13:45:10+02:00", utc(2022, 10, 1, 11, 45, 10)),
        ("2022-10-01 13:45:10-0500", utc(2022, 10, 1, 18, 45, 10)),
        ("1664631910", utc(2022, 10, 1, 13, 45, 10)),
        ("1664631910.5", datetime(2022, 10, 1, 13, 45, 10, 500000, tzinfo=UTC)),
        ("1664631910000", utc(2022, 10, 1, 13, 45, 10)),
        ("1664631910000000", utc(2022, 10, 1, 13, 45, 10)),
    ],
)
def test_each_time_format_parses_to_utc(tmp_path: Path, text: str, expected: datetime) -> None:
    src = write(tmp_path / "log.csv", f"{SEED_HEADER}c1,p1,X,cart,{text}\n")
    ingest(src, tmp_path / "out")
    assert load_events(tmp_path / "out").get_column("event_time").to_list() == [expected]


@pytest.mark.parametrize(
    "column",
    [
        pl.Series("event_time", [datetime(2022, 10, 1, 12)]),
        pl.Series("event_time", [datetime(2022, 10, 1, 14)]).dt.replace_time_zone("Europe/Paris"),
        pl.Series("event_time", [1664625600000]),
        pl.Series("event_time", [1664625600]),
        pl.Series("event_time", ["2022-10-01T12:00:00Z"]),
    ],
    ids=["naive-datetime", "aware-datetime", "epoch-ms-int", "epoch-s-int", "text"],
)
def test_parquet_time_columns_of_any_type(tmp_path: Path, column: pl.Series) -> None:
    frame = pl.DataFrame({"user_id": ["u"], "product_id": ["p"], "event_type": ["cart"]})
    frame.with_columns(column).write_parquet(tmp_path / "log.parquet")
    ingest(tmp_path / "log.parquet", tmp_path / "out")
    assert load_events(tmp_path / "out").get_column("event_time").to_list() == [
        utc(2022, 10, 1, 12)
    ]


def test_parquet_date_column(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "user_id": ["u"],
            "product_id": ["p"],
            "event_type": ["cart"],
            "event_time": [date(2022, 10, 1)],
        }
    ).write_parquet(tmp_path / "log.parquet")
    ingest(tmp_path / "log.parquet", tmp_path / "out")
    assert load_events(tmp_path / "out").get_column("event_time").to_list() == [utc(2022, 10, 1)]


BAD_ROWS = (
    "c1,p1,X,cart,2022-10-01\n"  # row 1: valid
    ",p1,X,cart,2022-10-01\n"  # row 2: null user
    "  ,p1,X,cart,2022-10-01\n"  # row 3: blank user
    "c2,,X,cart,2022-10-01\n"  # row 4: null product
    "c2,p2,X,,2022-10-01\n"  # row 5: no event
    "c2,p2,X,view,2022-10-01\n"  # row 6: unknown event
    "c2,p2,X,cart,\n"  # row 7: no time
    "c2,p2,X,cart,yesterday\n"  # row 8: unparseable time
    "c2,p2,X,cart,0\n"  # row 9: epoch 0, the placeholder for an unknown time
    "c2,p2,X,cart,2999-01-01\n"  # row 10: in the future
    "c1,p1,X,cart,2022-10-01\n"  # row 11: duplicate of row 1
    "c1,p1,X,purchased,2022-10-01\n"  # row 12: valid
)


def test_bad_rows_are_quarantined_with_row_and_reason(tmp_path: Path) -> None:
    src = write(tmp_path / "log.csv", SEED_HEADER + BAD_ROWS)
    summary = ingest(src, tmp_path / "out", max_reject_share=1.0)
    rejects = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert rejects.select("source_row", "reason").rows() == [
        (2, "missing user_id"),
        (3, "missing user_id"),
        (4, "missing product_id"),
        (5, "missing event_type"),
        (6, "unknown event_type"),
        (7, "missing event_time"),
        (8, "unparseable event_time"),
        (9, "event_time is a placeholder for unknown (1970-01-01T00:00:00)"),
        (10, "event_time in the future"),
    ]
    assert rejects.get_column("source_file").unique().to_list() == [str(src)]
    # Rejected rows keep the raw values as read, under the raw column names.
    assert rejects.filter(pl.col("source_row") == 8).get_column("Event_Date").item() == "yesterday"
    assert rejects.filter(pl.col("source_row") == 6).get_column("Event").item() == "view"
    assert summary["rejects_by_reason"] == {
        "missing user_id": 2,
        "missing product_id": 1,
        "missing event_type": 1,
        "unknown event_type": 1,
        "missing event_time": 1,
        "unparseable event_time": 1,
        "event_time is a placeholder for unknown (1970-01-01T00:00:00)": 1,
        "event_time in the future": 1,
    }
    assert summary["unknown_event_types"] == {"view": 1}
    assert (summary["rows_read"], summary["events"], summary["duplicates_removed"]) == (12, 2, 1)
    assert summary["rejected"] == 9


def test_event_names_are_case_and_space_insensitive(tmp_path: Path) -> None:
    src = write(tmp_path / "log.csv", SEED_HEADER + "c1,p1,X, Purchased ,2022-10-01\n")
    ingest(src, tmp_path / "out")
    assert load_events(tmp_path / "out").get_column("event_type").to_list() == ["purchased"]


def test_extra_event_type_declared_in_settings_is_accepted(tmp_path: Path) -> None:
    src = write(tmp_path / "log.csv", SEED_HEADER + "c1,p1,X,view,2022-10-01\n")
    custom = Settings(event_weights={"view": 0.5})
    assert custom.event_weights["purchased"] == 5.0
    ingest(src, tmp_path / "out", settings=custom)
    assert load_events(tmp_path / "out").get_column("event_type").to_list() == ["view"]


def test_event_mapping_to_an_unknown_type_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--events.*\['clicked'\]"):
        event_mapping("view=clicked", Settings())


@pytest.mark.parametrize("text", ["user", "user=", "=x", "colour=red"])
def test_malformed_column_mapping_names_the_parameter(text: str) -> None:
    with pytest.raises(ConfigError, match="--columns"):
        column_mapping(text)


def test_too_many_rejects_fails_and_keeps_earlier_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = write(tmp_path / "good.csv", SEED_HEADER + "c1,p1,X,cart,2022-10-01\n")
    ingest(good, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = write(tmp_path / "bad.csv", SEED_HEADER + BAD_ROWS)
    with pytest.raises(RejectLimitError) as err:
        ingest(bad, out)
    assert err.value.summary["rejected"] == 9
    assert "9 of 12 rows rejected" in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    kept = pl.read_parquet(out / "failed_ingest" / "rejects.parquet")
    assert kept.height == 9
    assert not [p for p in out.iterdir() if p.name.startswith(".ingest-")]
    ingest(bad, out, max_reject_share=0.9)
    assert load_events(out).height == 2
    assert not (out / "failed_ingest").exists()


def test_glob_reads_every_file_and_names_each_source(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", SEED_HEADER + "c1,p1,X,cart,2022-10-01\n")
    write(tmp_path / "b.csv", SEED_HEADER + "c2,p2,X,cart,2022-10-02\n,p2,X,cart,2022-10-02\n")
    summary = ingest(str(tmp_path / "*.csv"), tmp_path / "out", max_reject_share=1.0)
    assert summary["files"] == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert load_events(tmp_path / "out").height == 2
    rejects = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert rejects.select("source_file", "source_row").rows() == [(str(tmp_path / "b.csv"), 2)]


def test_semicolon_and_tab_separated_files(tmp_path: Path) -> None:
    write(tmp_path / "s.csv", SEED_HEADER.replace(",", ";") + "c1;p1;X;cart;2022-10-01\n")
    ingest(tmp_path / "s.csv", tmp_path / "o1")
    write(tmp_path / "t.tsv", SEED_HEADER.replace(",", "\t") + "c1\tp1\tX\tcart\t2022-10-01\n")
    ingest(tmp_path / "t.tsv", tmp_path / "o2")
    assert load_events(tmp_path / "o1").equals(load_events(tmp_path / "o2"))


def test_separate_catalog_file(tmp_path: Path) -> None:
    src = write(tmp_path / "log.csv", SEED_HEADER + "c1,p1,X,cart,2022-10-01\n")
    cat = write(
        tmp_path / "cat.csv", "sku,title,category,price\np1,Phone,Phones,199.5\n,NoId,X,1\n"
    )
    ingest(src, tmp_path / "out", columns=column_mapping("product=product_id"), catalog=cat)
    catalog = pl.read_parquet(tmp_path / "out" / "products.parquet")
    assert catalog.rows() == [("p1", "Phone", "Phones", 199.5)]


def bad_file(tmp_path: Path, kind: str) -> Path:
    files = {
        "empty": ("log.csv", b""),
        "header-only": ("log.csv", SEED_HEADER.encode()),
        "not-csv-suffix": ("log.xlsx", b"PK\x03\x04 zip"),
        "binary-csv": ("log.csv", b"\x00\x01\x02garbage\x00"),
        "fake-parquet": ("log.parquet", SEED_HEADER.encode()),
        "latin-1": ("log.csv", (SEED_HEADER + "c1,p1,Café,cart,2022-10-01\n").encode("latin-1")),
        "utf-16": ("log.csv", (SEED_HEADER + "c1,p1,X,cart,2022-10-01\n").encode("utf-16")),
        "ragged": ("log.csv", (SEED_HEADER + "c1,p1,X,cart,2022-10-01,extra\n").encode()),
    }
    name, data = files[kind]
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_FILES = {
    "empty": "is empty",
    "header-only": "header but no data rows",
    "not-csv-suffix": "unsupported file type '.xlsx'",
    "binary-csv": "binary data",
    "fake-parquet": "not a Parquet file",
    "latin-1": "not UTF-8: line 2 has byte 0xe9",
    "utf-16": "UTF-16",
    "ragged": "data row 1 has 6 fields but the header has 5",
}


@pytest.mark.parametrize(("kind", "message"), BAD_FILES.items())
def test_unreadable_files_give_one_clear_error(tmp_path: Path, kind: str, message: str) -> None:
    path = bad_file(tmp_path, kind)
    with pytest.raises(InputError, match=message) as err:
        ingest(path, tmp_path / "out")
    assert err.value.path == str(path)


def test_bad_encoding_deep_in_a_large_file_names_the_line(tmp_path: Path) -> None:
    good = "".join(f"c{i},p{i},Name,cart,2022-10-01\n" for i in range(5000))
    path = tmp_path / "log.csv"
    path.write_bytes(
        (SEED_HEADER + good).encode() + "c,p,Crème,cart,2022-10-01\n".encode("latin-1")
    )
    with pytest.raises(InputError, match="line 5002 has byte 0xe8"):
        ingest(path, tmp_path / "out")


@pytest.mark.parametrize(
    ("source", "message"),
    [("missing.csv", "no such file"), ("*.nothing", "no files match"), (".", "is a directory")],
)
def test_bad_paths(tmp_path: Path, source: str, message: str) -> None:
    target = str(tmp_path / source) if source != "." else str(tmp_path)
    with pytest.raises(InputError, match=message):
        ingest(target, tmp_path / "out")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2", "", " "]),
            st.sampled_from(["p1", "p2", ""]),
            st.sampled_from(["cart", "purchased", "Rating", "click", ""]),
            st.sampled_from(["2022-10-01", "2022-10-02T10:00:00Z", "1664582400", "nope", "0", ""]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_every_row_is_accounted_for(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, ...]]
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    body = "".join(",".join((u, p, "n", e, t)) + "\n" for u, p, e, t in rows)
    summary = ingest(write(tmp / "log.csv", SEED_HEADER + body), tmp / "out", max_reject_share=1.0)
    assert summary["rows_read"] == len(rows)
    assert summary["events"] + summary["duplicates_removed"] + summary["rejected"] == len(rows)
    assert sum(summary["rejects_by_reason"].values()) == summary["rejected"]
    events = load_events(tmp / "out")
    assert events.height == events.unique().height == summary["events"]
    assert events.get_column("event_time").is_sorted()


# --- logs of any era (issue #21) ------------------------------------------------------------


def ratings_1990s(path: Path, rows: int = 100_000, seed: int = 0) -> Path:
    """A ratings log shaped like MovieLens-100k: 943 users rate at least 20 of 1,682 items
    (popular ones more), 1 to 5 stars, at epoch seconds from 1997-09-20 to 1998-04-22; most
    users rate in one sitting, the rest over weeks or months. About `rows` ratings."""
    rng = np.random.default_rng(seed)
    users, items = 943, 1682
    start, end = 874_724_710, 893_286_638
    weights = rng.lognormal(0.0, 1.0, users)
    per_user = np.minimum(20 + rng.multinomial(rows - 20 * users, weights / weights.sum()), 737)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    picks = [rng.choice(items, n, replace=False, p=popularity / popularity.sum()) for n in per_user]
    first = rng.integers(start, end - 86_400, users)
    span = np.where(rng.random(users) < 0.6, 4 * 3_600, rng.exponential(60 * 86_400, users))
    last = np.minimum(end, first + span.astype(np.int64))
    pl.DataFrame(
        {
            "user_id": np.repeat(np.arange(1, users + 1), per_user),
            "item_id": np.concatenate(picks) + 1,
            "rating": rng.choice(5, int(per_user.sum()), p=[0.06, 0.11, 0.27, 0.34, 0.22]) + 1,
            "timestamp": rng.integers(np.repeat(first, per_user), np.repeat(last, per_user) + 1),
        }
    ).write_csv(path)
    return path


#: A rating is the event; its stars are the event names.
RATINGS = {"columns": "event=rating", "events": "1=rating,2=rating,3=rating,4=rating,5=rating"}


def test_a_1990s_ratings_log_is_read_whole(tmp_path: Path) -> None:
    src = ratings_1990s(tmp_path / "ratings.csv")
    summary = ingest(
        src,
        tmp_path / "out",
        columns=column_mapping(RATINGS["columns"]),
        events=event_mapping(RATINGS["events"], Settings()),
    )
    assert summary["rejected"] == 0
    assert summary["rows_read"] == summary["events"] > 90_000
    assert summary["columns"]["event_time"] == "timestamp"
    assert summary["first_event"].startswith("1997-09-2")
    assert summary["last_event"].startswith("1998-04-2")
    assert summary["event_time"]["read_as"] == {"epoch seconds": summary["rows_read"]}
    assert summary["event_time"]["observed_range"] == [
        summary["first_event"],
        summary["last_event"],
    ]
    assert (summary["users"], summary["event_mix"]) == (943, {"rating": summary["events"]})


def test_reject_limit_names_the_check_the_range_how_read_and_the_flags(tmp_path: Path) -> None:
    rows = "".join(f"u{i},p{i % 7},X,cart,{874_724_710 + 86_400 * i}\n" for i in range(200))
    src = write(tmp_path / "log.csv", SEED_HEADER + rows)
    floor = Settings(earliest_event_time="2000-01-01")  # type: ignore[arg-type]
    with pytest.raises(RejectLimitError) as err:
        ingest(src, tmp_path / "out", settings=floor, clock=utc(2022, 10, 1))
    message = str(err.value)
    assert "200 of 200 rows rejected" in message
    assert "All of them (200) by one check, 'event_time before 2000-01-01'" in message
    assert "read as epoch seconds (200 rows)" in message
    assert "from 1997-09-20T03:05:10+00:00 to 1998-04-07T03:05:10+00:00" in message
    assert "accepted from 2000-01-01T00:00:00+00:00 (--earliest-time, or AUDIENCE_" in message
    assert "to 2022-10-02T00:00:00+00:00, the run's clock plus 1 day (--future-tolerance" in message
    assert "--earliest-time 1997-09-20" in message
    assert "\n" not in message
    check = err.value.summary["event_time"]["rejected_by_check"]["event_time before 2000-01-01"]
    assert check["rows"] == 200 and check["read_as"] == {"epoch seconds": 200}
    assert err.value.summary["accepted_time_range"][0] == "2000-01-01T00:00:00+00:00"
    saved = json.loads((tmp_path / "out" / "failed_ingest" / "ingest.json").read_text())
    assert saved["event_time"]["observed_range"] == check["range"]


def test_reject_limit_on_a_parquet_datetime_column_names_its_type(tmp_path: Path) -> None:
    times = pl.datetime_range(datetime(1998, 1, 1), datetime(1998, 1, 10), "1d", eager=True)
    frame = pl.DataFrame({"user_id": "u", "product_id": "p", "event_type": "purchased"})
    frame.join(times.cast(pl.Datetime("ns")).alias("ts").to_frame(), how="cross").write_parquet(
        tmp_path / "log.parquet"
    )
    floor = Settings(earliest_event_time="1998-01-05")  # type: ignore[arg-type]
    with pytest.raises(RejectLimitError, match="'event_time before 1998-01-05'") as err:
        ingest(tmp_path / "log.parquet", tmp_path / "out", settings=floor)
    assert "read as Parquet datetime[ns] taken as UTC (4 rows)" in str(err.value)
    assert "All of them (4)" in str(err.value)


def test_placeholders_are_not_moved_by_a_flag_and_the_message_says_so(tmp_path: Path) -> None:
    rows = "c1,p1,X,cart,1900-01-01\n" * 3 + "c1,p1,X,cart,2022-10-01\n"
    src = write(tmp_path / "log.csv", SEED_HEADER + rows)
    lowest = Settings(earliest_event_time="1800-01-01")  # type: ignore[arg-type]
    with pytest.raises(RejectLimitError) as err:
        ingest(src, tmp_path / "out", settings=lowest)
    message = str(err.value)
    assert "'event_time is a placeholder for unknown (1900-01-01)'" in message
    assert "are all 1900-01-01T00:00:00+00:00" in message
    assert "no setting accepts it" in message


@pytest.mark.parametrize(
    ("rows", "hint"),
    [
        ("c1,p1,X,view,2022-10-01\n" * 3, "unknown names are {'view': 3}; map them with --events"),
        ("c1,p1,X,cart,yesterday\n" * 3, "values of 'Event_Date' such as 'yesterday' match no"),
        (",p1,X,cart,2022-10-01\n" * 3, "is 'customer_id' the user column? Map yours with --col"),
    ],
)
def test_reject_limit_names_the_check_behind_most_and_its_flag(
    tmp_path: Path, rows: str, hint: str
) -> None:
    other = "c1,,X,cart,2022-10-01\n"  # rejected by another check
    src = write(tmp_path / "log.csv", SEED_HEADER + rows + other + "c1,p1,X,cart,2022-10-01\n")
    with pytest.raises(RejectLimitError, match="Most of them \\(3\\) by one check") as err:
        ingest(src, tmp_path / "out")
    assert hint in str(err.value)


def test_no_check_behind_most_rejects_adds_no_detail(tmp_path: Path) -> None:
    src = write(tmp_path / "log.csv", SEED_HEADER + BAD_ROWS)
    with pytest.raises(RejectLimitError) as err:
        ingest(src, tmp_path / "out")
    assert "by one check" not in str(err.value)
