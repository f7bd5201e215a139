"""The serving index: a verified artifact held in memory, answering in microseconds.

Nothing is scored here: every answer is a slice of a table precomputed by
`audience train`. Strategies, in the order they are tried:

- personalized: the product has its own audience (it had interactions), stored with
                it or, when it is exactly its category's, once with the category;
- lookalike:    the caller names similar products (`like`); their audiences are
                merged, each user keeping their best score;
- category:     the product's category (given by the caller, or from the
                catalog for a listed product without interactions);
- cold_start:   the global engagement ranking.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl

from audience import artifact
from audience.data.schema import AUDIENCE_CATEGORY, CATEGORY, PRODUCT, PRODUCT_NAME, USER
from audience.model.segments import Ranking

K = TypeVar("K")
V = TypeVar("V")

#: Which rule produced an answer (the module docstring gives the order they are tried in).
Strategy = Literal["personalized", "lookalike", "category", "cold_start"]


@dataclass(frozen=True)
class Member:
    user_id: str
    rank: int
    score: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    product_id: str
    strategy: Strategy
    audience: list[Member]
    model_version: str
    notes: list[str] = field(default_factory=list)


def merged(lists: list[list[Member]], n: int) -> list[Member]:
    """The lookalike audience of several products' lists: each user at their best score,
    ranked by it (ties by user id). The first n of the whole lookalike ranking are in
    the first n of some product's, so merging the heads is exact."""
    best: dict[str, Member] = {}
    for members in lists:
        for m in members:
            if m.user_id not in best or m.score > best[m.user_id].score:
                best[m.user_id] = m
    ranked = sorted(best.values(), key=lambda m: (-m.score, m.user_id))[:n]
    return [Member(m.user_id, i, m.score, m.reasons) for i, m in enumerate(ranked, start=1)]


def carried_over(
    old: Index, new: Index, answers: Mapping[K, V], named: Callable[[V], Iterable[str]]
) -> dict[K, V]:
    """Which of `old`'s `answers` still hold for `new`: when `new` is the same model with
    more users opted out, those that name (`named`) none of the new ones, in the same
    order; else (a new model, an opt-out taken back) none."""
    if new.version != old.version or not old.optouts <= new.optouts:
        return {}
    added = new.optouts - old.optouts
    return {key: value for key, value in answers.items() if added.isdisjoint(named(value))}


