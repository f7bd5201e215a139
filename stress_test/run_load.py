"""Load-test `audience serve` on this machine and write results/load_test.json.

    .venv/bin/python stress_test/run_load.py --artifact artifacts            # defaults below
    .venv/bin/python stress_test/run_load.py --artifact /tmp/art --workers 1 --duration 30

Starts `audience serve` on 127.0.0.1 (a free port) in its own process group, waits for
/ready, runs locust headless (1,000 users spawned at 50/s for a fixed duration, with its
own worker processes: one locust process saturates near 6-7k req/s), then stops
everything it started, also on error or Ctrl-C. The result file holds locust's figures
(whole run and steady state after the ramp), the server's own count and latency from
/metrics, the CPU seconds the server and locust each used, the machine, and a `limit`
sentence saying where the ceiling came from. With `wrk` installed, a second phase
measures the server alone with a load generator that costs far less CPU than locust,
once per `--wrk-connections` value (100 and 10 by default), and then the same wrk runs
against a bare ASGI app (`bare_asgi.py`: same uvicorn, same workers, one real answer's
bytes, no work), the floor the server's wrk figures are given as ratios to.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent


def main() -> int:
    args = _arguments()
    work = Path(tempfile.mkdtemp(prefix="audience-load-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start_server(args, port, work)
    try:
        _wait_ready(base, server, timeout=120)
        ids = _json(f"{base}/products/sample?n=100")["product_ids"]
        before = _server_metrics(base)
        cpu_before, machine_before = _cpu(server.pid), _machine_busy()
        locust = _run_locust(args, base, work)
        server_cpu = _cpu(server.pid) - cpu_before
        locust["machine_busy_seconds"] = _machine_busy() - machine_before
        after = _server_metrics(base)
        use_wrk = shutil.which("wrk") is not None and not args.no_wrk
        wrk = [_run_wrk(args, base, ids, work, c) for c in args.wrk_connections] if use_wrk else []
        answer = urllib.request.Request(f"{base}/recommend/{ids[0]}?n=10")
        answer.add_header("X-API-Key", "load-test-key")
        with urllib.request.urlopen(answer, timeout=5) as response:
            (work / "body.json").write_bytes(response.read())
    finally:
        _stop(server)
    floor = _floor(args, ids, work) if use_wrk else []
    result = _result(args, locust, server_cpu, before, after, wrk, floor)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["recommend"], indent=2))
    print(result["limit"])
    print(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--artifact", default=str(REPO / "artifacts"), help="artifact root to serve")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--spawn-rate", type=float, default=50)
    p.add_argument("--duration", type=int, default=60, help="seconds, ramp included")
    p.add_argument("--locust-processes", type=int, default=2, help="locust worker processes")
    p.add_argument("--rate-per-user", type=float, default=6.0, help="requests/s per user")
    p.add_argument("--wrk-seconds", type=int, default=20, help="duration of the wrk phase")
    p.add_argument(
        "--wrk-connections",
        type=_counts,
        default=(100, 10),
        help="wrk's open connections, one wrk run per value (default 100,10)",
    )
    p.add_argument("--no-wrk", action="store_true", help="skip the wrk phase")
    p.add_argument(
        "--optouts",
        type=int,
        default=0,
        help="opt this many users out first, drawn from those the stored lists name "
        "(a fresh store for the run; default 0)",
    )
    p.add_argument("--out", default=str(REPO / "results" / "load_test.json"))
    return p.parse_args()


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"connection counts must be >= 1, got {text!r}")
    return counts


# --- processes ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(args: argparse.Namespace, port: int, work: Path) -> subprocess.Popen[bytes]:
    command = [str(BIN / "audience"), "serve", "--artifact", args.artifact]
    command += ["--port", str(port), "--workers", str(args.workers)]
    env = os.environ | {
        "AUDIENCE_API_KEYS": "load-test-key",
        "AUDIENCE_RELOAD_SECONDS": "5",
        "AUDIENCE_DATABASE_URL": f"sqlite:///{_store(args, work)}",
    }
    log = (work / "server.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)


def _store(args: argparse.Namespace, work: Path) -> Path:
    """A fresh store for the run, with `--optouts` users opted out: a seeded draw from the
    users the stored lists name, so that every opt-out changes some answers."""
    import polars as pl

    from audience import artifact
    from audience.store.store import Store

    path = work / "store.db"
    named = pl.read_parquet(artifact.current(Path(args.artifact)) / "audiences.parquet")
    users = named.get_column("user_id").unique().sort()
    drawn = users.sample(min(args.optouts, users.len()), seed=0) if args.optouts else []
    Store.open(f"sqlite:///{path}", work).add_optouts(list(drawn), "load test")
    return path


def _floor(args: argparse.Namespace, ids: list[str], work: Path) -> list[dict[str, Any]]:
    """The same wrk runs against `bare_asgi.py`, served like the server was."""
    port = _free_port()
    command = [str(BIN / "uvicorn"), "bare_asgi:app", "--app-dir", str(HERE)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
    command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--lifespan", "off"]
    env = os.environ | {"BARE_ASGI_BODY": str(work / "body.json")}
    log = (work / "floor.log").open("wb")
    floor = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, floor, timeout=60)
        return [_run_wrk(args, base, ids, work, c) for c in args.wrk_connections]
    finally:
        _stop(floor)


def _wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"{server.args[0]} exited with {server.returncode} before ready")
        try:
            _json(f"{base}/ready")
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"audience serve not ready after {timeout:.0f} s")


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (supervisor and workers), SIGKILL if it lingers."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def _cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its children still alive."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every process, ours or not)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _run_locust(args: argparse.Namespace, base: str, work: Path) -> dict[str, Any]:
    prefix = work / "locust"
    command = [
        str(BIN / "locust"),
        "-f",
        str(HERE / "locustfile.py"),
        "--headless",
        "--host",
        base,
        "-u",
        str(args.users),
        "-r",
        str(args.spawn_rate),
        "-t",
        f"{args.duration}s",
        "--processes",
        str(args.locust_processes),
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--only-summary",
        "--stop-timeout",
        "5",
        "--loglevel",
        "WARNING",
    ]
    env = os.environ | {
        "AUDIENCE_LOAD_API_KEY": "load-test-key",
        "LOAD_RATE_PER_USER": str(args.rate_per_user),
    }
    log = (work / "locust.log").open("wb")
    locust = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    samples: list[float] = []
    try:
        proc = psutil.Process(locust.pid)
        while locust.poll() is None:
            samples.append(_tree_cpu(proc))
            time.sleep(1)
        locust.wait(timeout=args.duration + 120)
    finally:
        if locust.poll() is None:
            os.killpg(locust.pid, signal.SIGKILL)
            locust.wait(timeout=10)
    return {
        "stats": _rows(Path(f"{prefix}_stats.csv")),
        "history": _rows(Path(f"{prefix}_stats_history.csv")),
        "cpu_seconds": max(samples, default=0.0),
        "exit_code": locust.returncode,
        "log_tail": (work / "locust.log").read_text(errors="replace")[-2000:],
    }


def _tree_cpu(proc: psutil.Process) -> float:
    try:
        return _cpu(proc.pid)
    except psutil.Error:
        return 0.0


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _run_wrk(
    args: argparse.Namespace, base: str, ids: list[str], work: Path, connections: int
) -> dict[str, Any]:
    """The server alone: wrk (C, one thread) cycling through 100 known products at n=10."""
    script = work / "paths.lua"
    paths = ",".join(f'"/recommend/{p}?n=10"' for p in ids)
    script.write_text(
        f"local paths = {{{paths}}}\nlocal i = 0\n"
        'wrk.headers["X-API-Key"] = "load-test-key"\n'
        "request = function()\n  i = i % #paths + 1\n"
        "  return wrk.format(nil, paths[i])\nend\n"
    )
    command = ["wrk", "-t1", f"-c{connections}", f"-d{args.wrk_seconds}s", "--latency"]
    command += ["-s", str(script)]
    out = subprocess.run(
        [*command, base], capture_output=True, text=True, timeout=args.wrk_seconds + 60
    ).stdout

    def ms(label: str) -> float | None:
        found = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        if not found:
            return None
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[found[2]]
        return round(float(found[1]) * scale, 2)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "command": " ".join([*command, base]),
        "requests_per_s": float(rps[1]) if rps else None,
        "p50_ms": ms("50"),
        "p90_ms": ms("90"),
        "p99_ms": ms("99"),
        "non_2xx": int(errors[1]) if errors else 0,
        "connections": connections,
    }


# --- figures ------------------------------------------------------------------------------


def _json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"X-API-Key": "load-test-key"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _server_metrics(base: str) -> dict[str, Any]:
    """Server-side count, latency sum and histogram of /recommend/{product_id}, all workers."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    route = 'route="/recommend/{product_id}"'

    def values(prefix: str) -> list[tuple[str, float]]:
        return [
            (line, float(line.rsplit(" ", 1)[1]))
            for line in lines
            if line.startswith(prefix) and route in line
        ]

    buckets: dict[float, float] = {}
    for line, value in values("audience_http_request_duration_seconds_bucket"):
        bound = re.search(r'le="([^"]+)"', line)
        if bound:
            le = float(bound[1])
            buckets[le] = buckets.get(le, 0.0) + value
    return {
        "count": sum(v for _, v in values("audience_http_requests_total")),
        "seconds": sum(v for _, v in values("audience_http_request_duration_seconds_sum")),
        "buckets": buckets,
    }


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Upper bound (ms) of the histogram bucket holding quantile q of the requests between."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    for le, cumulative in counts:
        if total and cumulative >= q * total:
            return le * 1000
    return None


