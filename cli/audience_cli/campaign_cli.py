"""`audience campaign create|launch|list|show|export|report`: the campaign loop.

Each action calls one function of `audience.serving.campaigns` on the store (the
artifact root's `audience.db`, or `--database` / AUDIENCE_DATABASE_URL).
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from audience import atomic
from audience.errors import ConfigError
from audience.experiments.judge import SCOPES
from audience.serving import campaigns
from audience.serving.segment import size_of
from audience.settings import Settings
from audience.store.store import ARMS, Campaign
from audience_cli.commands import load, settings_for
from audience_cli.parsing import add_command, time_flags
from audience_cli.segment_cli import (
    filters_of,
    like_of,
    open_store,
    rules_of,
    segment_flags,
    served,
    store_flags,
)

Result = tuple[dict[str, Any], str]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = "create, launch, export and judge campaigns with a holdout"
    p = sub.add_parser("campaign", help=help_, description=help_)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    q = add_command(actions, "create", create, "freeze a product's segment and split it")
    store_flags(q)
    q.add_argument("--product", required=True, help="product id")
    segment_flags(q)
    q.add_argument("--holdout", type=float, required=True, help="share held out, in (0, 1)")
    q.add_argument("--name", required=True, help="a name for people")
    q.add_argument("--conversion", default="purchased", help="event type that counts (purchased)")
    q.add_argument("--scope", default="product", choices=SCOPES, help="where it counts")
    q.add_argument("--window-days", type=float, default=14.0, help="days after launch (14)")
    q.add_argument("--cost-per-contact", type=float, default=0.0, help="for the ROI")
    q.add_argument("--value-per-conversion", type=float, default=0.0, help="for the ROI")
    q.add_argument("--channel", default=campaigns.DEFAULT_CHANNEL, help="recorded on contacts")

    q = add_command(actions, "launch", launch, "launch: record the treatment arm as contacted")
    store_flags(q)
    q.add_argument("id", help="campaign id")
    q.add_argument("--at", help="the time it launched elsewhere (ISO-8601), after the fact")

    q = add_command(actions, "list", listing, "every campaign, newest first")
    store_flags(q)

    q = add_command(actions, "show", show, "one campaign")
    store_flags(q)
    q.add_argument("id", help="campaign id")

    q = add_command(actions, "export", export, "the list to send: user_id, arm, rank, score")
    store_flags(q)
    q.add_argument("id", help="campaign id")
    q.add_argument("--arm", default="treatment", choices=(*ARMS, "all"), help="(treatment)")
    q.add_argument("--out", type=Path, required=True, help="FILE.csv or FILE.parquet")

    q = add_command(
        actions, "simulate", simulate, "write a post-launch log with a known lift (a rehearsal)"
    )
    store_flags(q)
    q.add_argument("id", help="a launched campaign's id")
    q.add_argument("--baseline", type=float, required=True, help="holdout conversion rate")
    q.add_argument("--lift", type=float, required=True, help="relative lift of the treatment")
    q.add_argument("--seed", type=int, default=0, help="random seed (output is deterministic)")
    q.add_argument("--background", type=int, default=0, help="noise events that do not count")
    q.add_argument("--out", type=Path, required=True, help="FILE.parquet (a canonical table)")

    q = add_command(actions, "report", report, "judge a launched campaign from a log")
    store_flags(q)
    q.add_argument("id", help="campaign id")
    q.add_argument("--log", required=True, help="any log `ingest` reads, or a canonical table")
    q.add_argument("--out", type=Path, help="folder for report.json, .md, .png")
    q.add_argument("--columns", help="for a raw log: as in `audience ingest`")
    q.add_argument("--events", help="for a raw log: as in `audience ingest`")
    time_flags(q)


def _line(c: Campaign) -> str:
    result = ""
    if c.report is not None:
        result = f"  {c.report.get('verdict', '')}"
    return (
        f"{c.id}  {c.state:<8}  {c.name}  product {c.product_id}: "
        f"{c.treatment:,} treatment / {c.holdout:,} holdout{result}"
    )


def create(args: argparse.Namespace) -> Result:
    settings = Settings()
    store = open_store(args, settings)
    index = served(args, store)
    plan = campaigns.Plan(
        name=args.name,
        holdout_share=args.holdout,
        conversion=args.conversion,
        scope=args.scope,
        window_days=args.window_days,
        cost_per_contact=args.cost_per_contact,
        value_per_conversion=args.value_per_conversion,
        channel=args.channel,
        like=like_of(args),
        category=args.category,
        extra={
            "min_score": args.min_score,
            "active_within_days": args.active_within_days,
            "exclude_events": args.exclude_events,
            "exclude_users": None if args.exclude_users is None else str(args.exclude_users),
        },
    )
    k = size_of(index, args.size, args.share)
    made = campaigns.create(
        index, store, settings, args.product, k, plan, filters_of(args), rules_of(args, settings)
    )
    text = f"created {made.id}\n{_line(made)}"
    if made.srm.get("mismatch"):
        text += (
            f"\n  WARNING: the split fails the sample-ratio check (p = {made.srm['p_value']:.2g})"
        )
    return made.as_dict(), text


def launch(args: argparse.Namespace) -> Result:
    at = None
    if args.at is not None:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            raise ConfigError("--at", f"expected an ISO-8601 time, got {args.at!r}") from None
    store = open_store(args, Settings())
    done = campaigns.launch(store, args.id, at)
    return done.as_dict(), f"launched {done.id} at {done.as_dict()['launched_at']}\n{_line(done)}"


def listing(args: argparse.Namespace) -> Result:
    found = open_store(args, Settings()).campaigns()
    lines = [_line(c) for c in found] or ["no campaigns yet: `audience campaign create`"]
    return {"campaigns": [c.as_dict() for c in found]}, "\n".join(lines)


def show(args: argparse.Namespace) -> Result:
    found = open_store(args, Settings()).campaign(args.id)
    record = found.as_dict()
    lines = [_line(found)] + [
        f"  {key}: {value}" for key, value in record.items() if key not in ("report", "srm")
    ]
    return record, "\n".join(lines)


def export(args: argparse.Namespace) -> Result:
    out: Path = args.out
    if out.suffix not in (".csv", ".parquet"):
        raise ConfigError("--out", f"must end in .csv or .parquet, got {out.name!r}")
    store = open_store(args, Settings())
    rows = campaigns.assignments(store, args.id, None if args.arm == "all" else args.arm)
    if out.suffix == ".csv":
        atomic.write_text(rows.write_csv(), out)
    else:
        atomic.write_parquet(rows, out)
    counts = dict(rows.group_by("arm").len().iter_rows()) if rows.height else {}
    return {"out": str(out), "rows": rows.height, "arms": counts}, (
        f"wrote {rows.height:,} rows ({args.arm}) to {out}"
    )


def simulate(args: argparse.Namespace) -> Result:
    if args.out.suffix != ".parquet":
        raise ConfigError("--out", f"must end in .parquet, got {args.out.name!r}")
    store = open_store(args, Settings())
    events = campaigns.simulate(
        store, args.id, args.baseline, args.lift, args.seed, args.background
    )
    atomic.write_parquet(events, args.out)
    return {"out": str(args.out), "events": events.height}, (
        f"wrote {events.height:,} simulated events after the launch to {args.out}"
    )


def report(args: argparse.Namespace) -> Result:
    settings = settings_for(args)
    store = open_store(args, settings)
    campaigns.launched(store, args.id)  # before reading a log it could not judge
    args.path = args.log
    events, catalog, _ = load(args, settings)
    frame = None if catalog is None else catalog.collect()
    judged, written = campaigns.report(store, args.id, events, frame, settings, args.out)
    result = judged.to_dict() | {"files": {k: str(v) for k, v in written.items()}}
    text = judged.verdict + "".join(f"\n  {k}: {v}" for k, v in written.items())
    return result, text