class _Keys:
    """Distinct strings held as one sorted Polars column (Arrow buffers, not a dict of
    Python objects), found by binary search: about 20 probes for a million keys."""

    def __init__(self, ordered: pl.Series) -> None:
        self.keys = ordered

    def find(self, key: object) -> int | None:
        """The key's position among the sorted keys, or None for a key not held."""
        if not isinstance(key, str):
            return None
        keys = self.keys
        i = bisect.bisect_left(keys, key)  # Polars sorts UTF-8 bytes: code point order
        return i if i < len(keys) and keys[i] == key else None

    def __contains__(self, key: object) -> bool:
        return self.find(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _Map(_Keys):
    """A key -> value column pair sorted by key (the last value of a repeated key wins)."""

    def __init__(self, frame: pl.DataFrame, key: str, value: str) -> None:
        pairs = frame.select(key, value)
        if pairs.null_count().sum_horizontal().item():
            pairs = pairs.drop_nulls()
        if not _increasing(pairs.get_column(key)):
            pairs = pairs.unique(key, keep="last", maintain_order=True).sort(key)
        super().__init__(pairs.get_column(key))
        self.values = pairs.get_column(value)

    def get(self, key: object) -> Any:
        i = self.find(key)
        return None if i is None else self.values[i]


def _increasing(keys: pl.Series) -> bool:
    """Sorted without repeats: a table read in key order (users and products are, in an
    artifact) is taken as it is, not deduplicated and sorted into a copy (at 10x the
    sample those copies held ~1 GB of the server's memory)."""
    if keys.len() < 2:
        return True
    return bool(keys.is_sorted() and (keys.slice(1) != keys.slice(0, keys.len() - 1)).all())


class _Slices(_Keys):
    """Rows of a table sorted by key then rank: each key's rows are one run, located by
    binary search over the sorted keys and an offsets array. The table's columns stay
    as loaded; only the rows an answer shows become Python objects."""

    def __init__(self, frame: pl.DataFrame, key: str) -> None:
        runs = frame.get_column(key).rle().struct.unnest()
        runs = runs.with_columns(end=pl.col("len").cast(pl.Int64).cum_sum())
        #: The keys in table order (the order `Index.sample` draws from).
        self.order = runs.get_column("value")
        runs = runs.sort("value")
        super().__init__(runs.get_column("value"))
        self.ends = runs.get_column("end").to_numpy()
        self.starts = self.ends - runs.get_column("len").cast(pl.Int64).to_numpy()
        self.users = frame.get_column(USER)
        self.scores = frame.get_column("score").to_numpy()
        self.reasons = frame.get_column("reasons")

    def members(self, key: str, n: int) -> list[Member]:
        run = self.find(key)
        if run is None:
            raise KeyError(key)
        start = int(self.starts[run])
        length = max(0, min(int(self.ends[run]) - start, n))
        users = self.users.slice(start, length).to_list()
        scores = self.scores[start : start + length].tolist()
        reasons = self.reasons.slice(start, length).to_list()
        return [
            Member(u, rank, s, tuple(r))
            for rank, (u, s, r) in enumerate(zip(users, scores, reasons, strict=True), start=1)
        ]


class Index:
    """One loaded artifact version; immutable, so a server swaps whole indexes."""

    def __init__(self, loaded: artifact.Artifact) -> None:
        self.artifact = loaded
        self.version = loaded.version
        self.n = int(loaded.manifest["config"]["n"])
        self.loaded_at = datetime.now(UTC)
        tables = loaded.tables
        self._products = _Slices(tables["audiences"], PRODUCT)
        self._categories = _Slices(tables["category_audiences"], CATEGORY)
        users = tables["user_scores"]
        self.users = users
        self._user_row = _Map(users.select(USER).with_row_index("_row"), USER, "_row")
        top = users.select(USER, "rank", "score").filter(pl.col("rank") <= self.n).sort("rank")
        self._global = [
            Member(u, int(r), float(s), ("top engagement overall",)) for u, r, s in top.iter_rows()
        ]
        products = tables["products"]
        self._shared = _Map(products, PRODUCT, AUDIENCE_CATEGORY)
        self.catalog = products.drop(AUDIENCE_CATEGORY).with_columns(
            _id=pl.col(PRODUCT).str.to_lowercase(),
            _name=pl.col(PRODUCT_NAME).fill_null("").str.to_lowercase(),
        )
        shared = products.select(PRODUCT, AUDIENCE_CATEGORY).drop_nulls().get_column(PRODUCT)
        self._with_audience = pl.concat([self._products.order, shared.unique(maintain_order=True)])
        self._category_of = _Map(self.catalog, PRODUCT, CATEGORY)
        self.ranking = Ranking.of_tables(tables, loaded.model)
        #: `audience train --cf`'s outcome (model.json's `cf`; empty for older artifacts).
        self.collaborative: dict[str, Any] = loaded.model.get("cf", {})
        #: Opted-out users (`excluding`): no answer may name them.
        self.optouts: frozenset[str] = frozenset()
        #: Per user code, opted out or not; None when nobody is.
        self.optout_mask: npt.NDArray[np.bool_] | None = None
        #: Stored lists re-ranked without the opted-out users, by the source they are
        #: drawn from (`serving.segment.audience`); new with every opt-out snapshot.
        self.reranked: dict[tuple[str, object], list[Member]] = {}

    @classmethod
    def open(cls, root: Path) -> Index:
        return cls(artifact.load(root))

    def excluding(self, optouts: frozenset[str]) -> Index:
        """This model with `optouts` opted out. Shares every table with this index: only
        the set and a mask over the users are new, and the re-ranked lists that still
        hold when `optouts` only adds to this index's."""
        view = copy.copy(self)
        view.optouts = optouts
        view.optout_mask = self.mask(optouts) if optouts else None
        view.reranked = carried_over(
            self, view, self.reranked, lambda members: (m.user_id for m in members)
        )
        return view

    def mask(self, user_ids: Collection[str]) -> npt.NDArray[np.bool_]:
        """Per user code: is the user one of `user_ids`."""
        wanted = pl.Series(sorted(user_ids), dtype=pl.String)
        found: npt.NDArray[np.bool_] = (
            self.users.get_column(USER).is_in(wanted.implode()).to_numpy()
        )
        return found

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.artifact.manifest["created_at"])

    def knows(self, product_id: str) -> bool:
        return product_id in self._products or product_id in self._shared

    def strategy(
        self, product_id: str, like: tuple[str, ...] = (), category: str | None = None
    ) -> tuple[Strategy, tuple[str, ...], str | None, list[str]]:
        """How a product's audience is drawn (the order `recommend` tries): the strategy,
        the known `like` products, the category, and notes on what was ignored."""
        notes: list[str] = []
        if self.knows(product_id):
            return "personalized", (), None, notes
        known = tuple(p for p in like if self.knows(p))
        if like and len(known) < len(like):
            notes.append(f"unknown similar products ignored: {sorted(set(like) - set(known))}")
        if known:
            return "lookalike", known, None, notes
        category = category or self._category_of.get(product_id)
        if category is not None and category in self._categories:
            return "category", (), category, notes
        if category is not None:
            notes.append(f"unknown category {category!r}")
        return "cold_start", (), None, notes

    def _own(self, product_id: str, n: int) -> list[Member] | None:
        """The product's own audience, wherever it is stored; None if it has none."""
        if product_id in self._products:
            return self._products.members(product_id, n)
        category = self._shared.get(product_id)
        return None if category is None else self._categories.members(category, n)

    def recommend(
        self, product_id: str, n: int, like: tuple[str, ...] = (), category: str | None = None
    ) -> Answer:
        """The product's audience of at most n users, and the strategy that produced it."""
        strategy, known, category, notes = self.strategy(product_id, like, category)
        if strategy == "personalized":
            members = self._own(product_id, n)
            assert members is not None
        elif strategy == "lookalike":
            members = self._lookalike(known, n)
        elif strategy == "category":
            assert category is not None
            members = self._categories.members(category, n)
        else:
            members = self._global[:n]
        return self._answer(product_id, strategy, members, notes)

    def _lookalike(self, known: tuple[str, ...], n: int) -> list[Member]:
        return merged([self._own(product, self.n) or [] for product in known], n)

    def _answer(
        self,
        product_id: str,
        strategy: Strategy,
        members: list[Member],
        notes: list[str] | None = None,
    ) -> Answer:
        return Answer(product_id, strategy, members, self.version, notes or [])

    def user(self, user_id: str) -> dict[str, Any] | None:
        """The user's score, rank and components, or None for an unknown user."""
        row = self._user_row.get(user_id)
        return None if row is None else self.users.row(row, named=True)

    def search(self, query: str, limit: int) -> pl.DataFrame:
        """Products whose id starts with, or whose name contains, `query` (case-insensitive)."""
        q = query.strip().lower()
        hits = self.catalog.filter(
            pl.col("_id").str.starts_with(q) | pl.col("_name").str.contains(q, literal=True)
        )
        top = hits.sort("interactions", PRODUCT, descending=[True, False]).head(limit)
        return top.drop("_id", "_name")

    def sample(self, n: int, seed: int | None = None) -> list[str]:
        """n product ids that have a personalized audience (for pickers and load tests)."""
        ids = self._with_audience
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(ids), size=min(n, len(ids)), replace=False)
        return list(ids.gather(picked).to_list())
