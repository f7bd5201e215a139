"""Reference rankings every model must beat: random users and the most active users.

Both rank the same candidates as the model under test: known users, minus each
product's excluded users (those who already interacted with it). Rankings are
(products x k) arrays of user indices, -1 where fewer than k candidates exist.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def first_allowed(candidates: IntArray, excluded: IntArray, n_users: int, k: int) -> IntArray:
    """Per row, the first k candidates that are neither excluded nor repeated.

    `excluded` holds sorted codes row * n_users + user. Rows with fewer than k
    allowed candidates are padded with -1.
    """
    rows = np.arange(candidates.shape[0], dtype=np.int64)[:, None]
    codes = rows * n_users + candidates
    pos = np.searchsorted(excluded, codes).clip(max=max(excluded.size - 1, 0))
    ok = ~(excluded[pos] == codes) if excluded.size else np.ones(codes.shape, bool)
    order = np.argsort(candidates, axis=1, kind="stable")
    ordered = np.take_along_axis(candidates, order, axis=1)
    repeat = np.zeros(codes.shape, bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    np.put_along_axis(ok, order, np.take_along_axis(ok, order, axis=1) & ~repeat, axis=1)
    ok &= candidates >= 0
    rank = np.cumsum(ok, axis=1) - 1
    out = np.full((candidates.shape[0], k), -1, dtype=np.int64)
    r, c = np.nonzero(ok & (rank < k))
    out[r, rank[r, c]] = candidates[r, c]
    return out


def _margin(excluded: IntArray, n_users: int, n_rows: int) -> int:
    """The most users any one row excludes: how far past k a row may need to look."""
    per_row = np.bincount(excluded // n_users, minlength=n_rows) if excluded.size else [0]
    return int(np.max(per_row))


def ranked(score: FloatArray, excluded: IntArray, n_rows: int, k: int) -> IntArray:
    """Per row, the k best users by score (ties by index = user_id) not excluded for it.

    The same as `first_allowed` on the global order, without sorting (rows x width)
    codes: each row's exclusions are struck out of the global head, which is
    k + the most exclusions of any row long.
    """
    n_users = score.size
    order = np.lexsort((np.arange(n_users), -score)).astype(np.int64)
    head = order[: k + _margin(excluded, n_users, n_rows)]
    position = np.full(n_users, -1, dtype=np.int64)
    position[head] = np.arange(head.size)
    rows, pos = excluded // n_users, position[excluded % n_users]
    ok = np.ones((n_rows, head.size), dtype=bool)
    ok[rows[pos >= 0], pos[pos >= 0]] = False
    rank = np.cumsum(ok, axis=1) - 1
    out = np.full((n_rows, k), -1, dtype=np.int64)
    r, c = np.nonzero(ok & (rank < k))
    out[r, rank[r, c]] = head[c]
    return out


def popularity(activity: IntArray, excluded: IntArray, n_rows: int, k: int) -> IntArray:
    """Most active users first (ties by index, i.e. by user_id), for every row."""
    return ranked(activity.astype(np.float64), excluded, n_rows, k)


def random(n_users: int, excluded: IntArray, n_rows: int, k: int, seed: int = 0) -> IntArray:
    """Uniformly random allowed users per row, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    width = 2 * k + _margin(excluded, n_users, n_rows)
    out = first_allowed(rng.integers(0, n_users, (n_rows, width)), excluded, n_users, k)
    short = np.nonzero((out < 0).any(axis=1))[0]
    for row in short:  # rare: a row needing more draws than expected, or few candidates
        allowed = np.setdiff1d(np.arange(n_users), excluded[excluded // n_users == row] % n_users)
        picked = rng.permutation(allowed)[:k]
        out[row] = -1
        out[row, : picked.size] = picked
    return out
