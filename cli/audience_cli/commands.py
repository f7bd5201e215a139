"""One function per subcommand: call the library, return (result, human text)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from audience import __version__, artifact, atomic
from audience.data import reference
from audience.data.generate import generate as generate_log
from audience.data.ingest import (
    CATALOG_FILE,
    EVENTS_FILE,
    column_mapping,
    event_mapping,
    load_events,
)
from audience.data.ingest import ingest as ingest_log
from audience.data.schema import EVENT_SCHEMA
from audience.data.stats import fingerprint, log_stats
from audience.errors import ConfigError, RejectLimitError
from audience.model.audiences import AudienceConfig
from audience.model.cf import AlsParams
from audience.model.codes import coded
from audience.model.train import Progress, Trained
from audience.model.train import train as train_model
from audience.settings import Settings, configured
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


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings of a command that may read a raw log: its time flags over the environment."""
    return configured(
        {
            "earliest_event_time": ("--earliest-time", args.earliest_time),
            "future_tolerance": ("--future-tolerance", args.future_tolerance),
        }
    )


def ingest(args: argparse.Namespace) -> Result:
    settings = settings_for(args)
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


def _command(name: str) -> str:
    """The command line as the user typed it, for results files."""
    return "audience " + " ".join(sys.argv[1:]) if sys.argv[1:] else f"audience {name}"


