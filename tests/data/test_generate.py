"""The sample generator: schemas, determinism, the reference calibration, and the structure
later stages rely on (engaged users come back, tastes repeat, sessions are ordered)."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pytest

from audience.data.generate import EVENT_TYPES, PRESETS, generate
from audience.data.reference import compare
from audience.data.schema import CATALOG_SCHEMA, CATEGORY, EVENT, EVENT_SCHEMA, PRODUCT, TIME, USER
from audience.data.stats import log_stats, time_split
from audience.errors import ConfigError

Frames = tuple[pl.DataFrame, pl.DataFrame]


@pytest.fixture(scope="module")
def marketplace() -> Frames:
    return generate("marketplace", scale=1.0, seed=0)


@pytest.fixture(scope="module")
def marketplace_stats(marketplace: Frames) -> dict[str, Any]:
    return log_stats(marketplace[0])


@pytest.fixture(scope="module")
def loyal() -> Frames:
    return generate("loyal", scale=1.0, seed=0)


def test_presets_are_named() -> None:
    assert set(PRESETS) == {"marketplace", "loyal"}


@pytest.mark.parametrize("preset", ["marketplace", "loyal"])
def test_canonical_schemas_sorted_and_complete(preset: str, request: pytest.FixtureRequest) -> None:
    events, catalog = request.getfixturevalue(preset)
    assert events.schema == EVENT_SCHEMA
    assert catalog.schema == CATALOG_SCHEMA
    assert events.null_count().sum_horizontal().item() == 0
    assert catalog.null_count().sum_horizontal().item() == 0
    assert events.equals(events.sort(TIME, USER, maintain_order=True))
    assert set(events.get_column(EVENT).unique()) == set(EVENT_TYPES)
    assert catalog.get_column(PRODUCT).is_unique().all()
    assert (catalog.get_column("price") > 0).all()


def test_catalog_covers_events_and_has_untouched_products(marketplace: Frames) -> None:
    events, catalog = marketplace
    used = events.select(PRODUCT).unique()
    assert used.join(catalog, on=PRODUCT, how="anti").height == 0
    assert catalog.height > 1.5 * used.height
    assert catalog.get_column(CATEGORY).n_unique() == 24
    sizes = catalog.group_by(CATEGORY).len().get_column("len").sort(descending=True)
    assert sizes[0] > 5 * sizes[-1]  # Zipf-like category sizes
    name = catalog.get_column("product_name")[0]
    assert len(name.split()) >= 3  # "<Brand> <Noun> <Model>"


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    first = generate("marketplace", scale=0.02, seed=7)
    again = generate("marketplace", scale=0.02, seed=7)
    other = generate("marketplace", scale=0.02, seed=8)
    assert first[0].equals(again[0]) and first[1].equals(again[1])
    assert not first[0].equals(other[0])


def test_every_reference_figure_within_tolerance(marketplace_stats: dict[str, Any]) -> None:
    rows = compare(marketplace_stats, 1.0)
    missed = [f"{r['figure']}: {r['rel_diff']:+.3f}" for r in rows if not r["within_tolerance"]]
    assert not missed, missed
    # the seed-sensitive figures keep a margin under the 5% tolerance
    assert all(abs(r["rel_diff"]) < 0.045 for r in rows), rows


def test_scale_multiplies_counts_and_keeps_shares(marketplace_stats: dict[str, Any]) -> None:
    small = log_stats(generate("marketplace", scale=0.1, seed=0)[0])
    for key in ("events", "users", "products"):
        assert small[key] == pytest.approx(0.1 * marketplace_stats[key], rel=0.03)
    for bucket, share in marketplace_stats["activity"].items():
        assert small["activity"][bucket] == pytest.approx(share, rel=0.03)
    assert small["retention_30d"] == pytest.approx(marketplace_stats["retention_30d"], rel=0.15)
    assert (small["first_event"][:10], small["last_event"][:10]) == ("2022-10-01", "2023-03-31")


def test_loyal_users_return_and_keep_to_known_products(
    loyal: Frames, marketplace_stats: dict[str, Any]
) -> None:
    stats = log_stats(loyal[0])
    assert stats["users"] == 50_000
    assert 400_000 < stats["events"] < 600_000
    assert stats["retention_30d"] > 0.3
    assert stats["activity"][">5"] > 10 * marketplace_stats["activity"][">5"]
    assert stats["split"]["returning_share_of_early"] > 0.3
    assert stats["split"]["new_product_share_late"] < 0.1


@pytest.mark.parametrize(("preset", "share"), [("marketplace", 0.7), ("loyal", 0.8)])
def test_repeat_interactions_stay_in_a_few_categories(
    preset: str, share: float, request: pytest.FixtureRequest
) -> None:
    events, catalog = request.getfixturevalue(preset)
    per = (
        events.join(catalog.select(PRODUCT, CATEGORY), on=PRODUCT)
        .group_by(USER, CATEGORY)
        .len()
        .with_columns(total=pl.col("len").sum().over(USER))
        .filter(pl.col("total") >= 3)
        .group_by(USER)
        .agg(top=pl.col("len").top_k(2).sum(), total=pl.col("total").first())
    )
    assert per.get_column("top").sum() / per.get_column("total").sum() > share


def test_engaged_users_are_the_ones_active_after_the_cut(marketplace: Frames) -> None:
    early, late = time_split(marketplace[0])
    back = (
        early.group_by(USER)
        .len()
        .with_columns(back=pl.col(USER).is_in(late.get_column(USER).unique().implode()))
    )
    one = back.filter(pl.col("len") == 1).select(pl.col("back").mean()).item()
    many = back.filter(pl.col("len") > 5).select(pl.col("back").mean()).item()
    assert many > 5 * one > 0


def test_sessions_are_ordered_and_time_is_clustered(marketplace: Frames) -> None:
    events = marketplace[0]
    stage = {name: i for i, name in enumerate(EVENT_TYPES)}
    sessions = (
        events.with_columns(
            day=pl.col(TIME).dt.date(),
            stage=pl.col(EVENT).replace_strict(stage, return_dtype=pl.Int8),
        )
        .group_by(USER, "day", maintain_order=True)
        .agg(ordered=(pl.col("stage").diff().fill_null(0) >= 0).all(), n=pl.len())
        .filter(pl.col("n") > 1)
    )
    assert sessions.select(pl.col("ordered").mean()).item() > 0.99
    hours = events.group_by(pl.col(TIME).dt.hour().alias("h")).len()
    night = hours.filter(pl.col("h").is_between(3, 5)).get_column("len").sum()
    evening = hours.filter(pl.col("h").is_between(19, 21)).get_column("len").sum()
    assert evening > 4 * night
    per_day = events.group_by(pl.col(TIME).dt.month().alias("m")).agg(
        per_day=pl.len() / pl.col(TIME).dt.date().n_unique()
    )
    by_month = dict(per_day.iter_rows())
    assert by_month[12] > 1.1 * by_month[2]  # the holiday bump


def test_product_popularity_is_heavy_tailed(marketplace: Frames) -> None:
    counts = marketplace[0].group_by(PRODUCT).len().sort("len", descending=True)
    top = counts.head(counts.height // 100).select(pl.col("len").sum()).item()
    assert top / marketplace[0].height > 0.1
    assert counts.select(pl.col("len").median()).item() == 1


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"preset": "nope"}, "preset"),
        ({"scale": 0.0}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"scale": math.nan}, "scale"),
        ({"scale": math.inf}, "scale"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ConfigError) as raised:
        generate(**kwargs)
    assert raised.value.parameter == parameter
