"""The served model: one loaded `Index` at a time, swapped whole when `current` changes.

A request reads `holder.loaded` once and uses that snapshot to the end, so a swap
between two requests is invisible inside either (an attribute assignment is atomic in
CPython). A new version is loaded beside the old one, off the event loop, and only a
fully verified `Index` replaces it; a failed load is logged, remembered (so a bad
version is not re-read on every poll) and the old index keeps serving.

Answers are encoded to JSON bytes once per (version, product, n, like, category) and
kept in a bounded LRU that lives and dies with its index, so a swap can never serve a
stale answer and a hot product costs one dict lookup.

Opt-outs: the holder keeps the store's latest snapshot of opted-out users and serves
`index.excluding(snapshot)`. `sync_optouts` reads the store (every poll, and after this
worker writes one); a changed snapshot swaps in the same model with its answer cache
less every answer naming a newly opted-out user (emptied when an opt-out is taken
back), so no cached answer outlives an opt-out and a trickle of opt-outs does not cool
the whole cache. When the store cannot be read, the last
snapshot stays in force and /ready says so.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from audience import artifact
from audience.errors import ArtifactError, AudienceError
from audience.serving.index import Answer, Index, carried_over
from audience.serving.segment import audience, segment
from audience.store.store import Store

log = logging.getLogger("audience.api")

#: Encoded answers kept per loaded version (about 1 KB each at n = 10).
CACHE_ENTRIES = 50_000
Key = tuple[str, int, tuple[str, ...], str | None]


def answer_dict(answer: Answer) -> dict[str, Any]:
    """The JSON form of an answer (the `Recommendation` response model)."""
    return {
        "product_id": answer.product_id,
        "strategy": answer.strategy,
        "audience": [
            {"user_id": m.user_id, "rank": m.rank, "score": m.score, "reasons": m.reasons}
            for m in answer.audience
        ],
        "model_version": answer.model_version,
        "notes": answer.notes,
    }


class AnswerCache:
    """Encoded answers of one index, least recently used evicted first."""

    def __init__(self, index: Index, size: int = CACHE_ENTRIES) -> None:
        self.index = index
        self.size = size
        #: Per key: the answer's bytes and the users it names (for `carried`).
        self._entries: OrderedDict[Key, tuple[bytes, tuple[str, ...]]] = OrderedDict()

    def carried(self, index: Index) -> AnswerCache:
        """The cache of `index`, the same model with more users opted out: the answers
        that name none of the new ones are still right and are kept. Anything else (a
        new model, an opt-out taken back) starts empty."""
        fresh = AnswerCache(index, self.size)
        fresh._entries.update(carried_over(self.index, index, self._entries, lambda e: e[1]))
        return fresh

    def get(self, key: Key) -> bytes:
        """The answer's JSON bytes; computed and encoded only on the first call."""
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit[0]
        product, n, like, category = key
        answer = audience(self.index, product, n, like, category)
        body = orjson.dumps(answer_dict(answer))
        self._entries[key] = body, tuple(m.user_id for m in answer.audience)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return body


@dataclass(frozen=True)
class Loaded:
    """An index, its answer cache and the `current` signature it was loaded from."""

    index: Index
    cache: AnswerCache
    signature: tuple[str, int]


@dataclass
class ReloadStatus:
    """What /ready reports about reloading, and who to tell (metrics) when it changes."""

    optouts_at: datetime | None = None  # when the opt-out snapshot was last read
    store_error: dict[str, str] | None = None  # the last failure to read it, until it recovers
    last_check: datetime | None = None
    last_error: dict[str, str] | None = None
    reloads: int = 0
    failures: int = 0
    on_swap: list[Callable[[Loaded | None, Loaded], None]] = field(default_factory=list)
    on_refuse: list[Callable[[ArtifactError], None]] = field(default_factory=list)


def _warm(index: Index) -> None:
    """Answer once as requests will (a stored list, a short and a long segment), so that
    what a first answer makes once (the compiled passes, loaded from numba's cache) is
    made before the collector's objects are frozen, not by a request."""
    for product in index.sample(1, seed=0):
        try:
            audience(index, product, index.n)
            for size in (index.n, 1_000):
                segment(index, product, size, reasons=True)
        except AudienceError as exc:  # a request for it would say so; the load goes on
            log.warning("warm-up answer failed", extra={"product": product, "error": str(exc)})


def signature(root: Path) -> tuple[str, int]:
    """Which version `root` points at, and when its manifest was written.

    Raises ArtifactError when there is no `current` to point at.
    """
    folder = artifact.current(root)
    manifest = folder / artifact.MANIFEST
    try:
        return str(folder), manifest.stat().st_mtime_ns
    except FileNotFoundError:
        raise ArtifactError(folder, "incomplete: manifest.json is missing") from None


