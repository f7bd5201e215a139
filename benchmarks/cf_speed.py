"""Train time and peak memory with the collaborative term (`audience train --cf`).

Goal (issue #24): on the loyal sample, train with CF in <= 3x the time without it; on
the marketplace sample `--cf auto` is off and costs next to nothing. Each case runs
`audience train` in a fresh process (`train_speed.train`), `--repeats` times, and
keeps the median; beside it, in the same run, the floor: a minimal Polars pass over
the same events (read the table, count events per user) in a fresh process, so the
figures can be read as ratios when the machine's speed changes. The `--analysis`
case first runs `audience analyze` on the same log (not timed).

Writes results/benchmark_cf.json (with the machine) and prints a line per case.
Run: `.venv/bin/python benchmarks/cf_speed.py [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from machine import save
from train_speed import AUDIENCE, generate, measured, train

ROOT = Path(__file__).resolve().parents[1]
ANALYSIS = "<analysis>"  # stands for the analysis folder of the run
CASES = {
    "loyal": [
        ("off", ("--cf", "off")),
        ("on", ("--cf", "on")),
        ("on, --analysis", ("--cf", "on", "--analysis", ANALYSIS)),
    ],
    "marketplace": [("off", ("--cf", "off")), ("auto", ("--cf", "auto"))],
}


def floor(folder: Path) -> dict[str, Any]:
    """The minimal Polars pass over `folder`'s events, in a fresh process."""
    code = (
        f"import polars as pl; pl.read_parquet('{folder}/events.parquet').group_by('user_id').len()"
    )
    return measured([sys.executable, "-c", code], folder / "floor.log", 20.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmark_cf.json")
    args = parser.parse_args()
    steps = []
    for preset, cases in CASES.items():
        with tempfile.TemporaryDirectory(prefix="audience-cf-bench-") as tmp:
            folder = Path(tmp)
            events = generate(1.0, folder, preset)
            analysis = folder / "analysis"
            if preset == "loyal":
                subprocess.run(
                    [AUDIENCE, "analyze", str(folder), "--out", str(analysis)],
                    check=True,
                    capture_output=True,
                )
            runs: dict[str, list[dict[str, Any]]] = {"floor": []}
            for _ in range(args.repeats):  # interleaved, so drift hits every case alike
                runs["floor"].append(floor(folder))
                for label, flags in cases:
                    extra = [str(analysis) if f == ANALYSIS else f for f in flags]
                    runs.setdefault(label, []).append(train(folder, 20.0, *extra))
            low = statistics.median(r["seconds"] for r in runs["floor"])
            base = statistics.median(r["seconds"] for r in runs["off"])
            for label, measured_runs in runs.items():
                seconds = statistics.median(r["seconds"] for r in measured_runs)
                steps.append(
                    {
                        "preset": preset,
                        "events": events,
                        "case": label,
                        "seconds": round(seconds, 2),
                        "all_seconds": [round(r["seconds"], 2) for r in measured_runs],
                        "peak_mb": round(max(r["peak_mb"] for r in measured_runs)),
                        "ratio_to_floor": round(seconds / low, 2),
                        "ratio_to_cf_off": round(seconds / base, 2),
                        "progress": measured_runs[-1]["progress"],
                    }
                )
                print(json.dumps({k: v for k, v in steps[-1].items() if k != "progress"}))
    save(
        args.out,
        f"python benchmarks/cf_speed.py --repeats {args.repeats}",
        {"loyal_cf_on_ratio_to_cf_off": 3},
        steps,
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
