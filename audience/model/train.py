"""`audience train`: events -> features -> engagement scores -> audiences -> artifact tables.

One function per arrow of the data flow; `train` chains them and returns the
tables and the model description that `audience.artifact.publish` writes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from audience.artifact import COMPRESSION, Table
from audience.data.schema import AUDIENCE_CATEGORY, CATEGORY, PRODUCT, TIME, USER
from audience.errors import ConfigError
from audience.model import hybrid, segments
from audience.model.audiences import (
    NO_CATEGORY,
    AudienceConfig,
    Audiences,
    affinity,
    build,
)
from audience.model.cf import AlsParams, warm
from audience.model.codes import Log
from audience.model.features import user_features
from audience.model.scoring import Engagement, SeedScorer

MODELS = ("seed", "fitted")
#: The scorer `audience train` uses unless told otherwise: the one the backtest favours
#: on the sample log (results/model_metrics.md; docs/analysis.md "Backtest").
DEFAULT_MODEL = "fitted"
Progress = Callable[[str], None]
#: Logs with fewer events score users and relate products side by side (see `train`).
SIDE_BY_SIDE_EVENTS = 10_000_000


def quiet(_: str) -> None:
    """Progress that says nothing."""
    return None


@dataclass(frozen=True)
class Trained:
    tables: dict[str, Table]
    model: dict[str, Any]
    stats: dict[str, Any]


def engagement(
    events: pl.DataFrame, weights: dict[str, float], model: str, as_of: datetime
) -> Engagement:
    """The engagement of every user in `events`, which are all before `as_of`.

    The scores are computed once; their components as they are read (see `Engagement`),
    each reader taking the columns and rows it needs."""
    features = user_features(events, as_of, weights).lazy()
    if model == "seed":
        scorer: Any = SeedScorer()
    elif model == "fitted":
        from audience.model.fitted import FittedScorer

        scorer = FittedScorer.fit(events, weights)
    else:
        raise ConfigError("model", f"unknown model {model!r}; choose {' or '.join(MODELS)}")
    return Engagement.of(scorer.score(features), features, scorer.params())


def user_scores(log: Log, engaged: Engagement) -> pl.LazyFrame:
    """user_id, rank (1 = most engaged, ties by user_id), score, components and raw
    features, in user_id order: the components' columns beside the features' as they are
    written, not a sorted copy (at 100x the sample, 42 million rows of 24 columns)."""
    rank = engaged.scores.select(pl.col("score").rank("ordinal", descending=True).alias("rank"))
    return pl.concat(
        [log.named(engaged.components), rank.lazy(), engaged.features.drop(USER)],
        how="horizontal",
    ).select(USER, "rank", pl.exclude(USER, "rank"))


def written(engaged: Engagement, log: Log, path: Path) -> Engagement:
    """`engaged` with its `user_scores` table written to `path` (Parquet), its components
    and features read back from there as they are needed instead of held (3 GB at 100x
    the sample): the artifact's table doubles as their store."""
    user_scores(log, engaged).sink_parquet(path, compression=COMPRESSION)
    table = pl.scan_parquet(path).drop(USER).with_row_index(USER)  # row i: user code i
    components = engaged.components.collect_schema().names()
    features = engaged.features.collect_schema().names()
    return replace(engaged, components=table.select(components), features=table.select(features))


def _written_table(frame: pl.DataFrame, path: Path) -> Path:
    frame.write_parquet(path, compression=COMPRESSION)
    return path


def overlap(built: Audiences, products: pl.DataFrame, pairs: int = 2000) -> dict[str, Any]:
    """Mean Jaccard overlap of audiences for random product pairs, same vs other category.

    `products` is the product table. Pairs are drawn from the products with an event
    (every product with an audience has one), and those with an empty audience (every
    candidate excluded) are left out."""
    rng = np.random.default_rng(0)
    # Drawn by position among the products with an event, and only the drawn ones'
    # ids gathered (at 100x the sample, copying all 20M ids and categories cost 0.6 GB).
    active = np.flatnonzero(products.get_column("interactions").to_numpy() > 0)
    if active.size < 2:
        return {}
    ids = products.get_column(PRODUCT)
    cats = products.get_column(CATEGORY)
    a, b = active[rng.integers(0, active.size, (2, pairs * 4))]
    frame = pl.DataFrame(
        {"a": ids.gather(a), "b": ids.gather(b), "ca": cats.gather(a), "cb": cats.gather(b)}
    )
    frame = frame.filter(pl.col("a") != pl.col("b")).with_columns(same=pl.col("ca") == pl.col("cb"))
    members = built.rows(pl.concat([frame.get_column("a"), frame.get_column("b")])).select(
        PRODUCT, USER
    )
    shown = members.get_column(PRODUCT).unique().implode()
    frame = frame.filter(pl.col("a").is_in(shown) & pl.col("b").is_in(shown))
    out: dict[str, Any] = {}
    for label, same in (("same_category", True), ("other_category", False)):
        chosen = frame.filter(pl.col("same") == same).head(pairs).with_row_index("pair")
        if chosen.is_empty():
            continue
        left = chosen.join(members, left_on="a", right_on=PRODUCT).select("pair", USER)
        right = chosen.join(members, left_on="b", right_on=PRODUCT).select("pair", USER)
        inter = left.join(right, on=["pair", USER]).group_by("pair").len()
        sizes = (
            left.group_by("pair").len().join(right.group_by("pair").len(), on="pair", suffix="_b")
        )
        # In pair order, so that the mean is summed the same way every run.
        joined = sizes.join(inter, on="pair", how="left", suffix="_i").sort("pair")
        jaccard = joined.select(
            j=pl.col("len_i").fill_null(0)
            / (pl.col("len") + pl.col("len_b") - pl.col("len_i").fill_null(0))
        )
        out[label] = {
            "pairs": chosen.height,
            "mean_jaccard": jaccard.select(pl.col("j").mean()).item(),
        }
    return out


