"""CSR tables, and the threads that run compiled (numba) passes over them.

A CSR table holds rows of entries, each row's entries side by side: row k's are
`ptr[k]:ptr[k + 1]` of each column. The compiled passes (`audience.model.kernels.topn`,
`audience.model.kernels.related`) read a product's or a user's entries as one slice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numba
import numpy as np
import numpy.typing as npt
import polars as pl

THREADS = 2
S = TypeVar("S")
R = TypeVar("R")


def fixed(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """`values` as the one array type of their kind that the passes take (int64 offsets,
    uint32 codes, float64 values), so that numba compiles each pass once (each new
    combination of argument types is compiled anew, ~2 s), in memory NumPy made, which
    asks Linux for huge pages for large arrays: the passes read them at random, and with
    4 KB pages most reads also missed the address cache (TLB). A copy, unless NumPy
    already holds them so (then copying again only costs fresh memory)."""
    kind = {"f": np.float64, "u": np.uint32}.get(values.dtype.kind, np.int64)
    if values.dtype == kind and values.flags.c_contiguous and values.flags.owndata:
        return values
    return np.array(values, dtype=kind, order="C")


@dataclass(frozen=True)
class Csr:
    """Rows of entries: row k holds entries `ptr[k]:ptr[k + 1]` of each column."""

    ptr: npt.NDArray[np.int64]
    columns: tuple[npt.NDArray[Any], ...]

    @classmethod
    def of(cls, frame: pl.DataFrame, row: str, rows: int, columns: list[str]) -> Csr:
        """`frame`, sorted by `row` (codes below `rows`), as rows of `columns`."""
        if not frame.get_column(row).is_sorted():
            raise ValueError(f"the rows must come sorted by {row!r}")
        ptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(frame.get_column(row).to_numpy(), minlength=rows), out=ptr[1:])
        return cls(fixed(ptr), tuple(fixed(frame.get_column(c).to_numpy()) for c in columns))

    def flat(self) -> tuple[npt.NDArray[Any], ...]:
        return (self.ptr, *self.columns)

    def frame(self, row: str, names: list[str]) -> pl.DataFrame:
        """The entries as a table, a row each, sorted by `row` (the inverse of `of`)."""
        rows = np.repeat(np.arange(self.ptr.size - 1, dtype=np.uint32), np.diff(self.ptr))
        return pl.DataFrame({row: rows, **dict(zip(names, self.columns, strict=True))})


def in_threads(units: int, scratch: Callable[[], S], run: Callable[[int, S], R]) -> list[R]:
    """`run(k, own)` for every unit k, in unit order, on `THREADS` threads that each take
    the next unit in turn and own one `scratch()` (working arrays reused unit by unit).
    The passes release the GIL, so the threads run on both cores."""
    lock, queue = threading.Lock(), iter(range(units))

    def worker(_: int) -> list[tuple[int, R]]:
        own = scratch()
        done: list[tuple[int, R]] = []
        while True:
            with lock:
                k = next(queue, None)
            if k is None:
                return done
            done.append((k, run(k, own)))

    with ThreadPoolExecutor(THREADS) as threads:
        finished = [item for items in threads.map(worker, range(THREADS)) for item in items]
    return [out for _, out in sorted(finished, key=lambda item: item[0])]


@numba.njit(cache=True, inline="always")
def before(value: float, code: int, other_value: float, other_code: int) -> bool:
    """Whether (value, code) ranks before (other_value, other_code): the higher value
    first, then the smaller code."""
    return value > other_value or (value == other_value and code < other_code)


@numba.njit(cache=True, inline="always")
def keep_best(
    values: Any, codes: Any, rows: Any, kept: int, value: float, code: Any, row: Any
) -> int:
    """Insert (value, code, row) into the best-first buffers (`kept` entries so far, at
    most `values.size`), if it ranks among them; returns how many they now hold."""
    size = values.size
    if kept < size:
        at = kept
        kept += 1
    elif before(value, code, values[size - 1], codes[size - 1]):
        at = size - 1
    else:
        return kept
    while at > 0 and before(value, code, values[at - 1], codes[at - 1]):
        values[at], codes[at], rows[at] = values[at - 1], codes[at - 1], rows[at - 1]
        at -= 1
    values[at], codes[at], rows[at] = value, code, row
    return kept