def _figures(row: dict[str, str]) -> dict[str, Any]:
    def number(key: str) -> float | None:
        value = row.get(key, "N/A")
        return None if value in ("N/A", "") else float(value)

    count = number("Request Count") or 0.0
    failures = number("Failure Count") or 0.0
    return {
        "requests": int(count),
        "failures": int(failures),
        "failure_share": round(failures / count, 5) if count else None,
        "requests_per_s": round(number("Requests/s") or 0.0, 1),
        "p50_ms": number("50%"),
        "p90_ms": number("90%"),
        "p99_ms": number("99%"),
        "max_ms": number("Max Response Time"),
    }


def _steady(history: list[dict[str, str]], users: int) -> dict[str, Any]:
    """Per-second aggregate rows once every user is running (locust's 10 s window)."""
    rows = [
        r for r in history if r.get("Name") == "Aggregated" and r.get("User Count") == str(users)
    ]

    def med(key: str) -> float | None:
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "N/A")]
        return round(statistics.median(values), 1) if values else None

    return {
        "seconds": len(rows),
        "requests_per_s_median": med("Requests/s"),
        "p50_ms_median": med("50%"),
        "p99_ms_median": med("99%"),
    }


def _machine() -> dict[str, Any]:
    model = platform.processor()
    with Path("/proc/cpuinfo").open() as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(),
    }