class IndexHolder:
    """The current `Index` of an artifact root, replaced atomically by `check()`."""

    def __init__(
        self,
        root: Path,
        opener: Callable[[Path], Index] = Index.open,
        cache_size: int = CACHE_ENTRIES,
        store: Store | None = None,
    ) -> None:
        self.root = root
        self.store = store
        self.optouts: frozenset[str] = frozenset()
        self.opener = opener
        self.cache_size = cache_size
        self.loaded: Loaded | None = None
        self.status = ReloadStatus()
        self._refused: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._swapping = threading.Lock()  # one of reload and opt-out sync swaps at a time
        self._syncing = threading.Lock()  # one opt-out read-and-swap at a time: a slow read
        # finishing after a newer one must not swap its older snapshot back in

    def get(self) -> Index | None:
        """The index now serving (the UI's `get_index`)."""
        loaded = self.loaded
        return None if loaded is None else loaded.index

    def adopt(self, index: Index) -> None:
        """Serve an already loaded index (the CLI verified it before starting)."""
        self._swap(index, signature(self.root))

    def load(self) -> Index:
        """Load the current version now; raises ArtifactError (start-up must fail loudly)."""
        sig = signature(self.root)
        self._swap(self.opener(self.root), sig)
        loaded = self.loaded
        assert loaded is not None
        return loaded.index

    def sync_optouts(self) -> bool:
        """Read the store's opt-outs and serve them; True when they changed. Never raises:
        a store that cannot be read is kept in `status.store_error`, the snapshot stays."""
        if self.store is None:
            return False
        with self._syncing:
            return self._sync_optouts(self.store)

    def _sync_optouts(self, store: Store) -> bool:
        try:
            optouts = store.optouts()
        except AudienceError as exc:
            self.status.store_error = {"at": datetime.now(UTC).isoformat(), "message": str(exc)}
            log.error("opt-outs not read", extra={"error": str(exc)})
            return False
        self.status.optouts_at = datetime.now(UTC)
        self.status.store_error = None
        with self._swapping:
            if optouts == self.optouts:
                return False
            self.optouts = optouts
            loaded = self.loaded
            if loaded is not None:
                index = loaded.index.excluding(optouts)
                self.loaded = Loaded(index, loaded.cache.carried(index), loaded.signature)
        return True

    def check(self, force: bool = False) -> bool:
        """Load and swap in a new `current` if there is one; True when a swap happened.

        Runs in a worker thread (loading takes seconds). A version that failed is tried
        again only when `current` changes or `force` (SIGHUP) is given. Never raises: a
        failure is logged and kept for /ready while the old index keeps serving.
        """
        if not self._lock.acquire(blocking=False):
            return False  # a check is already loading; it will see the same `current`
        try:
            return self._check(force)
        finally:
            self._lock.release()

    def _check(self, force: bool) -> bool:
        self.status.last_check = datetime.now(UTC)
        try:
            sig = signature(self.root)
            loaded = self.loaded
            if loaded is not None and sig == loaded.signature and not force:
                return False
            if sig == self._refused and not force:
                return False
            started = time.perf_counter()
            index = self.opener(self.root)
        except ArtifactError as exc:
            self._refuse(exc)
            return False
        self._swap(index, sig)
        self.status.reloads += 1
        log.info(
            "artifact loaded",
            extra={"version": index.version, "seconds": round(time.perf_counter() - started, 3)},
        )
        return True

    def _refuse(self, exc: ArtifactError) -> None:
        try:
            self._refused = signature(self.root)
        except ArtifactError:
            self._refused = None
        self.status.failures += 1
        self.status.last_error = {"at": datetime.now(UTC).isoformat(), "message": str(exc)}
        serving = self.loaded.index.version if self.loaded else None
        log.error("artifact refused", extra={"error": str(exc), "still_serving": serving})
        for listener in self.status.on_refuse:
            listener(exc)

    def _swap(self, index: Index, sig: tuple[str, int]) -> None:
        # An index holds its tables as columns (a few hundred tracked objects, not the ~2
        # million whose full collection once took 330 ms mid-serving), so a load gives the
        # collector little to walk. Freezing still moves what is long-lived by now (the
        # app, the index, and what the first answers make once: the compiled passes,
        # loaded by `_warm`) out of its sight; refcounting still frees the old index.
        _warm(index)
        gc.freeze()
        with self._swapping:
            served = index.excluding(self.optouts)
            new = Loaded(served, AnswerCache(served, self.cache_size), sig)
            old, self.loaded = self.loaded, new
        self._refused = None
        self.status.last_error = None
        for listener in self.status.on_swap:
            listener(old, new)
