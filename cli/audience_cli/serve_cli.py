"""`audience serve`: the FastAPI service under uvicorn, over a trained artifact root.

The artifact is verified before anything listens, so a missing or broken model is one
line and exit 2 rather than a server that cannot answer. With one worker the verified
index is handed to the app (loaded once); with several, uvicorn starts each worker
from `audience.serving.api:create_app` and the settings travel in AUDIENCE_* variables, and
PROMETHEUS_MULTIPROC_DIR is pointed at a fresh folder so /metrics adds up all workers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audience import artifact
from audience.errors import ConfigError
from audience.settings import Settings
from audience.store.store import Store

Result = tuple[dict[str, Any], str]
APP_FACTORY = "audience.serving.api:create_app"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve` to the `audience` parser."""
    help_ = "serve the HTTP API (FastAPI under uvicorn) over a trained artifact"
    p = subparsers.add_parser("serve", help=help_, description=help_)
    p.add_argument(
        "--artifact",
        type=Path,
        help="artifact root from `audience train --out` (default: AUDIENCE_ARTIFACT or artifacts)",
    )
    p.add_argument(
        "--results",
        type=Path,
        help="results the UI shows (default: AUDIENCE_RESULTS or results)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; 2 on two cores)"
    )
    p.set_defaults(run=run_serve, json=False)


def run_serve(args: argparse.Namespace) -> Result:
    import uvicorn  # the web stack is imported only by the command that serves

    from audience.serving.api.observe import log_config

    settings = Settings()
    root = (args.artifact or settings.artifact).expanduser().resolve()
    if args.workers < 1:
        raise ConfigError("--workers", f"must be >= 1, got {args.workers}")
    if not 0 < args.port < 65536:
        raise ConfigError("--port", f"must be in 1..65535, got {args.port}")
    results = (args.results or settings.results).expanduser().resolve()
    settings = settings.model_copy(update={"artifact": root, "results": results})
    os.environ["AUDIENCE_ARTIFACT"] = str(root)  # for workers started from the factory
    os.environ["AUDIENCE_RESULTS"] = str(results)
    # The store is read before any worker starts: a store that cannot be read (or a bad
    # AUDIENCE_DATABASE_URL) stops the command with its message and a non-zero exit,
    # not a supervisor whose workers die one by one.
    Store.open(settings.database_url, root).optouts()
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": log_config(settings.log_level),
        "access_log": False,  # the app writes its own JSON access log
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }
    if args.workers == 1:
        from audience.serving.api import create_app
        from audience.serving.index import Index

        index = Index.open(root)  # ArtifactError: exit 2 before listening
        _banner(args, settings, index.version, index.n)
        uvicorn.run(create_app(settings, index=index), **common)
    else:
        verified = artifact.load(root)
        _banner(args, settings, verified.version, int(verified.manifest["config"]["n"]))
        del verified
        with _metrics_dir():
            uvicorn.run(APP_FACTORY, factory=True, workers=args.workers, **common)
    return {"stopped": True}, "audience serve: stopped"


@contextlib.contextmanager
def _metrics_dir() -> Iterator[None]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for this server's workers, removed at exit."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield  # the operator chose one (and cleans it between runs)
        return
    made = tempfile.mkdtemp(prefix="audience-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    try:
        yield
    finally:
        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def _banner(args: argparse.Namespace, settings: Settings, version: str, n: int) -> None:
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    keys = len(settings.api_keys)
    access = (
        f"X-API-Key required ({keys} key{'s' if keys != 1 else ''} configured)"
        if keys
        else "OPEN: no AUDIENCE_API_KEYS, anyone who can reach it may call it (demo mode)"
    )
    lines = [
        f"audience serve: model {version} (N = {n}) from {settings.artifact}",
        f"  listening on {args.host}:{args.port} with {args.workers} worker(s)",
        f"  merchant  {base}/ui/   (the UI)",
        f"  API docs  {base}/docs",
        f"  audience  {base}/recommend/{{product_id}}?n={min(10, n)}",
        f"  ready     {base}/ready    metrics {base}/metrics",
        f"  access    {access}",
        f"  reload    every {settings.reload_seconds:g} s when `current` changes"
        if settings.reload_seconds > 0
        else "  reload    on SIGHUP only (AUDIENCE_RELOAD_SECONDS=0)",
    ]
    print("\n".join(lines), flush=True)
    if not keys:
        print(f"audience serve: WARNING: {access}", file=sys.stderr, flush=True)
