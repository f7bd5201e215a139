"""Sample interaction logs: `marketplace` (calibrated to the reference log) and `loyal`.

The generative process is vectorised step by step (loops run over product
segments, never over users or events), so `--scale 100` stays arrays:

1. **Users.** Event counts come from an exact quota of the preset's
   distribution (1 event; a geometric 2-5 body; a geometric body above 5; a
   thin 20-60 heavy tail), so event, user and bucket totals never depend on
   the seed.
2. **Visits.** Each event of the first visit may instead start the first
   return (`new_visit`); events of return visits open yet another visit with
   `next_visit`. Users with more events therefore come back more, and return
   visits are short. Days between visits are lognormal; each user's span sits
   inside the window, its first day drawn from the daily profile (weekend
   lift, Black Friday, December bump, Christmas dip). Long spans start early
   and cross the 80/20 cut: engaged users are the ones active after it.
3. **Sessions.** One per visit: a diurnal start hour, events ~2 minutes apart,
   event types from an exact quota of the reference mix and ordered within
   the session (search, wishlist, cart, purchased, rating).
4. **Products.** Categories of Zipf-like size (split into taste groups for
   `loyal`: its segments). A product has a lognormal popularity and an
   arrival day: a share predates the window, the rest arrive with the daily
   profile. A new listing gets a launch boost decaying over `decay_days`, the
   same for every product, then keeps its own popularity: a few products
   stay popular, most get a burst of attention and fade. Fresh picks come
   from one of the user's 1-3 taste segments (probability `loyalty`) or any
   segment; later events of a session reuse its product with `reuse`.

Calibration of `marketplace`: the reference's buckets need >= 1.224 events per
user but its totals give 1.150 (see `audience.data.reference`), and its returning
shares only fit if early and late users shrink with total users. The preset
spreads the gap: +4.2% events (so +4.2% per event type), -3.8% users, -4.2% for
the 2-5 and >5 buckets (means 2.2 and 6.65 events: 90% of >5 users have 6-7,
~0.8% have 20-60), early/late users -4%/-3.5%. Visit parameters were tuned on
retention and the split by grid search, product ones (catalog, popularity
spread, launch boost and decay, share listed before the window) by Nelder-Mead
on the product figures. Seeds 0-9 at scale 1 and 0-4 at scale 2 stay within 4.3% on every
figure; the seed-dependent ones move by about 1%.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from audience.data.schema import CATEGORY, EVENT, PRICE, PRODUCT, PRODUCT_NAME, TIME, USER
from audience.errors import ConfigError

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

START: Final = datetime(2022, 10, 1, tzinfo=UTC)
DAYS: Final = 182
_DAY_US: Final = 86_400_000_000
_MAX_EVENTS: Final = 60
#: Event types in session order, and the reference mix they are drawn in proportion to.
EVENT_TYPES: Final = ("search_keyword", "wishlist", "cart", "purchased", "rating")
_MIX: Final = np.array([3_190, 22_178, 304_282, 166_150, 3_079], dtype=np.float64)
#: Share of sessions starting in each UTC hour: quiet nights, a lunch bump, an evening peak.
_HOURS: Final = np.array(
    [3, 2, 1.5, 1, 1, 1.5, 2.5, 4, 5, 5.5, 6, 6.5, 7, 6.5, 6, 6, 6, 6.5, 7.5, 9, 9.5, 8.5, 6.5, 4.5]
)
#: Category, median price, brands, nouns (hyphens become spaces); largest category first.
_CATEGORIES: Final = (
    ("Fashion", 35, "Marlow Vessa Ondine Kite", "Dress Jacket Shirt Jeans Sweater"),
    ("Home & Kitchen", 40, "Casaro Hearth Pantrio Lumo", "Skillet Kettle Blender Lamp Towel"),
    ("Beauty", 18, "Velisse Aurae Nuvio Bloom", "Serum Lipstick Moisturizer Palette"),
    ("Phones", 280, "Veyra Kestrel Orbix Zentro", "Smartphone Phone Flip-Phone Foldable"),
    ("Electronics", 120, "Voltis Sonara Pixom Arcell", "Speaker Headphones Camera Monitor"),
    ("Sports", 45, "Trailon Peakfit Stride Rivo", "Tent Backpack Yoga-Mat Dumbbells"),
    ("Toys", 25, "Playvo Tumble Bricko Wonda", "Puzzle Robot Doll Board-Game"),
    ("Books", 14, "Inkwell Paperleaf Folio Quill", "Novel Cookbook Atlas Guide"),
    ("Health", 20, "Vitara Curis Medra Purex", "Vitamins Thermometer Massager"),
    ("Laptops", 850, "Nexa Corvo Altis Byteon", "Laptop Notebook Ultrabook"),
    ("Grocery", 8, "Harvest Olivo Granja Mielo", "Coffee Tea Olive-Oil Granola"),
    ("Baby", 30, "Cubby Nestly Babu Lullo", "Stroller Bottle Diapers Onesie"),
    ("Automotive", 35, "Torqa Roadix Motivo Gearo", "Wipers Dashcam Seat-Cover Car-Charger"),
    ("Pet Supplies", 22, "Pawly Furra Kibo Tailo", "Leash Cat-Tree Dog-Bed Kibble"),
    ("Office", 12, "Scriba Deskon Penna Clipo", "Notebook Pen Stapler Desk-Organizer"),
    ("Jewelry", 90, "Aurelle Gemma Lustra Orra", "Necklace Ring Bracelet Earrings"),
    ("Tools & DIY", 50, "Forgex Boltra Craftin Rivet", "Drill Wrench Saw Toolbox"),
    ("Garden", 35, "Verdo Bloomly Terra Sprig", "Hose Planter Shears Seeds"),
    ("Video Games", 45, "Pixelon Questa Arcada Nexo", "Controller Headset Game"),
    ("Music", 25, "Sonic Vinyla Chorda Tempo", "Guitar Vinyl Ukulele Keyboard"),
    ("Shoes", 70, "Strada Pacer Solea Kickr", "Sneakers Boots Sandals Loafers"),
    ("Bags & Luggage", 60, "Carryon Vago Satchel Roamr", "Backpack Suitcase Tote Wallet"),
    ("Watches", 150, "Horix Tempra Chrono Vesta", "Watch Smartwatch Chronograph"),
    ("Appliances", 220, "Frostel Washo Kuchen Airo", "Fridge Microwave Vacuum Air-Fryer"),
)


@dataclass(frozen=True)
class Preset:
    """Parameters of one generative process; users and catalog are at scale 1."""

    users: int
    catalog: int
    activity: tuple[float, float, float]  # share of users with 1, 2-5 and >5 events
    few_ratio: float  # P(k + 1) / P(k) for 2-5 events
    many_ratio: float  # P(k + 1) / P(k) for 6-19 events
    heavy: float  # share of the >5 users in the 20-60 tail
    new_visit: float  # chance an event of the first visit starts the first return instead
    next_visit: float  # chance an event of a return visit opens another visit
    gap_median: float  # days between visits (lognormal)
    gap_sigma: float
    groups: int  # taste groups per category
    tastes: int  # a user has 1 to this many taste segments
    loyalty: float  # chance a fresh pick comes from the user's tastes
    reuse: float  # chance a later event of a session reuses its product
    popularity_sigma: float  # lognormal spread of lasting product popularity
    at_start: float  # share of products listed before the window
    launch: float  # a new listing's extra popularity, in mean popularities
    decay_days: float  # e-folding time of the launch boost


PRESETS: Final[dict[str, Preset]] = {
    "marketplace": Preset(
        users=417_300,
        catalog=409_000,
        activity=(0.89078, 0.08335, 0.02587),
        few_ratio=0.17,
        many_ratio=0.3,
        heavy=0.008,
        new_visit=0.3,
        next_visit=0.8,
        gap_median=32.0,
        gap_sigma=1.15,
        groups=1,
        tastes=2,
        loyalty=0.75,
        reuse=0.6,
        popularity_sigma=2.1,
        at_start=0.23,
        launch=8.7,
        decay_days=13.3,
    ),
    "loyal": Preset(
        users=50_000,
        catalog=8_000,
        activity=(0.08, 0.27, 0.65),
        few_ratio=0.9,
        many_ratio=0.92,
        heavy=0.1,
        new_visit=0.4,
        next_visit=0.4,
        gap_median=16.0,
        gap_sigma=1.0,
        groups=6,
        tastes=3,
        loyalty=0.9,
        reuse=0.5,
        popularity_sigma=0.8,
        at_start=0.95,
        launch=1.0,
        decay_days=30.0,
    ),
}


@dataclass(frozen=True)
class _Catalog:
    category: Ints
    segment: Ints
    arrival: Floats  # day, negative before the window
    popularity: Floats


def generate(
    preset: str = "marketplace", scale: float = 1.0, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(events, catalog) in the canonical schemas; the same arguments give the same frames.

    `scale` multiplies users and catalog (so events) and keeps the shares and
    the date range. Large arrays are rebound as soon as they are transformed,
    which keeps `scale=100` (~52M events) within a few GB.
    """
    if preset not in PRESETS:
        raise ConfigError("preset", f"unknown preset {preset!r}; choose {' or '.join(PRESETS)}")
    if not (scale > 0 and np.isfinite(scale)):
        raise ConfigError("scale", f"must be a positive number, got {scale}")
    if seed < 0:
        raise ConfigError("seed", f"must be a non-negative integer, got {seed}")
    p = PRESETS[preset]
    rng = np.random.default_rng([seed, list(PRESETS).index(preset)])
    n_users, n_products = max(1, round(p.users * scale)), max(1, round(p.catalog * scale))
    counts = np.repeat(np.arange(_MAX_EVENTS + 1), _apportion(n_users, _count_shares(p)))
    user, opens = _visits(p, counts, rng)
    del counts
    time_us = _times(p, user, opens, rng)
    types = _session_types(opens, rng)
    catalog = _catalog(p, n_products, rng)
    product = _products(p, catalog, user, opens, time_us, rng)
    category = catalog.category
    del opens, catalog
    user = rng.permutation(n_users)[user]  # ids say nothing about a user's kind
    number = rng.permutation(n_products)
    product = number[product]
    frame = pl.DataFrame({USER: user, PRODUCT: product, EVENT: types, TIME: time_us})
    del user, product, types, time_us
    events = frame.sort(TIME, USER, maintain_order=True).select(
        _ids("U", USER, n_users),
        _ids("P", PRODUCT, n_products),
        pl.col(EVENT).replace_strict(range(len(EVENT_TYPES)), EVENT_TYPES, return_dtype=pl.String),
        (pl.col(TIME) + int(START.timestamp() * 1e6)).cast(pl.Datetime("us", "UTC")),
    )
    del frame
    return events, _catalog_frame(category, number, rng)


