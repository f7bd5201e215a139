"""ALS fit time: implicit's serial solver, its parallel one, and serial fits in processes.

Fits the first stage of `cf.tune`'s search (four parameter sets) on the analysis'
final ALS matrix (early 80% of a log, product x user) three ways, and prints the
seconds: one after the other with `num_threads` 1, one after the other with
`num_threads` 2, and `cf.fits` (one process per core). This is why `cf.fit` uses one
thread and `cf.tune` fits its trials in processes.
Run after `make run`: `.venv/bin/python benchmarks/als_threads.py [--events PATH]`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import polars as pl

from audience.data.stats import time_split
from audience.model.cf import FIRST_STAGE, Task, fit, fits
from audience.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=Path, default=ROOT / "data/sample/events.parquet")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    early, late = time_split(pl.read_parquet(args.events))
    items = Task(early, late, Settings().event_weights).items
    print(f"{os.cpu_count()} cores; matrix {items.shape} with {items.nnz:,} entries")
    print(f"{len(FIRST_STAGE)} fits: {[p.as_dict() for p in FIRST_STAGE]}")
    for _ in range(args.repeats):
        for threads in (1, 2):
            start = time.perf_counter()
            for params in FIRST_STAGE:
                fit(items, params, num_threads=threads)
            seconds = time.perf_counter() - start
            print(f"one after the other, num_threads={threads}: {seconds:.2f} s")
        start = time.perf_counter()
        fits(items, FIRST_STAGE)
        print(f"cf.fits (processes): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
