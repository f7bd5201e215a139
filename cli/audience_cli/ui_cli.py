"""`audience ui`: the merchant UI alone, on one port, over an artifact folder.

`audience serve` mounts the same UI under /ui beside the API; this command is for a
merchant-facing machine without the API, and for trying the UI. The artifact is
opened on the first request that needs it, and again on later ones until it opens, so
the page comes up at once and says "not ready" (rather than failing to start) while
no trained model exists yet. Campaigns are kept in the same store as `audience
campaign` and `audience serve` use (`--database`, else AUDIENCE_DATABASE_URL, else
ARTIFACT/audience.db).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import Any

from audience.errors import ArtifactError
from audience.serving.index import Index
from audience.settings import Settings
from audience_cli.segment_cli import open_store

Result = tuple[dict[str, Any], str]


class ArtifactIndex:
    """`get_index` for the UI: the artifact under `root`, loaded once it can be."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: Index | None = None
        self._lock = threading.Lock()
        self._told: str | None = None

    def __call__(self) -> Index | None:
        with self._lock:
            if self._index is None:
                try:
                    self._index = Index.open(self.root)
                except ArtifactError as exc:
                    if str(exc) != self._told:  # say it once, not on every request
                        self._told = str(exc)
                        print(f"audience ui: model not ready: {exc}", file=sys.stderr, flush=True)
        return self._index


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ui` to the `audience` parser."""
    help_ = "serve the merchant UI alone (audience serve also serves it under /ui)"
    p = subparsers.add_parser("ui", help=help_, description=help_)
    p.add_argument(
        "--artifact", type=Path, default=Path("artifacts"), help="artifact root (audience train)"
    )
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
    get_index = ArtifactIndex(args.artifact)
    get_index()  # load now when possible, so the first merchant does not wait
    url = f"http://{args.host}:{args.port}/"
    print(f"Merchant UI: {url}  (Ctrl-C to stop)", flush=True)
    ui.launch(get_index, args.results, store, settings, args.host, args.port)
    return {"ui": url}, "audience ui: stopped"
