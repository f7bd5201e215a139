"""`audience ui`: the merchant UI alone, on one port, over an artifact folder.

`audience serve` mounts the same UI under /ui beside the API; this command is for a
merchant-facing machine without the API, and for trying the UI. The artifact is
opened on the first request that needs it, and again on later ones until it opens, so
the page comes up at once and says "not ready" (rather than failing to start) while
no trained model exists yet; a newly trained version is swapped in as the server
swaps it (`IndexHolder`), on the first request after AUDIENCE_RELOAD_SECONDS.
Campaigns are kept in the same store as `audience campaign` and `audience serve` use
(`--database`, else AUDIENCE_DATABASE_URL, else ARTIFACT/audience.db), and its opt-outs
are read every AUDIENCE_RELOAD_SECONDS, as the server reads them: an opted-out user is
in no table or download of this UI either.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from audience.serving.index import Index
from audience.settings import Settings
from audience.store.store import Store
from audience_cli.parsing import artifact_flag
from audience_cli.segment_cli import open_store

Result = tuple[dict[str, Any], str]


class ArtifactIndex:
    """`get_index` for the UI: the `IndexHolder` of the artifact under `root`, driven by
    the calls, since `audience ui` has no server loop to drive it. Until a model opens,
    every call tries; then, once `every` seconds have passed, a call swaps in a new
    version if there is one (that call waits for its load) and reads the store's
    opt-outs again (the last read stays in force while the store cannot be read)."""

    def __init__(self, root: Path, store: Store, every: float) -> None:
        # The serving package brings the web stack: imported only by the commands that serve.
        from audience.serving.api.holder import IndexHolder

        self.holder = IndexHolder(root, store=store)
        self.every = every
        self._checked_at = -float("inf")
        self._lock = threading.Lock()
        self._told: str | None = None

    def __call__(self) -> Index | None:
        with self._lock:
            if self.holder.get() is None or time.monotonic() - self._checked_at >= self.every:
                self._checked_at = time.monotonic()
                self.holder.check()
                self.holder.sync_optouts()
                status = self.holder.status
                if self.holder.get() is None and status.last_error:
                    self._say(f"model not ready: {status.last_error['message']}")
                elif status.store_error:
                    said = status.store_error["message"]
                    self._say(f"opt-outs not read (the last read stays in force): {said}")
        return self.holder.get()

    def _say(self, text: str) -> None:
        if text != self._told:  # say it once, not on every request
            self._told = text
            print(f"audience ui: {text}", file=sys.stderr, flush=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ui` to the `audience` parser."""
    help_ = "serve the merchant UI alone (audience serve also serves it under /ui)"
    p = subparsers.add_parser("ui", help=help_, description=help_)
    artifact_flag(p, "artifact root (audience train)")
    p.add_argument(
        "--database",
        help="the campaign store: postgresql://... or sqlite:///FILE (default: "
        "AUDIENCE_DATABASE_URL, else ARTIFACT/audience.db)",
    )
    p.add_argument(
        "--results", type=Path, default=Path("results"), help="analysis and backtest results"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.set_defaults(run=run_ui, json=False)


def run_ui(args: argparse.Namespace) -> Result:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from audience.serving import ui  # gradio is imported only by the commands that serve it

    settings = Settings()
    store = open_store(args, settings)
    # The holder logs each failed try; ArtifactIndex says each problem once instead.
    logging.getLogger("audience.api").setLevel(logging.CRITICAL)
    get_index = ArtifactIndex(args.artifact, store, settings.reload_seconds)
    get_index()  # load now when possible, so the first merchant does not wait
    url = f"http://{args.host}:{args.port}/"
    print(f"Merchant UI: {url}  (Ctrl-C to stop)", flush=True)
    ui.launch(get_index, args.results, store, settings, args.host, args.port)
    return {"ui": url}, "audience ui: stopped"
