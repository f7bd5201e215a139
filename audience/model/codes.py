"""The log with its users and products numbered once, in id order.

Every step of `audience train` after loading groups, joins and sorts these codes
(4 bytes each) instead of the ids: code i is the i-th smallest id, so code order is
id order and "ties by user_id" is "ties by user code". At 100x the sample (52M
events, 42M users, 41M listed products), grouping or joining the string ids cost
10-30 s and several GB each time; numbering both once, product table included, costs
15-18 s (the "numbering" progress lines in results/benchmark_train.json; docs/benchmarks.md).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import polars as pl

from audience.data.schema import (
    CATALOG_SCHEMA,
    CATEGORY,
    DEFAULT_EVENT_WEIGHTS,
    EVENT,
    PRICE,
    PRODUCT,
    PRODUCT_NAME,
    TIME,
    USER,
)

#: Ids of at most this many bytes are sorted as one 16-byte integer each: the id's bytes
#: padded with NULs, its length, and its row number (4 bytes). Sorting those numbers
#: (1 s for 52M at 100x the sample) replaces an arg-sort of the strings (46 s).
_KEY_BYTES = 11
_ROW = 1 << 32


def _order(ids: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(the row numbers of `ids` in id order, whether each is the first of its id there).

    Big-endian, a key's padded bytes compare like the id's bytes, and when one id is
    the other plus NULs the length byte puts the shorter first, as string order does;
    the row number only breaks ties between equal ids."""
    longest = ids.str.len_bytes().max()
    if ids.len() >= _ROW or (isinstance(longest, int) and longest > _KEY_BYTES):
        order = ids.arg_sort()
        ordered = ids.gather(order)
        return order, ordered.ne_missing(ordered.shift())
    # Padded with NULs to 16 bytes (a NUL is one byte, so 16 - bytes + characters of
    # them), read as one number; the length and the row go in its last five bytes (NULs:
    # the id has at most 11), added as a 64-bit number. Building the key by string
    # concatenation, or in 128-bit arithmetic, took twice as long; built a batch at a
    # time, the padded texts (3 GB for 93M ids) are never all held.
    size = pl.col("id").str.len_bytes()
    padded = pl.col("id").str.pad_end(16 - size + pl.col("id").str.len_chars(), "\0")
    low = size.cast(pl.UInt64) * _ROW + pl.col("row").cast(pl.UInt64)
    key = padded.cast(pl.Binary).bin.reinterpret(dtype=pl.UInt128, endianness="big")
    keyed = ids.to_frame("id").lazy().with_row_index("row").select(k=key + low.cast(pl.UInt128))
    keys = keyed.collect(engine="streaming").to_series()
    keys.sort(in_place=True)
    # A key's id differs from its neighbour's where the two keys differ above their row
    # (the low 32 bits), compared a batch at a time: as whole columns, the XOR of the 93M
    # product keys at 100x the sample took 1.5 GB and 1.3 s, on the streaming engine 0.1 s.
    changed = (pl.col("k") ^ pl.col("k").shift(1)) >= _ROW
    first = keys.to_frame("k").lazy().select(changed.fill_null(True)).collect(engine="streaming")
    return keys.cast(pl.UInt32, wrap_numerical=True), first.to_series()


