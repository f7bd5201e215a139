"""ALS fit time with implicit's serial vs parallel solver (why model.cf uses one thread).

Fits the analysis' final ALS (early 80% of the sample log, product x user
matrix) with `num_threads` 1 and 2, alternating, and prints the seconds per fit.
Run after `make run`: `.venv/bin/python benchmarks/als_threads.py [--repeats 2]`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import polars as pl

from audience.data.stats import time_split
from audience.model.cf import AlsParams, Task, fit
from audience.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=Path, default=ROOT / "data/sample/events.parquet")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    early, late = time_split(pl.read_parquet(args.events))
    items = Task(early, late, Settings().event_weights).items
    params = AlsParams()
    print(f"{os.cpu_count()} cores; matrix {items.shape} with {items.nnz:,} entries; {params}")
    for _ in range(args.repeats):
        for threads in (1, 2):
            start = time.perf_counter()
            fit(items, params, num_threads=threads)
            print(f"num_threads={threads}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
