"""Canonical column names, dtypes and the event-type vocabulary, defined once.

Every stage after ingest reads and writes these names only; the mapping from a
raw log's own names happens in `audience.data.ingest`.
"""

from __future__ import annotations

from typing import Final

import polars as pl

USER: Final = "user_id"
PRODUCT: Final = "product_id"
EVENT: Final = "event_type"
TIME: Final = "event_time"

#: The canonical event table, in column order.
EVENT_SCHEMA: Final = pl.Schema(
    {
        USER: pl.String(),
        PRODUCT: pl.String(),
        EVENT: pl.String(),
        TIME: pl.Datetime("us", "UTC"),
    }
)

PRODUCT_NAME: Final = "product_name"
CATEGORY: Final = "category"
PRICE: Final = "price"

#: In an artifact's products table: the category whose audience a product has, when
#: that audience is exactly the category's (stored once, in category_audiences).
AUDIENCE_CATEGORY: Final = "audience_category"

#: The optional product catalog.
CATALOG_SCHEMA: Final = pl.Schema(
    {
        PRODUCT: pl.String(),
        PRODUCT_NAME: pl.String(),
        CATEGORY: pl.String(),
        PRICE: pl.Float64(),
    }
)

#: Event types every log may use, with their default engagement weights (seed 004's
#: scale: a purchase says five times more than a search). Users may add types and
#: override weights in `Settings.event_weights`.
DEFAULT_EVENT_WEIGHTS: Final[dict[str, float]] = {
    "purchased": 5.0,
    "cart": 3.0,
    "rating": 2.5,
    "wishlist": 2.0,
    "search_keyword": 1.0,
}

#: The event type that is a purchase (the fitted scorer's `purchase_share`).
PURCHASED: Final = "purchased"
#: Raw column names recognised without flags, by canonical role. The first two
#: entries per role cover the canonical names and the seed 004 log's names.
COLUMN_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    USER: (USER, "customer_id", "visitorid", "visitor_id", "user", "userid", "customer"),
    PRODUCT: (PRODUCT, "itemid", "item_id", "product", "productid", "item", "sku"),
    EVENT: (EVENT, "event", "event_name", "action", "interaction"),
    TIME: (TIME, "event_date", "timestamp", "time", "ts", "date", "datetime"),
}

#: CLI names for the roles in `--columns user=...,product=...,event=...,time=...`.
ROLE_NAMES: Final[dict[str, str]] = {"user": USER, "product": PRODUCT, "event": EVENT, "time": TIME}