def _apportion(total: int, shares: Floats) -> Ints:
    """Integer counts summing to `total` in proportion to `shares` (largest remainder)."""
    raw = total * shares / shares.sum()
    counts: Ints = np.floor(raw).astype(np.int64)
    counts[np.argsort(counts - raw, kind="stable")[: total - int(counts.sum())]] += 1
    return counts


def _count_shares(p: Preset) -> Floats:
    """Share of users with k events, k = 0 .. _MAX_EVENTS."""
    one, few, many = p.activity
    shares = np.zeros(_MAX_EVENTS + 1)
    shares[1] = one
    body = p.few_ratio ** np.arange(4.0)
    shares[2:6] = few * body / body.sum()
    body = p.many_ratio ** np.arange(14.0)
    shares[6:20] = many * (1 - p.heavy) * body / body.sum()
    tail = np.arange(20.0, _MAX_EVENTS + 1) ** -1.5
    shares[20:] = many * p.heavy * tail / tail.sum()
    return shares


def _day_weights() -> Floats:
    """Relative activity per day of the window (day 0 = START, a Saturday)."""
    day = np.arange(DAYS, dtype=np.float64)
    weekday = (day + START.weekday()) % 7
    weekly = np.where(weekday >= 5, 1.12, 1.0) - np.where(weekday == 4, 0.05, 0.0)
    season = 1 + 0.35 * np.exp(-0.5 * ((day - 70) / 13) ** 2)  # peaks mid-December
    spikes = 0.8 * (day == 55) + 0.5 * (day == 58) - 0.3 * ((day >= 84) & (day <= 86))
    return np.asarray(weekly * (season + spikes), dtype=np.float64)


