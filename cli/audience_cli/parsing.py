"""The one way a subcommand is declared: its parser, `--json`, and the function it runs."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: Callable[[argparse.Namespace], Any],
    help_: str,
) -> argparse.ArgumentParser:
    """A subcommand that prints a human summary, or one JSON object with `--json`."""
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=run)
    return p


def artifact_flag(p: argparse.ArgumentParser, what: str = "artifact root") -> None:
    """`--artifact`, defaulting as `audience serve` does: AUDIENCE_ARTIFACT, else
    artifacts. So the CLI reads and writes the store of the server it sits beside."""
    p.add_argument(
        "--artifact",
        type=Path,
        default=Path(os.environ.get("AUDIENCE_ARTIFACT") or "artifacts"),
        help=f"{what} (default: AUDIENCE_ARTIFACT, else artifacts)",
    )


def time_flags(p: argparse.ArgumentParser) -> None:
    """The limits of a real event time, for every command that reads a raw log."""
    p.add_argument(
        "--earliest-time",
        help="reject events before this date or ISO time (default 1970-01-01; "
        "AUDIENCE_EARLIEST_EVENT_TIME)",
    )
    p.add_argument(
        "--future-tolerance",
        help="accept events up to this long after the run's clock: P2D, PT36H, 2d, or seconds "
        "(default 1 day; AUDIENCE_FUTURE_TOLERANCE)",
    )
