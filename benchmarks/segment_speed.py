"""Speed of segments (issue #22's goals): in-process, through `audience segment`, and the API.

On a trained artifact (default `artifacts`, the sample model of `make run`):

- in-process: a 10,000-user segment for each of --products sampled products (p50, p99),
  and every known user (share 1) for a few; beside them the floor, one NumPy partial
  sort of a users-long vector (the least any ranking of every user costs), and the ratio;
- `audience segment --products` for 500 products x 10,000 users to Parquet, in a fresh
  process (wall time, peak memory);
- the API, when Debian's `wrk` is installed: `audience serve` (one worker, then two)
  answering GET /segments/{id}?size=10000&format=csv to wrk's 10 connections for
  --seconds (p50, p99, requests/s).

Goals on 2 cores: 10,000 users <= 30 ms p50 in-process and <= 100 ms p99 through the API
with 10 clients; every user <= 1 s; 500 x 10,000 to Parquet <= 60 s.
Writes results/benchmark_segment.json. Run: `.venv/bin/python benchmarks/segment_speed.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from machine import save

from audience.serving.index import Index
from audience.serving.segment import segment

ROOT = Path(__file__).resolve().parents[1]
AUDIENCE = str(Path(sys.executable).with_name("audience"))


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(values, 50)) * 1000,
        "p99_ms": float(np.percentile(values, 99)) * 1000,
    }


def in_process(index: Index, products: list[str], size: int) -> dict[str, Any]:
    segment(index, products[0], size)  # compiled and warm
    times, floor = [], []
    rng = np.random.default_rng(0)
    values = rng.random(index.users.height)
    for product in products:
        start = time.perf_counter()
        segment(index, product, size)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        np.argpartition(-values, size)[:size]
        floor.append(time.perf_counter() - start)
    whole = []
    for product in products[:5]:
        start = time.perf_counter()
        segment(index, product, index.users.height)
        whole.append(time.perf_counter() - start)
    out = _ms(times)
    return {
        "step": f"in-process, {size:,} users",
        "products": len(products),
        **out,
        "floor_p50_ms": _ms(floor)["p50_ms"],
        "ratio_to_floor": out["p50_ms"] / _ms(floor)["p50_ms"],
        "every_user_ms": float(np.median(whole)) * 1000,
    }


def cli(artifact: Path, products: list[str], size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        listed = Path(work) / "products.txt"
        listed.write_text("\n".join(products) + "\n")
        cmd = [AUDIENCE, "segment", "--artifact", str(artifact), "--products", str(listed)]
        cmd += ["--size", str(size), "--out", str(Path(work) / "s.parquet")]
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        watched, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss)
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        if child.returncode:
            raise SystemExit(f"audience segment failed: {' '.join(cmd)}")
    return {
        "step": f"audience segment, {len(products)} products x {size:,} users to Parquet",
        "seconds": seconds,
        "peak_mb": peak / 2**20,
    }


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(
    artifact: Path, products: list[str], size: int, clients: int, seconds: float, workers: int
) -> dict[str, Any]:
    port = _port()
    env = os.environ | {"AUDIENCE_API_KEYS": "bench", "AUDIENCE_ACCESS_LOG_SAMPLE": "0"}
    cmd = [AUDIENCE, "serve", "--artifact", str(artifact), "--port", str(port)]
    cmd += ["--workers", str(workers)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/ready", timeout=2):
                break
            time.sleep(0.5)
        tree = psutil.Process(server.pid)
        rss = sum(p.memory_info().rss for p in [tree, *tree.children(recursive=True)])
        script = Path(tempfile.mkdtemp()) / "paths.lua"
        paths = ",".join(f'"/segments/{p}?size={size}&format=csv"' for p in products)
        script.write_text(
            f"local paths = {{{paths}}}\nlocal i = 0\n"
            'wrk.headers["X-API-Key"] = "bench"\n'
            "request = function()\n  i = i % #paths + 1\n"
            "  return wrk.format(nil, paths[i])\nend\n"
        )
        command = ["wrk", "-t1", f"-c{clients}", f"-d{int(seconds)}s", "--latency", "-s"]
        out = subprocess.run(
            [*command, str(script), base], capture_output=True, text=True, timeout=seconds + 60
        ).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)

    def ms(label: str) -> float:
        found = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        if not found:
            raise SystemExit(f"wrk printed no {label}th percentile:\n{out}")
        return float(found[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found[2]]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "step": f"API, GET /segments ?size={size:,}&format=csv, wrk {clients} connections, "
        f"{workers} worker(s)",
        "requests_per_s": float(rps[1]) if rps else None,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": int(errors[1]) if errors else 0,
        "server_rss_mb_after_load": rss / 2**20,  # every process of the server
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--products", type=int, default=200, help="products timed in-process")
    parser.add_argument("--seconds", type=float, default=20.0, help="API load duration")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmark_segment.json")
    args = parser.parse_args()
    index = Index.open(args.artifact)
    sampled = index.sample(500, seed=0)
    steps = [
        in_process(index, sampled[: args.products], 10_000),
        cli(args.artifact, sampled, 10_000),
    ]
    if shutil.which("wrk"):  # Debian's wrk: `apt-get install wrk`
        steps += [
            api(args.artifact, sampled, 10_000, clients=10, seconds=args.seconds, workers=w)
            for w in (1, 2)
        ]
    goals = {"in_process_p50_ms": 30, "every_user_ms": 1000, "cli_seconds": 60, "api_p99_ms": 100}
    command = "python benchmarks/segment_speed.py " + " ".join(sys.argv[1:])
    save(args.out, command.strip(), goals, steps)
    for step in steps:
        print(step)


if __name__ == "__main__":
    main()
