"""Resident memory of `audience serve` (one worker) on an artifact, idle and after load.

Starts the server on 127.0.0.1 in its own process, waits for /ready, reads its resident
memory (RSS), sends `--requests` GET /recommend calls over the products of
/products/sample (keep-alive, one client), reads it again, and stops the server. With
`--python PATH`, the server runs under another interpreter: another checkout's venv,
so two versions can be compared on the same machine in one session (each must serve
an artifact its own `audience train` wrote).

    .venv/bin/python benchmarks/server_memory.py --artifact artifacts
    git worktree add /tmp/old 8b30b67 && python3 -m venv /tmp/oldvenv
    /tmp/oldvenv/bin/pip install -e /tmp/old
    /tmp/oldvenv/bin/audience train data/sample --out /tmp/old-artifacts
    .venv/bin/python benchmarks/server_memory.py --artifact /tmp/old-artifacts \\
        --python /tmp/oldvenv/bin/python

Prints one JSON line; writes no results file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--python", default=sys.executable, help="the serving interpreter")
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"AUDIENCE_RELOAD_SECONDS": "0"}
    with tempfile.TemporaryDirectory() as work:
        env["AUDIENCE_DATABASE_URL"] = f"sqlite:///{work}/store.db"  # ignored by old code
        command = [args.python, "-m", "audience_cli.main", "serve"]
        command += ["--artifact", str(args.artifact.resolve()), "--port", str(port)]
        server = subprocess.Popen(  # run from elsewhere: no checkout's code by accident
            [*command, "--workers", "1"], env=env, cwd=work, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not become ready")
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.3)
            idle = psutil.Process(server.pid).memory_info().rss
            with httpx.Client(base_url=base, timeout=10) as client:
                ids = client.get("/products/sample", params={"n": 100}).json()["product_ids"]
                for i in range(args.requests):
                    client.get(f"/recommend/{ids[i % len(ids)]}", params={"n": 10})
            loaded = psutil.Process(server.pid).memory_info().rss
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    print(
        json.dumps(
            {
                "artifact": str(args.artifact),
                "python": args.python,
                "rss_mb_ready": round(idle / 2**20),
                "rss_mb_after_requests": round(loaded / 2**20),
                "requests": args.requests,
            }
        )
    )


if __name__ == "__main__":
    main()
