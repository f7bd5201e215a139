"""Do answers stall while the server reloads? wrk against one worker, with and without reloads.

    .venv/bin/python benchmarks/reload_stall.py --root /tmp/rs/root --label after

Trains `--sample` into `--root` first when the root has no version. Starts `audience serve
--workers 1` on 127.0.0.1 (a free port, AUDIENCE_RELOAD_SECONDS=1) in its own process
group, then runs wrk (one thread, 50 connections, cycling through 100 known products at
n = 10, latency distribution) twice in the same session:

- steady: `--seconds` of load with `current` left alone;
- reload: the same load while a copy of the current version is published (a swap) at a
  third of the run and a copy with one corrupted table (a refused version) at two thirds.

The figures are wrk's: p50/p99 of each run, the reload run's max, and the ratio of the
reload p99 to the steady p99 (goals: <= 3, and max <= 250 ms). /ready's reload and
failure counters before and after show the swap and the refusal happened during the run.
The run is stored under `--label` in `--out`, beside any other labels already there.
Everything started is stopped, also on error or Ctrl-C; published copies are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stress_test"))
from machine import machine
from run_load import _free_port, _stop, _wait_ready

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "reload-bench-key"
GOALS = {"reload_p99_over_steady_p99": 3.0, "reload_max_ms": 250.0}


def main() -> int:
    args = _arguments()
    root = Path(args.root)
    if not (root / "current").exists():
        subprocess.run(
            [str(BIN / "audience"), "train", args.sample, "--out", str(root)], check=True
        )
    work = Path(tempfile.mkdtemp(prefix="audience-reload-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start_server(root, port, work)
    published: list[Path] = []
    pointer = root / "current"
    original = pointer.read_text()
    try:
        _wait_ready(base, server, timeout=120)
        ids = _json(f"{base}/products/sample?n=100")["product_ids"]
        script = _script(ids, work)
        _wrk(base, script, 3)  # warm-up: answer caches, first allocations
        steady = _wrk(base, script, args.seconds)
        before = _json(f"{base}/ready")
        events: list[dict[str, Any]] = []
        publisher = threading.Thread(
            target=_publish, args=(root, args.seconds, published, events), daemon=True
        )
        publisher.start()
        reload = _wrk(base, script, args.seconds)
        publisher.join()
        after = _json(f"{base}/ready")
    finally:
        _stop(server)
        _write(pointer, original)
        for folder in published:
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    run = {
        "steady": steady,
        "reload": reload,
        "reload_p99_over_steady_p99": _ratio(reload["p99_ms"], steady["p99_ms"]),
        "published": events,
        "ready_before": _reload_counts(before),
        "ready_after": _reload_counts(after),
    }
    _save(Path(args.out), args.label, run)
    print(json.dumps(run, indent=2))
    return 0


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default="/tmp/rs/root", help="artifact root served (and published)")
    p.add_argument("--sample", default="/tmp/rs/sample", help="ingested sample to train from")
    p.add_argument("--seconds", type=int, default=30, help="length of each wrk run")
    p.add_argument("--label", default="after", help="name of this run in the results file")
    p.add_argument("--out", default=str(REPO / "results" / "benchmark_reload.json"))
    return p.parse_args()


# --- publishing ---------------------------------------------------------------------------


def _publish(root: Path, seconds: int, published: list[Path], events: list[dict[str, Any]]) -> None:
    """A good version at a third of the run, a corrupted one at two thirds."""
    start = time.monotonic()
    serving = (root / "current").read_text().strip()
    source = root / "versions" / serving
    for share, broken in ((1 / 3, False), (2 / 3, True)):
        time.sleep(max(0.0, start + seconds * share - time.monotonic()))
        name = f"{serving}-bench-{'broken' if broken else 'copy'}"
        target = root / "versions" / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        published.append(target)
        if broken:  # same size, one byte changed: refused by its checksum
            table = target / "audiences.parquet"
            data = bytearray(table.read_bytes())
            data[len(data) // 2] ^= 0xFF
            table.write_bytes(bytes(data))
        _write(root / "current", name + "\n")
        events.append({"at_s": round(time.monotonic() - start, 2), "version": name})


def _write(pointer: Path, text: str) -> None:
    """Replace `current` atomically (write beside it, then rename)."""
    temporary = pointer.with_name(".current.bench")
    temporary.write_text(text)
    temporary.replace(pointer)


# --- processes (port, readiness and stopping as in stress_test/run_load.py) -------------


def _start_server(root: Path, port: int, work: Path) -> subprocess.Popen[bytes]:
    command = [str(BIN / "audience"), "serve", "--artifact", str(root)]
    command += ["--port", str(port), "--workers", "1"]
    env = os.environ | {"AUDIENCE_API_KEYS": KEY, "AUDIENCE_RELOAD_SECONDS": "1"}
    log = (work / "server.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)


# --- load ---------------------------------------------------------------------------------


def _script(ids: list[str], work: Path) -> Path:
    script = work / "paths.lua"
    paths = ",".join(f'"/recommend/{p}?n=10"' for p in ids)
    script.write_text(
        f"local paths = {{{paths}}}\nlocal i = 0\n"
        f'wrk.headers["X-API-Key"] = "{KEY}"\n'
        "request = function()\n  i = i % #paths + 1\n"
        "  return wrk.format(nil, paths[i])\nend\n"
    )
    return script


def _wrk(base: str, script: Path, seconds: int) -> dict[str, Any]:
    """One wrk run (one thread, 50 connections): rate, p50/p90/p99, max, errors."""
    command = ["wrk", "-t1", "-c50", f"-d{seconds}s", "--latency", "-s", str(script), base]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout

    def ms(text: str | None) -> float | None:
        found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text or "")
        if not found:
            return None
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[found[2]]
        return round(float(found[1]) * scale, 2)

    def percentile(p: str) -> float | None:
        found = re.search(rf"^\s+{p}%\s+(\S+)", out, re.MULTILINE)
        return ms(found[1]) if found else None

    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "command": " ".join([*command[:-3], "paths.lua", "URL"]),
        "seconds": seconds,
        "requests_per_s": float(rps[1]) if rps else None,
        "p50_ms": percentile("50"),
        "p90_ms": percentile("90"),
        "p99_ms": percentile("99"),
        "max_ms": ms(latency[3]) if latency else None,
        "non_2xx": int(errors[1]) if errors else 0,
        "socket_errors": socket_errors[1].strip() if socket_errors else None,
    }


# --- figures ------------------------------------------------------------------------------


def _json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"X-API-Key": KEY})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _reload_counts(ready: dict[str, Any]) -> dict[str, Any]:
    """What /ready says about the served version and reloading (whatever keys it has)."""
    keep = ("model_version", "loaded_at", "reloads", "failed_reloads", "last_reload_error")
    return {k: v for k, v in ready.items() if k in keep}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def _save(out: Path, label: str, run: dict[str, Any]) -> None:
    report: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    report["command"] = "python benchmarks/reload_stall.py --root ROOT --label LABEL"
    report["goals"] = GOALS
    report.setdefault("runs", {})[label] = run | {"machine": machine()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
