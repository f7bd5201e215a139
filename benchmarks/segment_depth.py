"""A deep segment on a large artifact (issue #22's goal at 100x: 100,000 users <= 2 s).

`audience serve` cannot load a 100x artifact on this 23.5 GB machine (docs/benchmarks.md,
Segments), so this times what a segment computes, on only the tables it reads: the
segment tables, `products`' ids and categories and `user_scores`' ids and scores (read
with their columns projected, so the loading is not the measure), built into the same
`Ranking` the serving index holds. For --products products with events, sampled with
a seed: the product's total for every user, the top --size by `kernels.scores.top`, and
their user ids: `serving.segment.segment` without filters, which add a mask each. Beside
it, the floor: one NumPy partial sort of a users-long vector for the same k.

Run: `.venv/bin/python benchmarks/segment_depth.py --artifact DIR [--size 100000]`
(an artifact of `audience train` on `audience generate --scale 100`, see the docs).
Writes results/benchmark_segment_depth.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil
from machine import save

from audience import artifact
from audience.data.schema import CATEGORY, PRODUCT, USER
from audience.model.kernels.scores import top
from audience.model.segments import TABLES, Ranking

ROOT = Path(__file__).resolve().parents[1]


def ranking(root: Path) -> tuple[Ranking, float]:
    """The artifact's `Ranking` from the columns it reads, and the seconds it took."""
    start = time.perf_counter()
    folder = artifact.current(root)
    model = json.loads((folder / artifact.MODEL).read_text())
    columns = {"products": [PRODUCT, CATEGORY], "user_scores": [USER, "score"]}
    tables = {
        name: pl.read_parquet(folder / f"{name}.parquet", columns=columns.get(name))
        for name in (*columns, *TABLES)
    }
    return Ranking.of_tables(tables, model), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmark_segment_depth.json")
    args = parser.parse_args()
    ranked, load_seconds = ranking(args.artifact)
    evidence = np.flatnonzero(np.diff(ranked.evidence.touched.ptr))  # products with events
    rng = np.random.default_rng(0)
    codes = rng.choice(evidence, size=min(args.products, evidence.size), replace=False)
    products = ranked.products.gather(codes).to_list()
    floor_values = rng.random(ranked.users.len())
    ranked.users.gather(top(ranked.product(products[0]), args.size))  # compiled and warm
    times, floor = [], []
    for product in products:
        start = time.perf_counter()
        ranked.users.gather(top(ranked.product(product), args.size))
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        np.argpartition(-floor_values, args.size)[: args.size]
        floor.append(time.perf_counter() - start)
    p50, floor_p50 = float(np.median(times)), float(np.median(floor))
    step = {
        "step": f"ranking only, {args.size:,} users",
        "users": ranked.users.len(),
        "products": len(products),
        "p50_s": p50,
        "max_s": float(np.max(times)),
        "floor_p50_s": floor_p50,
        "ratio_to_floor": p50 / floor_p50,
        "load_s": load_seconds,
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
    }
    command = "python benchmarks/segment_depth.py " + " ".join(sys.argv[1:])
    save(args.out, command, {"p50_s": 2.0}, [step])
    print(step)


if __name__ == "__main__":
    main()
