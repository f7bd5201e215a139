"""The one way a subcommand is declared: its parser, `--json`, and the function it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
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