def stderr_progress() -> Callable[[str], None]:
    """Progress lines on stderr with the elapsed time, so stdout stays clean for --json."""
    start = time.perf_counter()

    def report_step(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return report_step


def _catalog_in(folder: Path) -> pl.LazyFrame | None:
    """The product catalog ingest or generate wrote beside the events, if any, scanned:
    a train reads its names and prices only as it writes them (`audience.model.codes.Log`)."""
    listed = folder / CATALOG_FILE
    return pl.scan_parquet(listed) if listed.exists() else None


def load(
    args: argparse.Namespace, settings: Settings
) -> tuple[pl.DataFrame, pl.LazyFrame | None, dict[str, Any]]:
    """(events, catalog or None, source) from a canonical table, a raw log, or a preset."""
    catalog: pl.LazyFrame | None
    source: dict[str, Any]
    if args.path is None:
        events, generated = generate_log(args.preset, scale=args.scale, seed=args.seed)
        source = {"generated": {"preset": args.preset, "scale": args.scale, "seed": args.seed}}
        return events, generated.lazy(), source | {"fingerprint": fingerprint(events)}
    path = Path(args.path)
    canonical = path / EVENTS_FILE if path.is_dir() else path
    is_parquet = canonical.suffix == ".parquet" and canonical.exists()
    if is_parquet and pl.read_parquet_schema(canonical) == dict(EVENT_SCHEMA):
        events = load_events(canonical)
        catalog = _catalog_in(canonical.parent)
        return events, catalog, {"path": str(canonical), "fingerprint": fingerprint(events)}
    tmp = Path(tempfile.mkdtemp(prefix="audience-"))
    kept = False
    try:
        summary = ingest_log(
            args.path,
            tmp,
            columns=column_mapping(args.columns),
            events=event_mapping(args.events, settings),
            settings=settings,
        )
        events = load_events(tmp)
        scanned = _catalog_in(tmp)  # read now: the folder goes
        catalog = None if scanned is None else scanned.collect().lazy()
    except RejectLimitError:
        kept = True  # the error names the rejected rows in tmp/failed_ingest: they stay
        raise
    finally:
        if not kept:
            shutil.rmtree(tmp, ignore_errors=True)
    ingested = {k: summary[k] for k in ("rows_read", "events", "rejected", "duplicates_removed")}
    source = {"path": args.path, "ingest": ingested, "fingerprint": fingerprint(events)}
    return events, catalog, source


def analyze(args: argparse.Namespace) -> Result:
    from audience.evidence.analyze import analyze as analyze_log  # scipy, implicit: only here

    settings = settings_for(args)
    progress = stderr_progress()
    progress("loading events")
    events, _, source = load(args, settings)
    result = analyze_log(events, settings.event_weights, seed=args.seed, progress=progress)
    command = _command("analyze")
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


def _types(value: str | None) -> tuple[str, ...] | None:
    """`--exclude purchased,cart` as event types (AudienceConfig.check names unknown ones)."""
    if value is None:
        return None
    return tuple(t.strip().lower() for t in value.split(",") if t.strip())


def train(args: argparse.Namespace) -> Result:
    settings = settings_for(args)
    config = AudienceConfig(
        n=args.n, exclude=_types(args.exclude), cap=args.cap, repeat=args.repeat
    )
    config.check(settings.event_types)
    spark_flags(args)
    if args.engine == "spark":
        return _train_on_spark(args, settings, config)
    progress = stderr_progress()
    progress("loading events")
    events, catalog, source = load(args, settings)
    progress("numbering users and products")
    log = coded(events, catalog, settings.event_weights)
    del events, catalog  # the coded log holds what train needs of them
    # The user_scores table is written as soon as the users are scored, and its components
    # and features read back from it (3 GB at 100x the sample): beside the artifacts, so
    # that publishing moves it in, rather than in a temporary folder that may be in memory.
    with artifact.workspace(Path(args.out)) as work:
        als = (
            (lambda: _als_params(args.analysis, source, settings.event_weights))
            if args.analysis
            else None
        )
        trained = train_model(
            log, settings.event_weights, args.model, config, progress, work, args.cf, als
        )
        return _published(args, trained, source, config, progress)


def spark_flags(args: argparse.Namespace) -> None:
    """A ConfigError for --master or --spark-conf without --engine spark."""
    if args.engine == "spark":
        return
    for flag, given in (("--master", args.master), ("--spark-conf", args.spark_conf)):
        if given:
            raise ConfigError(flag, "is for --engine spark")


def _spark_hybrid(
    args: argparse.Namespace, weights: dict[str, float], stack: ExitStack, progress: Progress
) -> Callable[[pl.DataFrame, pl.DataFrame | None], tuple[pl.DataFrame, dict[str, Any]]]:
    """The backtest's Spark hybrid (`spark.train.hybrid_lists`), in a Spark session and a
    temporary folder that last as long as `stack`."""
    from audience.model.spark.session import parse_conf, running
    from audience.model.spark.train import hybrid_lists

    conf = parse_conf(args.spark_conf)
    progress(f"starting Spark ({args.master or 'spark-submit or local[*]'})")
    spark = stack.enter_context(running(args.master, conf))
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="audience-spark-")))

    def made(events: pl.DataFrame, catalog: pl.DataFrame | None) -> Any:
        return hybrid_lists(spark, events, catalog, weights, args.n, folder, progress)

    return made


def _train_on_spark(args: argparse.Namespace, settings: Settings, config: AudienceConfig) -> Result:
    """`audience train --engine spark`: the model as a Spark job (`audience.model.spark`)."""
    from audience.model.spark.session import parse_conf, running
    from audience.model.spark.train import accepted
    from audience.model.spark.train import train as train_on_spark

    if args.path is None:
        raise ConfigError(
            "--engine", "spark reads a canonical table: give LOG (e.g. data/sample, s3a://b/log/)"
        )
    if args.analysis is not None:
        raise ConfigError("--analysis", "tunes the collaborative term, which is --engine polars'")
    accepted(config, args.cf)
    conf = parse_conf(args.spark_conf)
    progress = stderr_progress()
    progress(f"starting Spark ({args.master or 'spark-submit or local[*]'})")
    with running(args.master, conf) as spark, artifact.workspace(Path(args.out)) as work:
        heap = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory()
        master = spark.sparkContext.master
        progress(f"Spark {spark.version} on {master}: driver heap {heap >> 20} MB")
        weights = settings.event_weights
        trained = train_on_spark(
            spark, args.path, weights, args.model, config, work, args.cf, progress
        )
        return _published(args, trained, {"path": args.path}, config, progress)


