"""`audience train --engine spark`: the artifact's tables computed by Spark, each
written by the executors and then streamed, in order, into the one Parquet file the
artifact holds, in the Polars engine's column types (`audience.artifact.publish` then
writes the manifest and makes the version current, as for the Polars engine).

The driver holds only bounded things: the fitted scorer's sample, a few aggregated
rows, and one row group at a time of each table as it is streamed into its file."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as fn

from audience.artifact import COMPRESSION
from audience.data.ingest import CATALOG_FILE, EVENTS_FILE
from audience.data.schema import (
    AUDIENCE_CATEGORY,
    CATALOG_SCHEMA,
    CATEGORY,
    EVENT,
    EVENT_SCHEMA,
    PRODUCT,
    TIME,
    USER,
)
from audience.errors import ConfigError, InputError
from audience.model import hybrid, segments
from audience.model.audiences import NO_CATEGORY, AudienceConfig
from audience.model.hybrid import Verdict
from audience.model.spark import affinity, audiences, codes, reasons, scoring
from audience.model.spark import hybrid as spark_hybrid
from audience.model.spark.features import moment
from audience.model.train import DEFAULT_MODEL, Progress, Trained, quiet


def read(spark: SparkSession, log: str) -> tuple[DataFrame, DataFrame | None]:
    """The canonical events at `log` (a Parquet file, folder or glob, local or on any
    Hadoop file system) and the catalog beside them: a folder holding events.parquet
    (as `audience ingest` writes it) is read with its products.parquet, if any."""
    events_at, catalog_at = log, None
    folder = log.rstrip("/")
    if _exists(spark, f"{folder}/{EVENTS_FILE}"):
        events_at = f"{folder}/{EVENTS_FILE}"
        listed = f"{folder}/{CATALOG_FILE}"
        catalog_at = listed if _exists(spark, listed) else None
    try:
        events = spark.read.parquet(events_at)
    except Exception as exc:  # Spark's AnalysisException: no such path, not Parquet
        raise InputError(log, f"cannot be read as Parquet by Spark ({exc})") from None
    _check(events, EVENT_SCHEMA, log)
    catalog = None if catalog_at is None else spark.read.parquet(catalog_at)
    if catalog is not None:
        _check(catalog, CATALOG_SCHEMA, catalog_at or log)
    return events, catalog


def _exists(spark: SparkSession, uri: str) -> bool:
    """Whether `uri` exists, on its own file system (Hadoop's: local, hdfs, s3a, ...)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    path = jvm.org.apache.hadoop.fs.Path(uri)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    return bool(path.getFileSystem(conf).exists(path))


def _check(frame: DataFrame, schema: pl.Schema, where: str) -> None:
    """An InputError naming the first canonical column `frame` lacks, if any."""
    have = set(frame.columns)
    for name in schema:
        if name not in have:
            raise InputError(
                where, f"is not a canonical table: no column {name!r} (has {sorted(have)})"
            )


def accepted(config: AudienceConfig, cf: str) -> None:
    """A ConfigError naming a setting this engine does not take, checked before Spark
    starts (the collaborative term's own refusals come from `hybrid.judged`)."""
    if cf not in hybrid.MODES:
        raise ConfigError("cf", f"unknown mode {cf!r}; choose {', '.join(hybrid.MODES)}")
    for name, given in (("cap", config.cap is not None), ("repeat", config.repeat)):
        if given:
            raise ConfigError(name, f"--{name} is not on the Spark engine yet: use --engine polars")


def train(
    spark: SparkSession,
    log: str,
    weights: dict[str, float],
    model: str,
    config: AudienceConfig,
    folder: Path,
    cf: str = "auto",
    progress: Progress = quiet,
) -> Trained:
    """Score every user and build every audience of the log at `log` on Spark, as of its
    last event, with the collaborative term as `cf` (`hybrid.MODES`) says; the tables
    are written in `folder` (which must last until they are published) and `tables`
    names their files."""

    def step(name: str) -> None:
        """A progress line, and the name of the Spark jobs that follow (in event logs)."""
        progress(name)
        spark.sparkContext.setJobDescription(name)

    step("reading the log")
    events, catalog = read(spark, log)
    last = events.agg(fn.max(fn.unix_micros(fn.col(TIME))).alias("t")).first()
    if last is None or last["t"] is None:
        raise ConfigError("events", "the log is empty: nothing to train on")
    as_of = moment(last["t"]) + timedelta(microseconds=1)  # features use events before
    step("numbering users and products")
    coded = codes.coded(events, catalog, weights)
    step(f"scoring users ({model})")
    engaged = scoring.engagement(events, weights, model, as_of)
    step("relating products")
    terms = affinity.terms(coded, weights, config)
    verdict, made = _collaborative(spark, events, catalog, weights, model, config, terms, cf, step)
    step("building audiences")
    scores = engaged.components.select(USER, "score")
    if made is not None and made.factors is not None and made.half is not None:
        built = audiences.everyone(
            coded, scores, terms, config, made.factors, made.weight, made.half
        )
    else:
        built = audiences.lists(coded, scores, terms, config)
    step("writing the reasons and the tables")

    def explain(rows: DataFrame, keys: list[str]) -> DataFrame:
        return reasons.explain(rows, keys, coded, engaged, weights, config)

    frames = {
        "audiences": _own(built, coded, explain),
        "category_audiences": _heads(built, coded, explain),
        "user_scores": _user_scores(engaged),
        "products": _products(coded, catalog, built),
        **terms.segment_tables(),
    }
    factors = made.factors if made is not None else None
    if factors is not None:
        frames |= _factor_tables(coded, factors)
    tables: dict[str, Any] = {
        name: _written(frame, folder / name, folder / f"{name}.parquet")
        for name, frame in frames.items()
    }
    if factors is None:
        tables |= segments.factor_tables(None)
    return Trained(
        tables=tables,
        model={
            "scorer": engaged.params,
            "audiences": asdict(config),
            "event_weights": weights,
            "event_types": coded.types,
            "as_of": as_of.isoformat(),
            "cf": verdict.as_dict() | ({} if made is None else made.as_dict()),
        },
        stats=_stats(built, coded, config) | {"engine": "spark"},
    )


def _collaborative(
    spark: SparkSession,
    events: DataFrame,
    catalog: DataFrame | None,
    weights: dict[str, float],
    model: str,
    config: AudienceConfig,
    terms: affinity.Terms,
    cf: str,
    step: Progress,
) -> tuple[Verdict, spark_hybrid.Made | None]:
    """`--cf`'s verdict on this log (`hybrid.judged`, on Spark's criteria) and, when on,
    the collaborative term (`spark.hybrid.fit`); under `auto`, a log whose validation
    slice cannot judge the term leaves it off, and says why."""
    seen = [row[EVENT] for row in events.select(EVENT).distinct().collect()]
    if cf == "auto":
        step("judging the collaborative term's criteria")
    verdict = hybrid.judged(cf, config, seen, lambda: spark_hybrid.criteria(events))
    step(f"collaborative term {'on' if verdict.on else 'off'}: {verdict.why}")
    if not verdict.on:
        return verdict, None
    pairs = terms.touched.select(fn.col("q").alias("p"), "u", "w")
    try:
        made = spark_hybrid.fit(events, catalog, weights, model, config, pairs, progress=step)
    except ConfigError as exc:  # e.g. a validation slice with nothing to judge
        if verdict.mode != "auto":
            raise
        step(f"collaborative term off: {exc}")
        return replace(verdict, on=False, why=f"{verdict.why}; but {exc}"), None
    step(f"collaborative term's weight: {made.weight:g} (validation NDCG@10)")
    return verdict, made


def _factor_tables(coded: codes.Coded, factors: audiences.Factors) -> dict[str, DataFrame]:
    """The artifact's factor tables (`segments.factor_tables`): every user's and every
    product's factors by code, zeros for those ALS did not fit (no term)."""
    width = len(factors.users.select("x").first()[0])  # type: ignore[index]
    zeros = fn.array_repeat(fn.lit(0.0).cast("float"), width)

    def by_code(keys: DataFrame, found: DataFrame, key: str) -> DataFrame:
        joined = keys.select(key).join(found, key, "left").orderBy(key)
        return joined.select(fn.coalesce("x", zeros).alias("x"))

    return {
        "segment_cf_users": by_code(coded.users, factors.users, "u"),
        "segment_cf_products": by_code(coded.products, factors.products, "p"),
    }


def hybrid_lists(
    spark: SparkSession,
    events: pl.DataFrame,
    catalog: pl.DataFrame | None,
    weights: dict[str, float],
    n: int,
    folder: Path,
    progress: Progress = quiet,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The stored lists (product_id, rank, user_id) and the collaborative term's
    account (the manifest's `cf`) of `audience train --engine spark --cf on --n n` on
    a canonical log held in Polars (`audience evaluate --engine spark` judges them),
    trained in `folder` (emptied afterwards)."""
    log = folder / "log"
    log.mkdir(parents=True)
    try:
        events.write_parquet(log / EVENTS_FILE)
        if catalog is not None:
            catalog.write_parquet(log / CATALOG_FILE)
        config = AudienceConfig(n=n)
        trained = train(spark, str(log), weights, DEFAULT_MODEL, config, folder, "on", progress)
        written = trained.tables["audiences"]
        assert isinstance(written, Path)
        lists = pl.read_parquet(written, columns=[PRODUCT, "rank", USER])
        return lists, trained.model["cf"]
    finally:
        for item in folder.iterdir():
            shutil.rmtree(item) if item.is_dir() else item.unlink()


#: Rows' reasons: `reasons.explain` with the train's log, engagement and settings.
Explain = Callable[[DataFrame, list[str]], DataFrame]


def _own(built: audiences.Lists, coded: codes.Coded, explain: Explain) -> DataFrame:
    """The audiences table: product_id, rank, user_id, score, reasons of the products
    with a list of their own, by product and rank."""
    said = explain(built.own, ["p", "rank", "u", "total"]).join(coded.users, "u")
    return (
        said.join(coded.products.select("p", PRODUCT), "p")
        .orderBy("p", "rank")
        .select(PRODUCT, "rank", USER, fn.col("total").alias("score"), "reasons")
    )


def _heads(built: audiences.Lists, coded: codes.Coded, explain: Explain) -> DataFrame:
    """The category_audiences table: category, rank, user_id, score, reasons."""
    rows = built.heads.select(
        fn.lit(None).cast("long").alias("p"),
        *built.heads.columns,
        fn.lit(0.0).alias("t_direct"),
        fn.lit(0.0).alias("t_co"),
        fn.lit(0).cast("long").alias("r_k"),
    )
    said = explain(rows, ["c", "rank", "u", "total"]).join(coded.users, "u")
    return (
        said.join(coded.categories, "c")
        .orderBy(CATEGORY, "rank")
        .select(CATEGORY, "rank", USER, fn.col("total").alias("score"), "reasons")
    )


def _user_scores(engaged: scoring.Engaged) -> DataFrame:
    """user_id, rank (1 = most engaged, ties by user_id), score, the components and the
    raw features, by user_id."""
    order = [fn.desc("score"), fn.col(USER)]
    ranked = codes.placed(engaged.components.select(USER, "score"), "rank", order, start=1)
    components = [c for c in engaged.components.columns if c != USER]
    features = [c for c in engaged.features.columns if c != USER]
    return (
        engaged.components.join(ranked.select(USER, "rank"), USER)
        .join(engaged.features, USER)
        .orderBy(USER)
        .select(USER, "rank", *components, *features)
    )


def _products(coded: codes.Coded, catalog: DataFrame | None, built: audiences.Lists) -> DataFrame:
    """The product table: the catalog's columns, interactions and, for the products
    whose list is their category's head, that category (`audience_category`)."""
    listing = (
        catalog.select(PRODUCT, "product_name", "price")
        if catalog is not None
        else coded.products.select(
            PRODUCT,
            fn.lit(None).cast("string").alias("product_name"),
            fn.lit(None).cast("double").alias("price"),
        )
    )
    shared = built.plain.select("p", fn.lit(True).alias("shared"))
    named = fn.coalesce(fn.col(CATEGORY), fn.lit(NO_CATEGORY))
    return (
        coded.products.join(listing, PRODUCT, "left")
        .join(shared, "p", "left")
        .orderBy("p")
        .select(
            *CATALOG_SCHEMA,
            "interactions",
            fn.when(fn.col("shared"), named).alias(AUDIENCE_CATEGORY),
        )
    )


def _stats(built: audiences.Lists, coded: codes.Coded, config: AudienceConfig) -> dict[str, Any]:
    """The train's figures (`audiences.Audiences.stats`'), a few aggregated rows."""
    n = config.n
    lengths = built.heads.groupBy("c").agg(fn.count(fn.lit(1)).alias("len"))
    own = built.own.groupBy("p").agg(
        fn.count(fn.lit(1)).alias("len"), fn.sum(fn.col("explicit").cast("long")).alias("x")
    )
    plain = built.plain.join(lengths, "c", "left").fillna(0, subset=["len"])
    a = own.agg(
        fn.count(fn.lit(1)).alias("products"),
        fn.sum("len").alias("rows"),
        fn.sum((fn.col("len") < n).cast("long")).alias("short"),
        fn.sum("x").alias("explicit"),
    ).first()
    b = plain.agg(
        fn.count(fn.lit(1)).alias("products"),
        fn.sum("len").alias("rows"),
        fn.sum((fn.col("len") < n).cast("long")).alias("short"),
    ).first()
    shown = built.own.select("u").unionByName(
        built.heads.join(built.plain.select("c").distinct(), "c").select("u")
    )
    assert a is not None and b is not None
    return {
        "products": (a["products"] or 0) + (b["products"] or 0),
        "rows": (a["rows"] or 0) + (b["rows"] or 0),
        "products_short": (a["short"] or 0) + (b["short"] or 0),
        "products_sharing_category_audience": b["products"] or 0,
        "distinct_users": shown.distinct().count(),
        "explicit_rows": a["explicit"] or 0,
        "users_scored": coded.users.count(),
        "categories": built.heads.select("c").distinct().count(),
    }


def _written(frame: DataFrame, parts: Path, path: Path) -> Path:
    """`frame`, in its order, as one Parquet file at `path` in the Polars engine's
    column types (every integer column UInt32, as the artifact holds codes, ranks and
    counts): written by Spark in `parts`, then streamed into `path` a row group at a
    time, the parts in their order (each holds a range of the sorted rows)."""
    frame.write.mode("overwrite").parquet(parts.as_uri())
    files = sorted(parts.glob("part-*.parquet"))
    scanned = pl.scan_parquet(files) if files else None
    schema = _schema(frame, files)
    if scanned is None:
        pl.DataFrame(schema=schema).write_parquet(path, compression=COMPRESSION)
    else:
        scanned.cast(schema).sink_parquet(path, compression=COMPRESSION)
    shutil.rmtree(parts)
    return path


def _schema(frame: DataFrame, files: list[Path]) -> pl.Schema:
    """The artifact's Polars types of `frame`'s columns (written in `files`): ALS's
    factors as fixed-width arrays, as the Polars engine holds them."""
    kinds = {
        "bigint": pl.UInt32(),
        "int": pl.UInt32(),
        "double": pl.Float64(),
        "string": pl.String(),
        "boolean": pl.Boolean(),
        "array<string>": pl.List(pl.String()),
    }
    out: dict[str, pl.DataType] = {}
    for field in frame.schema.fields:
        name = field.dataType.simpleString()
        if name == "array<float>":
            first = pl.read_parquet(files[0], columns=[field.name], n_rows=1) if files else None
            width = 0 if first is None or first.is_empty() else first.item().len()
            out[field.name] = pl.Array(pl.Float32(), width)
            continue
        if name not in kinds:
            raise TypeError(f"{field.name}: no artifact type for Spark's {name}")
        out[field.name] = kinds[name]
    return pl.Schema(out)
