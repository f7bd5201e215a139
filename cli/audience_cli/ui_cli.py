"""`audience ui`: the merchant UI alone, on one port, over an artifact folder.

`audience serve` mounts the same UI under /ui beside the API; this command is for a
merchant-facing machine without the API, and for trying the UI. The artifact is
opened on the first request that needs it, and again on later ones until it opens, so
the page comes up at once and says "not ready" (rather than failing to start) while
no trained model exists yet. Campaigns are kept in the same store as `audience
campaign` and `audience serve` use (`--database`, else AUDIENCE_DATABASE_URL, else
ARTIFACT/audience.db), and its opt-outs are read every AUDIENCE_RELOAD_SECONDS, as the
server reads them: an opted-out user is in no table or download of this UI either.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from audience.errors import ArtifactError, AudienceError
from audience.serving.index import Index
from audience.settings import Settings
from audience.store.store import Store
from audience_cli.parsing import artifact_flag
from audience_cli.segment_cli import open_store

Result = tuple[dict[str, Any], str]


class ArtifactIndex:
    """`get_index` for the UI: the artifact under `root`, loaded once it can be, less
    the store's opt-outs, read again once `every` seconds have passed (the last read
    stays in force while the store cannot be read)."""

    def __init__(self, root: Path, store: Store, every: float) -> None:
        self.root, self.store, self.every = root, store, every
        self._index: Index | None = None
        self._served: Index | None = None
        self._read_at = -float("inf")
        self._lock = threading.Lock()
        self._told: str | None = None

    def __call__(self) -> Index | None:
        with self._lock:
            if self._index is None:
                try:
                    self._index = Index.open(self.root)
                except ArtifactError as exc:
                    self._say(f"model not ready: {exc}")
                    return None
            if self._served is None or time.monotonic() - self._read_at >= self.every:
                try:
                    optouts = self.store.optouts()
                except AudienceError as exc:
                    self._say(f"opt-outs not read (the last read stays in force): {exc}")
                    return self._served
                self._read_at = time.monotonic()
                if self._served is None or optouts != self._served.optouts:
                    self._served = self._index.excluding(optouts)
        return self._served

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
    get_index = ArtifactIndex(args.artifact, store, settings.reload_seconds)
    get_index()  # load now when possible, so the first merchant does not wait
    url = f"http://{args.host}:{args.port}/"
    print(f"Merchant UI: {url}  (Ctrl-C to stop)", flush=True)
    ui.launch(get_index, args.results, store, settings, args.host, args.port)
    return {"ui": url}, "audience ui: stopped"