def _published(
    args: argparse.Namespace,
    trained: Trained,
    source: dict[str, Any],
    config: AudienceConfig,
    progress: Progress,
) -> Result:
    """A trained model published as the artifact root's new current version."""
    progress(f"writing a new version under {args.out}")
    meta = {
        "command": _command("train"),
        "audience_version": __version__,
        "input": source,
        "config": {"model": args.model, "cf": args.cf, "engine": args.engine, **asdict(config)},
        "cf": trained.model["cf"],
        "stats": trained.stats,
    }
    folder = artifact.publish(args.out, trained.tables, trained.model, meta)
    result = {"version": folder.name, "path": str(folder), **meta}
    return result, report.train_summary(result)


def _als_params(folder: Path, source: dict[str, Any], weights: dict[str, float]) -> AlsParams:
    """ALS's parameters as `audience analyze` tuned them on the same log (its
    cf_metrics.json in `folder`) with the same event weights."""
    path = folder / "cf_metrics.json"
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("--analysis", f"{path}: cannot be read ({exc})") from None
    theirs = (found.get("input") or {}).get("fingerprint")
    if theirs != source.get("fingerprint"):
        raise ConfigError(
            "--analysis",
            f"{path} analyzed another log (fingerprint {theirs}, this one "
            f"{source.get('fingerprint')}): run `audience analyze` on this log first",
        )
    used = (found.get("config") or {}).get("event_weights")
    if used is not None and used != weights:
        raise ConfigError(
            "--analysis",
            f"{path} was tuned with event weights {used}, this train uses {weights}",
        )
    chosen = (found.get("cf_baseline") or {}).get("tuning", {}).get("chosen")
    if not chosen:
        raise ConfigError("--analysis", f"{path} holds no tuned ALS (the baseline was skipped)")
    try:
        return AlsParams(**chosen)
    except TypeError as exc:
        raise ConfigError("--analysis", f"{path}: unexpected ALS parameters ({exc})") from None


BACKTEST_FILES = ("model_metrics.json", "model_metrics.md")


def _ns(value: str | None) -> tuple[int, ...]:
    from audience.evidence.evaluate import ACTIVITY_NS

    if value is None:
        return ACTIVITY_NS
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(
            "--activity-n", f"expected numbers like 100,1000, got {value!r}"
        ) from None


def evaluate(args: argparse.Namespace) -> Result:
    """The time-split backtest: every model trained before the cutoff, judged after it."""
    from audience.evidence.evaluate import backtest, parse_cutoff  # scipy: only for this command

    settings = settings_for(args)
    cutoff = parse_cutoff(args.cutoff) if args.cutoff else None
    ns = _ns(args.activity_n)
    spark_flags(args)
    progress = stderr_progress()
    progress("loading events")
    events, catalog, source = load(args, settings)
    with ExitStack() as stack:
        spark_hybrid = None
        if args.engine == "spark":
            spark_hybrid = _spark_hybrid(args, settings.event_weights, stack, progress)
        result = backtest(
            events,
            catalog,
            settings.event_weights,
            args.n,
            ns,
            cutoff,
            args.seed,
            args.repeat,
            progress,
            spark_hybrid,
        )
    meta = {
        "command": _command("evaluate"),
        "version": __version__,
        "input": source,
        "config": {
            "n": args.n,
            "repeat": args.repeat,
            "activity_n": list(ns),
            "cutoff": args.cutoff,
            "seed": args.seed,
            "event_weights": settings.event_weights,
            "engine": args.engine,
        },
    }
    out = Path(args.out)
    progress(f"writing results to {out}")
    atomic.write_json(meta | result, out / "model_metrics.json")
    charts = report.backtest_charts(result, out)
    atomic.write_text(report.backtest_markdown(result, meta, charts, out), out / "model_metrics.md")
    outputs = [str(out / n) for n in BACKTEST_FILES] + [str(c) for c in charts]
    text = report.backtest_terminal(result) + f"\nwrote {out}/: " + ", ".join(BACKTEST_FILES)
    return meta | result | {"outputs": outputs}, text
