"""Wall time and peak memory of `audience train` end to end (issue #4's speed bar).

For each scale, the marketplace sample is generated and written as a canonical
table (not timed); then `audience train DIR --out ...` runs as a user runs it, in
a fresh process, Python start-up included, and its wall time, peak resident
memory (the child's own ru_maxrss, from wait4, or sampled) and progress lines are
recorded, with the default scorer. A train whose processes pass --max-gb together is
stopped and recorded as such. Goals on a 2-core machine: <= 5 s at scale 1 (N = 10);
at 100x <= 90 s and under 12 GB.

Writes results/benchmark_train.json (with the machine) and prints a table.
Run: `.venv/bin/python benchmarks/train_speed.py [--scales 1 10 100] [--model seed]
[--max-gb 20]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from machine import save

from audience.model.train import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
AUDIENCE = str(Path(sys.executable).with_name("audience"))


def generate(scale: float, folder: Path, preset: str = "marketplace") -> int:
    """Write the sample at `scale` in a child process, so its memory is not ours."""
    code = (
        "from audience.data.generate import generate; "
        f"e, c = generate('{preset}', scale={scale}, seed=0); "
        f"e.write_parquet('{folder}/events.parquet'); "
        f"c.write_parquet('{folder}/products.parquet'); "
        "print(e.height)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def measured(cmd: list[str], log: Path, max_gb: float) -> dict[str, Any]:
    """Wall time and peak resident memory of one process running `cmd`, and the progress
    lines it printed (to `log`). A process whose memory passes `max_gb` is stopped there
    (`stopped`), so a scale this machine cannot hold is measured, not swapped to death."""
    peak, tree, stopped = 0, 0, False
    with log.open("w") as err:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        watched = psutil.Process(child.pid)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)  # this child's own rusage
            if pid:
                break
            with contextlib.suppress(psutil.Error):
                own = watched.memory_info().rss
                peak = max(peak, own)
                tree = max(tree, own + sum(_rss(p) for p in watched.children(recursive=True)))
            if tree > max_gb * 2**30 and not stopped:
                child.kill()
                stopped = True
            time.sleep(0.1)
        seconds = time.perf_counter() - start
    progress = log.read_text().strip().splitlines()
    if status and not stopped:
        raise SystemExit(f"{cmd[1]} failed: " + "\n".join(progress))
    return {
        "seconds": seconds,
        "peak_mb": max(peak, usage.ru_maxrss * 1024) / 2**20,
        # With its children (a Spark train's JVM and Python workers), sampled.
        "tree_peak_mb": max(tree, peak) / 2**20,
        "stopped": stopped,
        "progress": progress,
    }


def _rss(process: psutil.Process) -> int:
    """`process`' resident memory, 0 once it is gone."""
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0


def train(folder: Path, max_gb: float, *flags: str, out: str = "artifacts") -> dict[str, Any]:
    """`audience train` of the canonical table in `folder`, with `flags`, measured; the
    artifacts go to `folder / out`."""
    cmd = [AUDIENCE, "train", str(folder), "--out", str(folder / out), *flags]
    return measured(cmd, folder / f"{out}.log", max_gb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--max-gb", type=float, default=20.0, help="stop a train whose memory passes this"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmark_train.json")
    args = parser.parse_args()
    steps = []
    for scale in args.scales:
        with tempfile.TemporaryDirectory(prefix="audience-train-bench-") as tmp:
            rows = generate(scale, Path(tmp))
            timing = train(Path(tmp), args.max_gb, "--model", args.model)
        steps.append(
            {
                "scale": scale,
                "events": rows,
                "model": args.model,
                "seconds": round(timing["seconds"], 2),
                "peak_mb": round(timing["peak_mb"]),
                "stopped_at_max_gb": timing["stopped"],
                "progress": timing["progress"],
            }
        )
        print(json.dumps(steps[-1]), flush=True)
    scales = " ".join(f"{s:g}" for s in args.scales)
    save(
        args.out,
        f"python benchmarks/train_speed.py --scales {scales} --model {args.model}"
        f" --max-gb {args.max_gb:g}",
        {"x1_seconds": 5, "x100_seconds": 90, "x100_peak_gb": 12},
        steps,
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
