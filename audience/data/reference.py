"""The reference marketplace log's published statistics, and a side-by-side comparison.

Source: ../shared/DESIGN.md ("The seed's reference log"), describing the private
log behind seed 004. The figures are the targets of the `marketplace` sample preset.

They are not mutually consistent: 88.8% one-time users, 8.7% with 2-5 events and
2.7% with more than 5 imply at least 0.888 + 2*0.087 + 6*0.027 = 1.224 events per
user, but 498,879 events over 433,787 users is 1.150. No log has all of them at
once, so the generator spreads the gap over events, users and the activity
buckets (each stays within 5%); `compare` shows exactly where it lands.
"""

from __future__ import annotations

from typing import Any, Final

REFERENCE: Final[dict[str, float]] = {
    "events": 498_879,
    "users": 433_787,
    "products": 200_325,
    "days": 182,
    "event_mix.cart": 304_282,
    "event_mix.purchased": 166_150,
    "event_mix.wishlist": 22_178,
    "event_mix.search_keyword": 3_190,
    "event_mix.rating": 3_079,
    "activity.1": 0.888,
    "activity.2-5": 0.087,
    "activity.>5": 0.027,
    "retention_30d": 0.03,
    "split.early_events": 399_103,
    "split.early_users": 351_311,
    "split.early_products": 165_872,
    "split.late_events": 99_776,
    "split.late_users": 93_157,
    "split.late_products": 58_171,
    "split.returning_share_of_early": 0.029,
    "split.returning_share_of_late": 0.107,
    "split.new_product_share_late": 0.57,
}

#: Figures that grow with `--scale K` (counts); the rest are shares or spans.
SCALED: Final = frozenset(
    k
    for k in REFERENCE
    if k.startswith(("events", "users", "products", "event_mix", "split."))
    and not k.startswith(("split.returning_share", "split.new_product"))
)

TOLERANCE: Final = 0.05


def flatten(stats: dict[str, Any]) -> dict[str, float]:
    """The comparable figures of `audience.data.stats.log_stats` output, under REFERENCE's keys."""
    from datetime import datetime

    days = (
        datetime.fromisoformat(stats["last_event"]).date()
        - datetime.fromisoformat(stats["first_event"]).date()
    ).days + 1
    flat: dict[str, float] = {"events": stats["events"], "users": stats["users"]}
    flat["products"] = stats["products"]
    flat["days"] = days
    flat["retention_30d"] = stats["retention_30d"]
    for group in ("event_mix", "activity", "split"):
        for key, value in stats[group].items():
            if isinstance(value, int | float):
                flat[f"{group}.{key}"] = value
    return flat


def compare(stats: dict[str, Any], scale: float = 1.0) -> list[dict[str, Any]]:
    """One row per reference figure: reference (scaled), generated, relative difference."""
    flat = flatten(stats)
    rows = []
    for key, ref in REFERENCE.items():
        target = ref * scale if key in SCALED else ref
        got = flat.get(key, 0.0)
        diff = (got - target) / target
        rows.append(
            {
                "figure": key,
                "reference": target,
                "sample": got,
                "rel_diff": diff,
                "within_tolerance": abs(diff) <= TOLERANCE,
            }
        )
    return rows