def _result(
    args: argparse.Namespace,
    locust: dict[str, Any],
    server_cpu: float,
    before: dict[str, Any],
    after: dict[str, Any],
    wrk: list[dict[str, Any]],
    floor: list[dict[str, Any]],
) -> dict[str, Any]:
    for run, bare in zip(wrk, floor, strict=True):
        if run["requests_per_s"] and bare["requests_per_s"]:
            share = run["requests_per_s"] / bare["requests_per_s"]
            run["throughput_ratio_to_floor"] = round(share, 3)
        if run["p99_ms"] and bare["p99_ms"]:
            run["p99_ratio_to_floor"] = round(run["p99_ms"] / bare["p99_ms"], 2)
    by_name = {row["Name"]: row for row in locust["stats"]}
    recommend = {
        name: _figures(by_name[name])
        for name in ("/recommend/[known]", "/recommend/[unknown]")
        if name in by_name
    }
    served = after["count"] - before["count"]
    server_side = {
        "what": "time inside the app (ASGI layer to last byte handed to uvicorn), all workers; "
        "quantiles are histogram bucket upper bounds",
        "recommend_requests": int(served),
        "recommend_p50_ms_at_most": _quantile(before["buckets"], after["buckets"], 0.5),
        "recommend_p99_ms_at_most": _quantile(before["buckets"], after["buckets"], 0.99),
        "recommend_mean_ms_in_app": round(1000 * (after["seconds"] - before["seconds"]) / served, 3)
        if served
        else None,
    }
    cores = os.cpu_count() or 1
    wall = args.duration
    busy = locust["machine_busy_seconds"]
    cpu = {
        "server_cpu_seconds": round(server_cpu, 1),
        "locust_cpu_seconds": round(locust["cpu_seconds"], 1),
        "other_processes_cpu_seconds": round(
            max(0.0, busy - server_cpu - locust["cpu_seconds"]), 1
        ),
        "machine_cpu_seconds_available": cores * wall,
    }
    result: dict[str, Any] = {
        "command": "python stress_test/run_load.py " + " ".join(sys.argv[1:]),
        "created_at": datetime.now(UTC).isoformat(),
        "config": {
            "server": f"audience serve --workers {args.workers} (uvicorn, uvloop, httptools)",
            "artifact": args.artifact,
            "users": args.users,
            "spawn_rate": args.spawn_rate,
            "duration_s": args.duration,
            "locust_processes": args.locust_processes,
            "optouts": args.optouts,
            "offered_rate_per_user": args.rate_per_user,
            "offered_total_rps": args.rate_per_user * args.users,
            "access_log": "every request (AUDIENCE_ACCESS_LOG_SAMPLE=1)",
            "auth": "X-API-Key checked",
        },
        "machine": _machine(),
        "aggregated": _figures(by_name.get("Aggregated", {})),
        "recommend": recommend,
        "batch": _figures(by_name["/recommend/batch"]) if "/recommend/batch" in by_name else None,
        "steady_state": _steady(locust["history"], args.users),
        "server_side": server_side,
        "cpu": cpu,
        "wrk_server_alone": wrk,
        "wrk_bare_asgi_floor": floor,
        "locust_exit_code": locust["exit_code"],
    }
    result["limit"] = _limit(result, cores, wall)
    return result


