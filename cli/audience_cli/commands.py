"""One function per subcommand: call the library, return (result, human text)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from audience import __version__, atomic, reference
from audience.analyze import analyze as analyze_log
from audience.generate import generate as generate_log
from audience.ingest import CATALOG_FILE, EVENTS_FILE, column_mapping, event_mapping, load_events
from audience.ingest import ingest as ingest_log
from audience.schema import EVENT_SCHEMA
from audience.settings import Settings
from audience.stats import fingerprint, log_stats
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
        text += report.stats_text(stats)
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
    return result, report.stats_text(result)


def _progress() -> Callable[[str], None]:
    """Progress lines on stderr with the elapsed time, so stdout stays clean for --json."""
    start = time.perf_counter()

    def report_step(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return report_step


def load(args: argparse.Namespace, settings: Settings) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The events to work on: a canonical table, a raw log (ingested on the fly), or a preset."""
    if args.path is None:
        events, _ = generate_log(args.preset, scale=args.scale, seed=args.seed)
        source = {"generated": {"preset": args.preset, "scale": args.scale, "seed": args.seed}}
        return events, source | {"fingerprint": fingerprint(events)}
    path = Path(args.path)
    canonical = path / EVENTS_FILE if path.is_dir() else path
    is_parquet = canonical.suffix == ".parquet" and canonical.exists()
    if is_parquet and pl.read_parquet_schema(canonical) == dict(EVENT_SCHEMA):
        events = load_events(canonical)
        return events, {"path": str(canonical), "fingerprint": fingerprint(events)}
    with tempfile.TemporaryDirectory(prefix="audience-") as tmp:
        summary = ingest_log(
            args.path,
            Path(tmp),
            columns=column_mapping(args.columns),
            events=event_mapping(args.events, settings),
            settings=settings,
        )
        events = load_events(Path(tmp))
    ingested = {k: summary[k] for k in ("rows_read", "events", "rejected", "duplicates_removed")}
    return events, {"path": args.path, "ingest": ingested, "fingerprint": fingerprint(events)}


def analyze(args: argparse.Namespace) -> Result:
    settings = Settings()
    progress = _progress()
    progress("loading events")
    events, source = load(args, settings)
    result = analyze_log(events, settings.event_weights, seed=args.seed, progress=progress)
    command = "audience " + " ".join(sys.argv[1:]) if sys.argv[1:] else "audience analyze"
    meta = {
        "command": command,
        "version": __version__,
        "input": source,
        "config": {"event_weights": settings.event_weights, "seed": args.seed},
    }
    out = Path(args.out)
    progress(f"writing results to {out}")
    atomic.write_json(meta | {"statistics": result["statistics"]}, out / "data_statistics.json")
    atomic.write_json(
        meta | {"cf_baseline": result["cf"], "verdict": result["verdict"]}, out / "cf_metrics.json"
    )
    charts = report.analysis_charts(result, out)
    atomic.write_text(report.analysis_markdown(result, meta, charts, out), out / "analysis.md")
    full = (
        meta | result | {"outputs": [str(out / n) for n in RESULT_FILES] + [str(c) for c in charts]}
    )
    return full, report.analysis_terminal(result) + f"\nwrote {out}/: " + ", ".join(RESULT_FILES)


RESULT_FILES = ("data_statistics.json", "cf_metrics.json", "analysis.md")