def _draw_days(last: Ints | int, size: int, rng: np.random.Generator) -> Ints:
    """Days from the daily profile, each restricted to 0 .. last."""
    cum = np.cumsum(_day_weights())
    return np.searchsorted(cum, rng.random(size) * cum[last], side="right").astype(np.int64)


def _visits(p: Preset, counts: Ints, rng: np.random.Generator) -> tuple[Ints, Bools]:
    """Per event, grouped by user: its user, and whether it opens a visit."""
    user = np.repeat(np.arange(counts.size), counts)
    first = np.zeros(user.size, dtype=bool)
    first[np.cumsum(counts) - counts] = True
    leave = ~first & (rng.random(user.size) < p.new_visit)
    returns = np.cumsum(leave, dtype=np.int64)
    returns -= np.repeat(returns[first], counts)  # returns begun so far by this user
    comes_back = leave & (returns == 1)
    later = (returns > 0) & ~comes_back & (rng.random(user.size) < p.next_visit)
    return user, first | comes_back | later


def _times(p: Preset, user: Ints, opens: Bools, rng: np.random.Generator) -> Ints:
    """Microseconds since START per event: one diurnal session per visit, events ~2 min apart."""
    first_event = np.flatnonzero(opens)
    visit_size = np.diff(np.append(first_event, opens.size))
    day = _visit_days(p, user[first_event], rng)
    within = rng.exponential(120e6, opens.size).astype(np.int64)
    within += 1
    within[first_event] = 0
    np.cumsum(within, out=within)
    within -= np.repeat(within[first_event], visit_size)
    length = within[first_event + visit_size - 1]
    hours = np.cumsum(_HOURS / _HOURS.sum())
    hour = np.searchsorted(hours, rng.random(day.size) * hours[-1], side="right")
    start = ((hour + rng.random(day.size)) * 3_600e6).astype(np.int64)
    start = np.minimum(start, _DAY_US - 1 - length)  # the session ends the same day
    day *= _DAY_US
    day += start
    within += np.repeat(day, visit_size)
    return within


