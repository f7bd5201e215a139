"""`audience segment`: campaign-size audiences for one product or many, to CSV or Parquet.

Each product's segment is ranked on demand from the artifact (`audience.serving.segment`)
and written as `product_id, rank, user_id, score` (+ `reasons`). The rows go to a
temporary file beside the output, a product at a time, and are moved into place only
when every product is done: a failed run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from audience.data.schema import PRODUCT, USER
from audience.errors import ConfigError
from audience.serving.index import Index
from audience.serving.segment import FILTERS, Filters, segment, size_of
from audience.settings import Settings
from audience.store.store import Fatigue, Store
from audience_cli.commands import stderr_progress
from audience_cli.parsing import add_command, artifact_flag

Result = tuple[dict[str, Any], str]
FORMATS = (".csv", ".parquet")


def store_flags(p: argparse.ArgumentParser) -> None:
    """Where the model and the store are, for every command that uses the store."""
    artifact_flag(p)
    p.add_argument(
        "--database",
        help="the store: postgresql://... or sqlite:///FILE (default: AUDIENCE_DATABASE_URL, "
        "else ARTIFACT/audience.db)",
    )


def open_store(args: argparse.Namespace, settings: Settings) -> Store:
    return Store.open(args.database or settings.database_url, args.artifact)


def served(args: argparse.Namespace, store: Store) -> Index:
    """The artifact's model as the server serves it: the store's opt-outs left out."""
    return Index.open(args.artifact).excluding(store.optouts())


def segment_flags(p: argparse.ArgumentParser) -> None:
    """The size and filters of a segment (`audience segment`, `audience campaign create`)."""
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--size", type=int, help="users per product")
    size.add_argument("--share", type=float, help="share of every known user, in (0, 1]")
    p.add_argument("--like", help="for a new product: similar known products, comma-separated")
    p.add_argument("--category", help="for a new product: its category")
    p.add_argument("--min-score", type=float, help="leave out users scoring below this")
    p.add_argument(
        "--active-within-days", type=float, help="only users active within D days of training"
    )
    p.add_argument(
        "--exclude-events",
        help="leave out users with one of these event types on the product: purchased,cart",
    )
    p.add_argument("--exclude-users", type=Path, help="file of user ids to leave out")
    p.add_argument(
        "--exclude-contacted-within-days",
        type=float,
        help="leave out users contacted in the last D days (the store's contact history)",
    )
    p.add_argument(
        "--max-contacts",
        type=int,
        help="contact policy: leave out users with this many contacts in the last "
        "--contact-window-days (default AUDIENCE_MAX_CONTACTS, 2; 0 = no policy)",
    )
    p.add_argument(
        "--contact-window-days",
        type=float,
        help="the policy's window (default AUDIENCE_CONTACT_WINDOW_DAYS, 7)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "segment", run, "a product's audience at any depth, filtered, to a file")
    store_flags(p)
    p.add_argument("--product", action="append", default=[], help="product id (repeatable)")
    p.add_argument("--products", type=Path, help="file of product ids, one per line")
    segment_flags(p)
    p.add_argument("--reasons", action="store_true", help="add each row's reasons")
    p.add_argument("--out", type=Path, required=True, help="FILE.csv or FILE.parquet")


def ids_from(path: Path, flag: str, column: str) -> list[str]:
    """Ids from a file: one per line, or a CSV / Parquet file with a `column` column."""
    if not path.is_file():
        raise ConfigError(flag, f"{path}: no such file")
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
    else:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if lines and lines[0] == column:  # a CSV with a header
            lines = lines[1:]
        return lines
    if column not in frame.columns:
        raise ConfigError(flag, f"{path}: no {column!r} column (has {frame.columns})")
    return frame.get_column(column).cast(pl.String).drop_nulls().to_list()


def _products(args: argparse.Namespace) -> list[str]:
    products = list(args.product)
    if args.products is not None:
        products += ids_from(args.products, "--products", PRODUCT)
    if not products:
        raise ConfigError("--product", "name at least one product (--product or --products)")
    return list(dict.fromkeys(products))  # in order, each once


def filters_of(args: argparse.Namespace) -> Filters:
    """The filters of `segment_flags` (the contact rules are `rules_of`)."""
    excluded = (
        frozenset(ids_from(args.exclude_users, "--exclude-users", USER))
        if args.exclude_users
        else frozenset()
    )
    events = tuple(t.strip() for t in (args.exclude_events or "").split(",") if t.strip())
    return Filters(args.min_score, args.active_within_days, events, excluded)


def rules_of(args: argparse.Namespace, settings: Settings) -> Fatigue:
    return Fatigue.of(
        settings, args.exclude_contacted_within_days, args.max_contacts, args.contact_window_days
    )


def like_of(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(p.strip() for p in (args.like or "").split(",") if p.strip())


def run(args: argparse.Namespace) -> Result:
    out: Path = args.out
    if out.suffix not in FORMATS:
        raise ConfigError("--out", f"must end in .csv or .parquet, got {out.name!r}")
    products = _products(args)
    settings = Settings()
    store = open_store(args, settings)
    filters = dataclasses.replace(
        filters_of(args), fatigued=store.fatigued(rules_of(args, settings))
    )
    like = like_of(args)
    progress = stderr_progress()
    index = served(args, store)
    k = size_of(index, args.size, args.share)
    out.parent.mkdir(parents=True, exist_ok=True)
    removed: Counter[str] = Counter()
    strategies: Counter[str] = Counter()
    rows, last = 0, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".segment-", dir=out.parent) as work:
        parts = []
        for i, product in enumerate(products):
            found = segment(index, product, k, like, args.category, filters, args.reasons)
            removed.update(found.removed)
            strategies[found.strategy] += 1
            part = Path(work) / f"{i:08d}.parquet"
            found.rows.select(pl.lit(product).alias(PRODUCT), pl.all()).write_parquet(part)
            parts.append(part)
            rows += found.rows.height
            if time.perf_counter() - last > 1 or i + 1 == len(products):
                progress(f"{i + 1:,}/{len(products):,} products, {rows:,} rows")
                last = time.perf_counter()
        written = Path(work) / f"all{out.suffix}"
        merged = pl.scan_parquet(parts)
        if out.suffix == ".csv":
            reasons = pl.col("reasons").list.join("; ") if args.reasons else None
            merged = merged.with_columns(reasons) if reasons is not None else merged
            merged.sink_csv(written)
        else:
            merged.sink_parquet(written)
        written.replace(out)
    gone = {f: removed[f] for f in FILTERS if f in removed}
    summary = {
        "out": str(out),
        "rows": rows,
        "products": len(products),
        "size": k,
        "known_users": index.users.height,
        "strategies": dict(strategies),
        "removed": gone,
        "model_version": index.version,
    }
    text = (
        f"wrote {rows:,} rows for {len(products):,} product(s), up to {k:,} users each, "
        f"to {out} (model {index.version})"
    )
    if gone:
        text += "\n  removed: " + ", ".join(f"{f} {n:,}" for f, n in gone.items())
    return summary, text
