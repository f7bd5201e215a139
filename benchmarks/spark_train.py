"""The Spark engine beside the Polars engine: `audience train` of the same log, each
end to end in a fresh process (issue #25's scale evidence).

For each scale, the sample of `--preset` (marketplace) is generated as a canonical
table (not timed); then, in the same run:

- the floor: a minimal Polars pass over the events (`cf_speed.floor`);
- `audience train DIR --cf off` (the Polars engine);
- `audience train DIR --engine spark --master local[2] --spark-conf
  spark.driver.memory=1g --cf off`: the driver's JVM heap capped at 1 GB, so that a
  run to completion shows nothing proportional to the log is collected to it.

`--cf on` trains both with the collaborative term instead (`--preset loyal`, where the
log supports it): the engines' ALS solvers differ, so each artifact is checked against
its own segments (`parity.as_segments`) rather than against the other's, and the
terms' weights are recorded.

Each records wall time, the `audience` process' own peak resident memory and, with
its children (Spark's JVM and Python workers), the tree's sampled peak. The Spark
run prints its driver's actual heap (kept with its progress lines), and Spark's
event log gives each train step's shuffle writes. Both artifacts are compared
table by table (`audience.model.spark.parity`).

Writes results/benchmark_spark.json (with the machine) and prints a table.
Run: `.venv/bin/python benchmarks/spark_train.py [--scales 1 10]`, or
`.venv/bin/python benchmarks/spark_train.py --preset loyal --scales 1 --cf on --out
results/benchmark_spark_cf.json`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from cf_speed import floor
from machine import save
from train_speed import ROOT, generate, train

from audience.artifact import load
from audience.model.spark.parity import as_segments, compared

SPARK = ("--engine", "spark", "--master", "local[2]", "--spark-conf", "spark.driver.memory=1g")


def _logging(folder: Path) -> list[str]:
    """Spark's event log settings: uncompressed JSON lines in `folder`."""
    return ["enabled=true", f"dir={folder.as_uri()}", "compress=false"]


def shuffles(folder: Path) -> dict[str, dict[str, int]]:
    """Per train step (the Spark jobs' descriptions), the shuffle bytes and records
    written, from the event log in `folder`."""
    step_of: dict[int, str] = {}
    written: dict[str, dict[str, int]] = {}
    logs = (p for p in folder.rglob("*") if not p.name.startswith((".", "appstatus")))
    for log in sorted(p for p in logs if p.is_file()):  # not checksums nor status files
        for line in log.open():
            event = json.loads(line)
            if event["Event"] == "SparkListenerJobStart":
                step = (event.get("Properties") or {}).get("spark.job.description") or "other"
                step_of |= dict.fromkeys(event["Stage IDs"], step)
            elif event["Event"] == "SparkListenerTaskEnd":
                metrics = (event.get("Task Metrics") or {}).get("Shuffle Write Metrics") or {}
                into = written.setdefault(
                    step_of.get(event["Stage ID"], "other"), {"bytes": 0, "records": 0}
                )
                into["bytes"] += metrics.get("Shuffle Bytes Written", 0)
                into["records"] += metrics.get("Shuffle Records Written", 0)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--preset", default="marketplace", help="the sample log generated")
    parser.add_argument("--cf", default="off", choices=("off", "on"), help="the CF term")
    parser.add_argument("--max-gb", type=float, default=20.0, help="stop a train past this")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmark_spark.json")
    args = parser.parse_args()
    steps = []
    for scale in args.scales:
        with tempfile.TemporaryDirectory(prefix="audience-spark-bench-") as tmp:
            folder = Path(tmp)
            rows = generate(scale, folder, args.preset)
            low = floor(folder)["seconds"]
            runs: dict[str, Any] = {}
            logged = folder / "spark-events"
            logged.mkdir()
            spark = (*SPARK, *(f"--spark-conf=spark.eventLog.{k}" for k in _logging(logged)))
            for engine, flags in (("polars", ()), ("spark", spark)):
                timing = train(folder, args.max_gb, "--cf", args.cf, *flags, out=engine)
                runs[engine] = {
                    "seconds": round(timing["seconds"], 2),
                    "ratio_to_floor": round(timing["seconds"] / low, 1),
                    "peak_mb": round(timing["peak_mb"]),
                    "tree_peak_mb": round(timing["tree_peak_mb"]),
                    "stopped_at_max_gb": timing["stopped"],
                    "progress": [line for line in timing["progress"] if line.startswith("[")],
                }
            runs["spark"]["shuffles"] = shuffles(logged)
            made = {engine: load(folder / engine) for engine in ("polars", "spark")}
            if args.cf == "on":
                for engine, found in made.items():
                    said = found.model["cf"]
                    runs[engine]["cf"] = {k: said[k] for k in ("weight", "half", "validation")}
                    runs[engine]["as_segments"] = as_segments(found)
            else:
                runs["parity"] = compared(made["polars"], made["spark"])
        steps.append({"scale": scale, "events": rows, "floor_seconds": round(low, 2)} | runs)
        print(json.dumps(steps[-1]), flush=True)
    scales = " ".join(f"{s:g}" for s in args.scales)
    command = f"python benchmarks/spark_train.py --preset {args.preset} --scales {scales}"
    save(
        args.out,
        f"{command} --cf {args.cf} --out {args.out.resolve().relative_to(ROOT)}",
        {},
        steps,
    )
    print(f"{'scale':>6}{'engine':>8}{'seconds':>10}{'x floor':>9}{'peak MB':>9}{'tree MB':>9}")
    for step in steps:
        for engine in ("polars", "spark"):
            r = step[engine]
            print(
                f"{step['scale']:>6g}{engine:>8}{r['seconds']:>10.1f}{r['ratio_to_floor']:>9.1f}"
                f"{r['peak_mb']:>9,}{r['tree_peak_mb']:>9,}"
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