def _limit(result: dict[str, Any], cores: int, wall: int) -> str:
    cpu = result["cpu"]
    used = cpu["server_cpu_seconds"] + cpu["locust_cpu_seconds"]
    share = used / (cores * wall)
    text = (
        f"CPU-bound on a shared {cores}-core machine: the server used "
        f"{cpu['server_cpu_seconds']:.0f} CPU-s and locust {cpu['locust_cpu_seconds']:.0f} "
        f"CPU-s of the {cores * wall} available ({share:.0%} together), so locust's load "
        "generation takes roughly what the server gets and the figures above are a floor "
        "for the server, not its ceiling."
    )
    if cpu["other_processes_cpu_seconds"] > 0.1 * cores * wall:
        text += (
            f" Other processes on the machine used {cpu['other_processes_cpu_seconds']:.0f} "
            "CPU-s during the run: the figures are lower than on an idle machine."
        )
    inside = result["server_side"].get("recommend_p99_ms_at_most")
    seen = (result["recommend"].get("/recommend/[known]") or {}).get("p99_ms")
    if inside is not None and seen is not None:
        text += (
            f" Inside the app /recommend took at most {inside:g} ms at p99 against "
            f"{seen:g} ms seen by locust: the difference is queueing in the kernel, in the "
            "event loop and in locust's own gevent loop (a trivial /health shows the same "
            "client-side latency under locust)."
        )
    runs = [
        f"{w['requests_per_s']:,.0f} req/s at p99 {w['p99_ms']} ms with {w['connections']} "
        "connections"
        + (
            f" ({w['throughput_ratio_to_floor']:.0%} of a bare ASGI app's throughput)"
            if "throughput_ratio_to_floor" in w
            else ""
        )
        for w in result["wrk_server_alone"]
        if w.get("requests_per_s")
    ]
    if runs:
        text += (
            " With wrk (C, one thread) as the client instead, the same server answered "
            f"/recommend at {'; '.join(runs)}."
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