def number(ids: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(each id's code (UInt32), the distinct ids in order): code i is the i-th smallest.
    The ids may not be null (canonical events and catalogs have none).
    By sorting (`_order`): a hash table of 42M string ids took 24 s."""
    order, first = _order(ids)
    codes = _ranks(order.to_numpy(), first.to_numpy())
    return pl.Series(ids.name, codes), ids.gather(order.filter(first))


@numba.njit(nogil=True, cache=True)
def _ranks(order: Any, first: Any) -> Any:
    """Each row's code, from the rows in id order and whether each is its id's first
    there: in one pass, where counting and then placing the codes as columns made three
    0.4 GB temporaries for the 93M product ids at 100x the sample."""
    codes = np.empty(order.size, np.uint32)
    code = -1
    for i in range(order.size):
        code += first[i]
        codes[order[i]] = code
    return codes


@dataclass(frozen=True)
class Log:
    """An event log with users and products numbered in id order.

    `events` holds user_id and product_id as codes (UInt32) and the event type as an
    Enum of every known type, sorted by user (each user's events in log order); `users`
    the user_id of each user code; `products` a row per product code, every product of
    the catalog or the log: its id, its category (null where not listed) and its number
    of events. The catalog's names and prices are read only as the product table is
    (`table`): at 100x the sample they held 1.8 GB for the whole of a train.
    """

    events: pl.DataFrame  # user_id (code), product_id (code), event_type, event_time; by user
    users: pl.Series  # user_id, by code
    products: pl.DataFrame  # product_id, category, interactions; by code
    listing: pl.LazyFrame  # product_name, price; by code (null where not listed)

    def named(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """`frame` with its user codes (user_id) replaced by the users' ids."""
        return frame.with_columns(spelled(USER, self.users))

    def table(self) -> pl.LazyFrame:
        """The product table: the catalog's columns and interactions, a row per code."""
        return pl.concat([self.products.lazy(), self.listing], how="horizontal").select(
            *CATALOG_SCHEMA, "interactions"
        )


def spelled(column: str, values: pl.Series) -> pl.Expr:
    """`values` (ids, texts, codes) at the codes in `column`, a batch at a time as a lazy
    table is read, so that a table of codes is spelled out without ever being held whole."""
    return pl.col(column).map_batches(values.gather, values.dtype, is_elementwise=True)


def coded(
    events: pl.DataFrame, catalog: pl.DataFrame | pl.LazyFrame | None, weights: dict[str, float]
) -> Log:
    """`events` (canonical) numbered, and the product table of the catalog (if any; its
    ids are distinct, as ingest writes it) and the log. A lazy catalog (a scanned file)
    is read for its ids and categories here, and for its names and prices when the
    product table is: it must not change in between.

    The event type is an Enum of every type in the log, in `weights` or in the default
    vocabulary, so that an expression may name any of them."""
    # Users are numbered, and the event types typed, on a second core while products are
    # numbered (Polars releases the GIL): each spends most of its time sorting its keys on
    # one core. The user ids are gathered from one chunk: from the ~400 chunks of a large
    # Parquet read, that took ten times as long (5 s instead of 0.5 at 100x the sample).
    with ThreadPoolExecutor(1) as aside:
        numbered = aside.submit(_users, events.get_column(USER).rechunk())
        typed = aside.submit(_typed, events.get_column(EVENT), weights)
        products, listing, p = _products(events, catalog)
        (order, first, users), kind = numbered.result(), typed.result()
    # The events come out in user order (each user's in their order in the log): the
    # users' numbering sorts them anyway, and grouped by user, the features' group-by
    # takes Polars' fast path for a sorted key (twice as fast).
    user = (first.cast(pl.UInt32).cum_sum() - 1).alias(USER).set_sorted()
    rest = pl.DataFrame([p, kind, events.get_column(TIME)]).rechunk().gather(order)
    return Log(rest.insert_column(0, user), users, products, listing)


def _users(ids: pl.Series) -> tuple[pl.Series, pl.Series, pl.Series]:
    """(the rows of `ids` in id order, whether each is its id's first, the distinct ids)."""
    order, first = _order(ids)
    return order, first, ids.gather(order.filter(first))


def _typed(types: pl.Series, weights: dict[str, float]) -> pl.Series:
    """`types` as an Enum of every type in them, in `weights` or in the default
    vocabulary, so that an expression may name any of them."""
    known = set(types.unique()) | set(weights) | set(DEFAULT_EVENT_WEIGHTS)
    return types.cast(pl.Enum(sorted(known)))


def _products(
    events: pl.DataFrame, catalog: pl.DataFrame | pl.LazyFrame | None
) -> tuple[pl.DataFrame, pl.LazyFrame, pl.Series]:
    """(the product table without names and prices, the names and prices by code, each
    event's product code): every product of the catalog or the log, numbered."""
    listed = (pl.DataFrame(schema=CATALOG_SCHEMA) if catalog is None else catalog).lazy()
    held = listed.select(PRODUCT, CATEGORY).collect()
    at = held.height
    codes, ids = number(
        pl.concat([held.get_column(PRODUCT), events.get_column(PRODUCT)], rechunk=True)
    )
    p = codes.slice(at)
    # Each product code's catalog row (null: not listed), gathered by position; none to
    # gather when the catalog lists every product in id order, as ingest writes it.
    row = np.full(ids.len(), -1, dtype=np.int64)
    row[codes.slice(0, at).to_numpy()] = np.arange(at)
    category, listing = held.get_column(CATEGORY), listed.select(PRODUCT_NAME, PRICE)
    if not (ids.len() == at and np.array_equal(row, np.arange(at))):
        rows = pl.Series(row).to_frame("row").select(pl.when(pl.col("row") >= 0).then("row"))
        category = category.gather(rows.to_series())
        listing = listing.select(pl.all().gather(rows.to_series()))
    interactions = np.bincount(p.to_numpy(), minlength=ids.len()).astype(np.uint32)
    return pl.DataFrame([ids, category, pl.Series("interactions", interactions)]), listing, p