def _visit_days(p: Preset, visit_user: Ints, rng: np.random.Generator) -> Ints:
    """Day of each visit: lognormal gaps, the whole span placed inside the window."""
    starts = np.flatnonzero(np.diff(visit_user, prepend=-1))  # each user's first visit
    per_user = np.diff(np.append(starts, visit_user.size))
    offset = np.ceil(rng.lognormal(np.log(p.gap_median), p.gap_sigma, visit_user.size))
    offset[starts] = 0
    np.cumsum(offset, out=offset)
    offset -= np.repeat(offset[starts], per_user)
    span = offset[starts + per_user - 1]
    fit = np.where(span > DAYS - 1, rng.uniform(0.5, 1, span.size) * (DAYS - 1), span)
    fit /= np.maximum(span, 1)  # squeeze spans longer than the window into it
    offset *= np.repeat(fit, per_user)
    first_day = _draw_days(DAYS - 1 - np.floor(span * fit).astype(np.int64), span.size, rng)
    day = np.floor(offset).astype(np.int64)
    day += np.repeat(first_day, per_user)
    return day


def _session_types(opens: Bools, rng: np.random.Generator) -> npt.NDArray[np.int8]:
    """Event types from an exact quota of the mix, in session order within each visit."""
    types = np.repeat(np.arange(len(EVENT_TYPES), dtype=np.int64), _apportion(opens.size, _MIX))
    rng.shuffle(types)
    types += np.cumsum(opens, dtype=np.int64) * 8  # nearly sorted already: timsort is fast
    return (np.sort(types, kind="stable") & 7).astype(np.int8)


def _catalog(p: Preset, n_products: int, rng: np.random.Generator) -> _Catalog:
    sizes = 1 / (np.arange(len(_CATEGORIES)) + 2.0) ** 0.9
    category = np.repeat(np.arange(len(_CATEGORIES)), _apportion(n_products, sizes))
    segment = category * p.groups + rng.integers(0, p.groups, n_products)
    arrival = _draw_days(DAYS - 1, n_products, rng) + rng.random(n_products)
    before = rng.random(n_products) < p.at_start
    arrival[before] = -rng.uniform(30, 400, int(before.sum()))
    popularity = rng.lognormal(0, p.popularity_sigma, n_products)
    return _Catalog(category, segment, arrival, popularity)


def _products(
    p: Preset, catalog: _Catalog, user: Ints, opens: Bools, time_us: Ints, rng: np.random.Generator
) -> Ints:
    """Per event, a catalog index: fresh picks by taste and time; the rest reuse the session's."""
    fresh = opens | (rng.random(opens.size) >= p.reuse)
    picks = np.flatnonzero(fresh)
    chosen = _pick(p, catalog, _segments(p, catalog, user[picks], rng), time_us[picks], rng)
    source = np.arange(opens.size)
    source[~fresh] = 0
    np.maximum.accumulate(source, out=source)  # the session's latest fresh pick
    product = np.empty(opens.size, dtype=np.int64)
    product[picks] = chosen
    return product[source]


def _segments(p: Preset, catalog: _Catalog, user: Ints, rng: np.random.Generator) -> Ints:
    """Per pick: one of its user's 1..tastes taste segments, or with 1 - loyalty any segment."""
    share = np.bincount(catalog.segment) / catalog.segment.size
    n_users = int(user.max()) + 1
    tastes = rng.choice(share.size, size=(n_users, p.tastes), p=share)
    slot = rng.random(user.size) * rng.integers(1, p.tastes + 1, n_users)[user]
    segment = tastes[user, slot.astype(np.int64)]
    explore = rng.random(user.size) >= p.loyalty
    segment[explore] = rng.choice(share.size, size=int(explore.sum()), p=share)
    return segment