def train(
    log: Log,
    weights: dict[str, float],
    model: str = DEFAULT_MODEL,
    config: AudienceConfig | None = None,
    progress: Progress = quiet,
    folder: Path | None = None,
    cf: str = "auto",
    als: Callable[[], AlsParams] | None = None,
) -> Trained:
    """Score every user and build every audience, as of the log's last event.

    `cf` (`hybrid.MODES`) says whether the audience score has a collaborative term
    (`audience.model.hybrid`); `als` gives ALS's parameters (else they are tuned), asked
    for only when the term is on.

    Given a `folder`, the `user_scores` table is written there as soon as the users
    are scored (see `written`), and `tables` names its file: it must last until the
    tables are published (`audience.artifact.publish` moves the file in)."""
    config = config or AudienceConfig()
    events = log.events
    config.check(frozenset(weights))
    if events.is_empty():
        raise ConfigError("events", "the log is empty: nothing to train on")
    last = events.get_column(TIME).max()
    assert isinstance(last, datetime)
    as_of = last + timedelta(microseconds=1)  # features use events strictly before
    table = None if folder is None else folder / "user_scores.parquet"
    verdict = hybrid.decide(cf, log, config)
    progress(f"collaborative term {'on' if verdict.on else 'off'}: {verdict.why}")
    if verdict.on and als is None:
        warm()  # ALS's search runs in processes: their server starts beside the scoring

    def score() -> Engagement:
        engaged = engagement(events, weights, model, as_of)
        return engaged if table is None else written(engaged, log, table)

    def cut() -> hybrid.Slice:
        return hybrid.sliced(log, weights, als() if als is not None else None, progress=progress)

    # Scoring and the affinity terms do not depend on each other: Polars releases the
    # GIL, so on a small log they run side by side on two cores; on a large one, one
    # after the other, so that only one of them holds its working memory at a time.
    # The collaborative term's validation slice needs the log alone: on a small log its
    # ALS search (in processes) starts at once too, in the cores' idle time.
    small = events.height < SIDE_BY_SIDE_EVENTS
    with ThreadPoolExecutor(2) as background:
        slicing = background.submit(cut) if verdict.on and small else None
        if small:
            progress(f"scoring users ({model}) and relating products")
            scoring = background.submit(score)
            linked = affinity(log, weights, config)
            engaged = scoring.result()
        else:
            progress(f"scoring users ({model})")
            engaged = score()
            progress("relating products")
            linked = affinity(log, weights, config)
    made = None
    if verdict.on:

        def engage(events: pl.DataFrame, as_of: datetime) -> Engagement:
            return engagement(events, weights, model, as_of)

        try:
            sliced = slicing.result() if slicing is not None else cut()
            made = hybrid.fit(log, weights, linked, engage, sliced, progress)
        except ConfigError as exc:  # e.g. a validation slice with nothing to judge
            if verdict.mode != "auto":
                raise
            verdict = replace(verdict, on=False, why=f"{verdict.why}; but {exc}")
            progress(f"collaborative term off: {exc}")
        if made is not None:
            progress(f"collaborative term's weight: {made.weight:g} (validation NDCG@10)")
            linked = made.applied(linked)
    progress("building audiences")
    built = build(linked, engaged)
    kept: dict[str, Table] = {}
    for name, frame in segments.export(linked).items():
        # Written now, beside user_scores, when there is a folder: held to the end they
        # kept the evidence arrays (gigabytes at 100x the sample) alive past `del linked`.
        kept[name] = frame if folder is None else _written_table(frame, folder / f"{name}.parquet")
    del linked  # its evidence tables (4 GB at 100x the sample) are done with
    stats = built.stats | {
        "users_scored": log.users.len(),
        "overlap": overlap(built, log.products),
        "categories": built.categories.get_column(CATEGORY).n_unique(),
    }
    shared = np.zeros(log.products.height, dtype=bool)  # by product code
    shared[built.shared.get_column("p").to_numpy()] = True
    return Trained(
        tables={
            "audiences": built.own,
            "category_audiences": built.categories,
            "user_scores": user_scores(log, engaged) if table is None else table,
            "products": log.table().with_columns(
                pl.when(pl.lit(pl.Series(shared)))
                .then(pl.col(CATEGORY).fill_null(NO_CATEGORY))
                .alias(AUDIENCE_CATEGORY)
            ),
            **kept,
        },
        model={
            "scorer": engaged.params,
            "audiences": asdict(config),
            "event_weights": weights,
            # The bits of segment_touched's `kinds`, in order (the log's type codes).
            "event_types": segments.event_types(log.events),
            "as_of": as_of.isoformat(),
            "cf": verdict.as_dict() | ({} if made is None else made.as_dict()),
        },
        stats=stats,
    )
