"""`audience optout add|remove|list`: users who must never be named, in the store.

A running server serves a change within AUDIENCE_RELOAD_SECONDS (its next poll).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from audience.data.schema import USER
from audience.errors import ConfigError
from audience.settings import Settings
from audience_cli.parsing import add_command
from audience_cli.segment_cli import ids_from, open_store, store_flags

Result = tuple[dict[str, Any], str]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = "opt users out of every answer, take it back, or list the opt-outs"
    p = sub.add_parser("optout", help=help_, description=help_)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, run, what in (
        ("add", add, "opt users out"),
        ("remove", remove, "take users' opt-outs back"),
    ):
        q = add_command(actions, name, run, what)
        store_flags(q)
        q.add_argument("users", nargs="*", help="user ids")
        q.add_argument("--file", type=Path, help="file of user ids, one per line (or CSV/Parquet)")
        if name == "add":
            q.add_argument("--reason", help="why, for the record (e.g. unsubscribe link)")
    q = add_command(actions, "list", listing, "the newest opt-outs")
    store_flags(q)
    q.add_argument("--limit", type=int, default=100, help="most rows shown (default 100)")


def _users(args: argparse.Namespace) -> list[str]:
    users = list(args.users)
    if args.file is not None:
        users += ids_from(args.file, "--file", USER)
    if not users:
        raise ConfigError("users", "name at least one user id (or --file)")
    return users


def add(args: argparse.Namespace) -> Result:
    store = open_store(args, Settings())
    users = _users(args)
    added = store.add_optouts(users, args.reason)
    total = len(store.optouts())
    summary = {"added": added, "already_opted_out": len(set(users)) - added, "opted_out": total}
    return summary, f"opted out {added:,} user(s) ({total:,} in all)"


def remove(args: argparse.Namespace) -> Result:
    store = open_store(args, Settings())
    removed = store.remove_optouts(_users(args))
    total = len(store.optouts())
    return {"removed": removed, "opted_out": total}, (
        f"took back {removed:,} opt-out(s) ({total:,} left)"
    )


def listing(args: argparse.Namespace) -> Result:
    if args.limit < 1:
        raise ConfigError("--limit", f"must be at least 1, got {args.limit}")
    store = open_store(args, Settings())
    rows = store.optout_rows(args.limit)
    total = len(store.optouts())
    lines = [f"{total:,} opted-out user(s); newest first:"]
    lines += [f"  {r['user_id']}  {r['at']}  {r['reason'] or ''}".rstrip() for r in rows]
    return {"opted_out": total, "optouts": rows}, "\n".join(lines)