def _pick(
    p: Preset, catalog: _Catalog, segment: Ints, time_us: Ints, rng: np.random.Generator
) -> Ints:
    """A product per pick from its segment, by weight at the pick's time.

    weight = popularity + boost * exp(-(t - arrival) / decay) once listed (from
    the next full hour), one boost for all. The boost factors into
    exp((arrival - DAYS) / decay) * exp((DAYS - t) / decay), so with products
    sorted by arrival "listed by t" is a prefix, each part one cumulative sum.
    """
    boost = p.launch * np.exp(p.popularity_sigma**2 / 2)  # in mean popularities
    day = time_us / _DAY_US
    hours = np.arange(DAYS * 24 + 1) / 24
    order = np.argsort(segment.astype(np.int16), kind="stable")  # radix sort
    products = np.argsort(catalog.segment * 1e3 + catalog.arrival)  # arrival > -500
    edges = np.arange(catalog.segment.max() + 2)
    bounds = np.searchsorted(catalog.segment[products], edges)
    pick_bounds = np.searchsorted(segment[order], edges)
    chosen = np.empty(segment.size, dtype=np.int64)
    for seg in range(edges.size - 1):
        members = products[bounds[seg] : bounds[seg + 1]]
        picks = order[pick_bounds[seg] : pick_bounds[seg + 1]]
        if picks.size == 0:
            continue
        arrival = catalog.arrival[members]
        lasting = np.cumsum(catalog.popularity[members])
        fading = np.cumsum(boost * np.exp((arrival - DAYS) / p.decay_days))
        # (an empty segment at a tiny scale falls back to its first product)
        listed_by = np.maximum(np.searchsorted(arrival, hours, side="right") - 1, 0)
        listed = listed_by[(day[picks] * 24).astype(np.int64)]
        scale = np.exp((DAYS - day[picks]) / p.decay_days)
        draw = rng.random(picks.size) * (lasting[listed] + fading[listed] * scale)
        draw -= lasting[listed]
        index = np.empty(picks.size, dtype=np.int64)
        boosted = draw >= 0  # beyond the lasting mass: a pick for the launch boost
        kept = ~boosted
        index[kept] = np.searchsorted(lasting, draw[kept] + lasting[listed[kept]], side="right")
        index[boosted] = np.searchsorted(fading, draw[boosted] / scale[boosted], side="right")
        chosen[picks] = members[np.minimum(index, listed)]
    return chosen


def _ids(prefix: str, column: str, n: int) -> pl.Expr:
    """Fixed-width ids, so string order is number order."""
    digits = pl.col(column).cast(pl.String).str.zfill(len(str(max(n - 1, 0))))
    return pl.format(f"{prefix}{{}}", digits).alias(column)


def _catalog_frame(category: Ints, number: Ints, rng: np.random.Generator) -> pl.DataFrame:
    """Names "<Brand> <Noun> <Model>" from the category's vocabulary; lognormal prices.

    Names are gathered from the table of all names (~2M, scale-free) and rows are
    laid out by product number, so no string is built or sorted per product.
    """
    n = number.size
    row = np.empty(n, dtype=np.int64)
    row[number] = np.arange(n)
    category = category[row]
    pairs = [[f"{b} {w}" for b in c[2].split() for w in c[3].split()] for c in _CATEGORIES]
    offsets = np.cumsum([0] + [len(words) for words in pairs])
    pair = pl.Series([s.replace("-", " ") for words in pairs for s in words])
    model = pl.Series([f"{letter}{v}" for letter in "ASXMZ" for v in range(1, 1000)])
    names = pl.select(
        pl.concat_str(
            pair.gather(np.repeat(np.arange(pair.len()), model.len())),
            model.gather(np.tile(np.arange(model.len()), pair.len())),
            separator=" ",
        )
    ).to_series()
    chosen = offsets[category] + (rng.random(n) * np.diff(offsets)[category]).astype(np.int64)
    median = np.array([c[1] for c in _CATEGORIES], dtype=np.float64)[category]
    return pl.DataFrame(
        {
            PRODUCT: np.arange(n),
            PRODUCT_NAME: names.gather(chosen * model.len() + rng.integers(0, model.len(), n)),
            CATEGORY: pl.Series([c[0] for c in _CATEGORIES]).gather(category),
            PRICE: np.maximum(np.round(median * rng.lognormal(0, 0.55, n)), 1) - 0.01,
        }
    ).with_columns(_ids("P", PRODUCT, n))
