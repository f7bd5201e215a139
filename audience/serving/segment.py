"""Segments: a product's users ranked to any depth, filtered, as the stored lists rank them.

A segment of size K is the first K users by the audience score (`audience.model.segments`),
drawn by the same strategy as `/recommend` (personalized, lookalike: each user's best
score over the named products, category, cold start: engagement alone), so its first N
rows are the stored list. Filters remove users before the K are taken, and each says how
many of the ranked users it removed (in the order below). Opted-out users are always
removed (`Index.excluding`), and `audience` gives /recommend's answer without them: the
stored list, or, when it names one, the segment's first N. Nothing is fitted here: one
pass over the product's evidence and a partial sort, a few milliseconds on the sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from audience.data.schema import USER
from audience.errors import ConfigError
from audience.model.audiences import CF_REASON
from audience.model.kernels.scores import top
from audience.serving.index import Answer, Index, Member, Strategy, merged

#: The filters, in the order they remove users. The last two are the contact rules
#: (`audience.store.Fatigue`), whose users the caller reads from the store.
FILTERS: Final = (
    "opted_out",
    "min_score",
    "active_within_days",
    "exclude_events",
    "exclude_users",
    "contacted_within_days",
    "contact_policy",
)


#: Re-ranked lists kept per opt-out snapshot (about 1 KB each at N = 10).
RERANKED: Final = 50_000


@dataclass(frozen=True)
class Filters:
    min_score: float | None = None
    active_within_days: float | None = None
    exclude_events: tuple[str, ...] = ()
    exclude_users: frozenset[str] = field(default_factory=frozenset)
    #: Users left out by each contact rule, by its name in FILTERS.
    fatigued: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Segment:
    product_id: str
    strategy: Strategy
    rows: pl.DataFrame  # rank, user_id, score (and reasons when asked)
    known_users: int  # every user the model knows: what `share` is a share of
    ranked_users: int  # users the strategy ranks (the excluded are not)
    removed: dict[str, int]  # users removed by each filter
    model_version: str
    notes: list[str]


def size_of(index: Index, size: int | None, share: float | None) -> int:
    """The segment's size from `size` or `share` (of the known users): exactly one."""
    if (size is None) == (share is None):
        raise ConfigError("size/share", "give exactly one of size (users) or share (0 to 1]")
    if size is not None:
        if size < 1:
            raise ConfigError("size", f"must be at least 1, got {size}")
        return size
    assert share is not None
    if not 0 < share <= 1:
        raise ConfigError("share", f"must be in (0, 1], got {share}")
    return max(1, math.ceil(share * index.users.height))


def _scores(
    index: Index, strategy: Strategy, product_id: str, like: tuple[str, ...], category: str | None
) -> npt.NDArray[np.float64]:
    ranking = index.ranking
    if strategy == "personalized":
        return ranking.product(product_id)
    if strategy == "lookalike":
        best: npt.NDArray[np.float64] = np.maximum.reduce([ranking.product(p) for p in like])
        return best
    if strategy == "category":
        assert category is not None
        return ranking.category(category)
    return index.users.get_column("score").to_numpy().astype(np.float64)


def _removals(
    index: Index,
    scores: npt.NDArray[np.float64],
    product_id: str,
    like: tuple[str, ...],
    filters: Filters,
) -> list[tuple[str, npt.NDArray[np.bool_]]]:
    """Per filter asked for, in FILTERS' order, the users it removes."""
    users = index.users
    out: list[tuple[str, npt.NDArray[np.bool_]]] = []
    if index.optout_mask is not None:
        out.append(("opted_out", index.optout_mask))
    if filters.min_score is not None:
        out.append(("min_score", scores < filters.min_score))
    if filters.active_within_days is not None:
        if filters.active_within_days < 0:
            raise ConfigError("active_within_days", "must be at least 0")
        days = users.get_column("days_since_last").to_numpy()
        out.append(("active_within_days", days > filters.active_within_days))
    if filters.exclude_events:
        known = index.ranking.types
        unknown = sorted(set(filters.exclude_events) - set(known))
        if unknown:
            raise ConfigError("exclude_events", f"unknown event types {unknown}; known: {known}")
        gone = np.zeros(users.height, np.bool_)
        for product in (product_id, *like):
            gone[index.ranking.touched_with(product, list(filters.exclude_events))] = True
        out.append(("exclude_events", gone))
    named = [("exclude_users", filters.exclude_users), *filters.fatigued.items()]
    for name, excluded in named:
        if excluded:
            out.append((name, index.mask(excluded)))
    return out


