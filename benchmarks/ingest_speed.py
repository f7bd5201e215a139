"""Time and peak memory of generating and ingesting the sample log (issue #2's speed bar).

Each measured step runs in its own fresh Python process, so its peak resident
memory (ru_maxrss) is its own and imports are paid as a user pays them. Steps:

1. generate the default marketplace log (goal <= 15 s);
2. ingest it from the seed 004 raw CSV format (goal <= 5 s), and from Parquet;
3. generate a `--large`x log (default 100x, ~50M events) and ingest it from Parquet
   (goal: peak memory under 8 GB).

Writes results/benchmark_ingest.json (with the machine) and prints a table.
Run: `make bench` or `.venv/bin/python benchmarks/ingest_speed.py [--large 100]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
from machine import machine, save

ROOT = Path(__file__).resolve().parents[1]


def _step(name: str, work: Path, scale: float) -> None:
    """Run one step in this process; print its wall time and peak RSS as JSON."""
    from audience.data.generate import generate
    from audience.data.ingest import ingest

    start = time.perf_counter()
    if name == "generate":
        events, catalog = generate("marketplace", scale=scale, seed=0)
        events.write_parquet(work / "events.parquet")
        catalog.write_parquet(work / "products.parquet")
        rows = events.height
    else:
        source = work / ("events.csv" if name == "ingest-csv" else "events.parquet")
        rows = ingest(source, work / f"out-{name}")["rows_read"]
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"step": name, "scale": scale, "rows": rows, "seconds": seconds, "peak_mb": peak_mb}
        )
    )


def _measure(name: str, work: Path, scale: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--step", name, "--work", str(work), "--scale", str(scale)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _seed_csv(work: Path) -> None:
    """The sample log in the seed 004 raw format, as a real export would arrive (not timed)."""
    events = pl.read_parquet(work / "events.parquet")
    names = pl.read_parquet(work / "products.parquet").select("product_id", "product_name")
    events.join(names, on="product_id", how="left").select(
        customer_id="user_id",
        product_id="product_id",
        product_name="product_name",
        Event="event_type",
        Event_Date=pl.col("event_time").dt.strftime("%Y-%m-%d %H:%M:%S"),
    ).write_csv(work / "events.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--large", type=float, default=100.0, help="scale of the large log")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmark_ingest.json")
    args = parser.parse_args()
    if args.step:
        _step(args.step, args.work, args.scale)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="audience-bench-") as tmp:
        small, large = Path(tmp) / "x1", Path(tmp) / "large"
        small.mkdir()
        large.mkdir()
        results.append(_measure("generate", small, 1.0))
        _seed_csv(small)
        results.append(_measure("ingest-csv", small, 1.0))
        results.append(_measure("ingest-parquet", small, 1.0))
        results.append(_measure("generate", large, args.large))
        results.append(_measure("ingest-parquet", large, args.large))
    save(
        args.out,
        f"python benchmarks/ingest_speed.py --large {args.large:g}",
        {"generate_x1_s": 15, "ingest_x1_s": 5, "ingest_large_peak_gb": 8},
        results,
    )
    host = machine()
    print(f"machine: {host['cpu']}, {host['cores']} cores")
    print(f"{'step':<16}{'scale':>7}{'rows':>14}{'seconds':>10}{'peak MB':>10}")
    for r in results:
        print(
            f"{r['step']:<16}{r['scale']:>7g}{r['rows']:>14,}{r['seconds']:>10.2f}{r['peak_mb']:>10,.0f}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
