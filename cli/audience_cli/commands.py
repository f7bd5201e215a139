"""One function per subcommand: call the library, return (result, human text)."""

from __future__ import annotations

import argparse
from typing import Any

from audience import atomic, reference
from audience.generate import generate as generate_log
from audience.ingest import CATALOG_FILE, EVENTS_FILE, column_mapping, event_mapping, load_events
from audience.ingest import ingest as ingest_log
from audience.settings import Settings
from audience.stats import log_stats
from audience_cli import report

Result = tuple[dict[str, Any], str]


def generate(args: argparse.Namespace) -> Result:
    events, catalog = generate_log(args.preset, scale=args.scale, seed=args.seed)
    atomic.write_parquet(catalog, args.out / CATALOG_FILE)
    atomic.write_parquet(events, args.out / EVENTS_FILE)
    stats = log_stats(events)
    result: dict[str, Any] = {
        "preset": args.preset,
        "scale": args.scale,
        "seed": args.seed,
        "outputs": {
            "events": str(args.out / EVENTS_FILE),
            "products": str(args.out / CATALOG_FILE),
        },
        "catalog_products": catalog.height,
        "stats": stats,
    }
    text = (
        f"Generated the '{args.preset}' sample log "
        f"(scale {args.scale:g}, seed {args.seed}) in {args.out}\n"
    )
    if args.preset == "marketplace":
        result["reference_comparison"] = reference.compare(stats, args.scale)
        text += "\nBeside the reference marketplace log (DESIGN.md):\n"
        text += report.comparison(result["reference_comparison"])
    else:
        text += report.stats(stats)
    return result, text


def ingest(args: argparse.Namespace) -> Result:
    settings = Settings()
    summary = ingest_log(
        args.path,
        args.out,
        columns=column_mapping(args.columns),
        events=event_mapping(args.events, settings),
        catalog=args.catalog,
        max_reject_share=args.max_reject_share,
        settings=settings,
    )
    return summary, report.ingest_summary(summary)


def stats(args: argparse.Namespace) -> Result:
    result = log_stats(load_events(args.path))
    return result, report.stats(result)