def segment(
    index: Index,
    product_id: str,
    k: int,
    like: tuple[str, ...] = (),
    category: str | None = None,
    filters: Filters | None = None,
    reasons: bool = False,
) -> Segment:
    """The first k users (after the filters) of the product's audience ranking."""
    filters = filters or Filters()
    strategy, known, named, notes = index.strategy(product_id, like, category)
    scores = _scores(index, strategy, product_id, known, named)
    alive = np.isfinite(scores)
    ranked = int(alive.sum())
    removed: dict[str, int] = {}
    removals = _removals(index, scores, product_id, known, filters)
    for name, gone in removals:
        removed[name] = int((alive & gone).sum())
        alive &= ~gone
    chosen = top(np.where(alive, scores, -np.inf) if removals else scores, k)
    rows = pl.DataFrame(
        {
            "rank": np.arange(1, chosen.size + 1, dtype=np.int64),
            USER: index.users.get_column(USER).gather(chosen),
            "score": scores[chosen],
        }
    )
    if reasons:
        said = _reasons(index, strategy, product_id, like, category, chosen)
        rows = rows.with_columns(reasons=said)
    if chosen.size < k:
        notes.append(f"only {chosen.size:,} users qualify, fewer than the {k:,} asked for")
    return Segment(
        product_id,
        strategy,
        rows,
        known_users=index.users.height,
        ranked_users=ranked,
        removed=removed,
        model_version=index.version,
        notes=notes,
    )


def audience(
    index: Index, product_id: str, n: int, like: tuple[str, ...] = (), category: str | None = None
) -> Answer:
    """/recommend's answer: the stored list, or, when it names an opted-out user, the
    first n of the ranking without them (the same ranking, one level deeper).

    A re-ranked list is kept per source (the product, its category, or the global
    ranking; a lookalike answer merges its products' lists as the stored ones are
    merged), so the many products that share a list and every n pay for one deeper
    pass, not one each."""
    answer = index.recommend(product_id, n, like, category)
    if not any(m.user_id in index.optouts for m in answer.audience):
        return answer
    strategy, known, named, _ = index.strategy(product_id, like, category)
    if strategy == "lookalike":  # the merge of the named products' re-ranked lists
        heads = [audience(index, p, index.n).audience for p in known]
        return Answer(product_id, strategy, merged(heads, n), index.version, answer.notes)
    source = (strategy, product_id if strategy == "personalized" else named)
    members = index.reranked.get(source)
    if members is None:
        found = segment(index, product_id, index.n, like, category, reasons=True)
        members = [
            Member(user, rank, score, tuple(said))
            for rank, user, score, said in found.rows.iter_rows()
        ]
        if len(index.reranked) >= RERANKED:
            index.reranked.clear()  # bounded; refilled by the sources asked for next
        index.reranked[source] = members
    return Answer(product_id, strategy, members[:n], index.version, answer.notes)


def _reasons(
    index: Index,
    strategy: Strategy,
    product_id: str,
    like: tuple[str, ...],
    category: str | None,
    chosen: npt.NDArray[np.int64],
) -> pl.Series:
    """The stored reasons of the users in the product's stored list; for the rest, where
    their score comes from: engagement, and with the collaborative term its share too
    (the larger of the two first)."""
    answer = index.recommend(product_id, index.n, like, category)
    stored = {m.user_id: list(m.reasons) for m in answer.audience}
    users = index.users.get_column(USER).gather(chosen).to_list()
    engagement = index.users.get_column("score").gather(chosen).to_list()
    deep = "top engagement overall" if strategy == "cold_start" else "engaged shopper"
    similar = _collaborative(index, product_id, chosen) if strategy == "personalized" else None

    def said(i: int, e: float) -> list[str]:
        engaged = f"{deep} (score {e:.2f})"
        t = 0.0 if similar is None else float(similar[i])
        if t <= 0:
            return [engaged]
        return [CF_REASON, engaged] if t >= e else [engaged, CF_REASON]

    return pl.Series(
        "reasons",
        [
            stored.get(u) or said(i, e)
            for i, (u, e) in enumerate(zip(users, engagement, strict=True))
        ],
        dtype=pl.List(pl.String),
    )


def _collaborative(
    index: Index, product_id: str, chosen: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64] | None:
    """The collaborative term of each chosen user for the product, if the model has one."""
    cf, p = index.ranking.evidence.cf, index.ranking.code(product_id)
    if cf is None or cf.weight <= 0 or p is None:
        return None
    return cf.term(cf.scores(p, chosen))
