"""Products' best users over every user on Spark, with the collaborative term: every
user has a term for every product, so each product ranks all of its users, as a
segment does (`audience.model.kernels.dense`, on one machine).

Products and users are cut into blocks; each (product block, user block) pair is one
task, whose rows carry both blocks (factors, engagement, category terms) and the
pair's evidence and banned users. An executor ranks its pair with the compiled pass
`kernels.blocks.best` (the segments' own sums), and each product's n best over every
user are the n best of its blocks' n best. So the work is products x users x factors,
spread over the tasks, and no table of all pairs is ever built: what a task holds is
bounded by the block sizes, and what it writes by products x n per user block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as fn

from audience.model.kernels.blocks import best

#: Products per block: a task ranks this many products over its users.
PRODUCTS_PER_BLOCK = 512
#: Users per block: a task holds this many users' factors (32 floats each: 8 MB).
USERS_PER_BLOCK = 1 << 16
#: A ranked row: the product, the weight's place in the weights asked for, the rank
#: (1 = best), the user and how its total was made (`kernels.blocks.best`).
RANKED = (
    "p long, w int, u long, total double, s double, direct double, r double, k long, "
    "category double"
)


def ranked(
    products: DataFrame,
    users: DataFrame,
    n: int,
    *,
    banned: DataFrame,
    weights: Sequence[float] = (1.0,),
    cf_half: float = 1.0,
    category: DataFrame | None = None,
    evidence: DataFrame | None = None,
    co: float = 0.0,
    half: float = 1.0,
    alone: bool = False,
) -> DataFrame:
    """Each of `products`' (p, c: category code or null, x: ALS factors) n best users
    for each of `weights`, as `RANKED` with `rank` after w. `users` (u, e: engagement,
    null when unscored; x: ALS factors, null for none) are every candidate; `banned`
    (p, u) pairs are never chosen; `category` (u, c, t) the category terms, `evidence`
    (p, u, direct, r, k) the users with product-level evidence (not banned), `co` and
    `half` the co-interaction term's scale and half point. `alone`: ranked by ALS's
    score alone (above 0), as ALS's own top n."""
    spark = products.sparkSession
    pb = (fn.col("p") / PRODUCTS_PER_BLOCK).cast("long").alias("pb")
    ub = (fn.col("u") / USERS_PER_BLOCK).cast("long").alias("ub")
    if category is None:
        category = spark.createDataFrame([], "u long, c long, t double")
    if evidence is None:
        evidence = spark.createDataFrame([], "p long, u long, direct double, r double, k long")
    user_blocks = users.select(ub).distinct()
    product_blocks = products.select(pb).distinct()
    # A task's product side: its products, and its pairs' evidence and banned users.
    items = products.select(pb, "p", fn.coalesce("c", fn.lit(-1)).alias("c"), "x")
    side = _kinds(
        items.crossJoin(user_blocks),
        evidence.select(pb, ub, "p", "u", "direct", "r", "k"),
        banned.select(pb, ub, "p", "u"),
    )
    # Its user side: the users of its block (every product block's copy) and their
    # category terms.
    people = users.select(ub, "u", "e", "x").crossJoin(product_blocks)
    termed = category.select(ub, "u", "c", "t").crossJoin(product_blocks)
    other = _kinds(people, termed)
    settings = (tuple(float(w) for w in weights), float(cf_half), float(co), float(half), n, alone)

    def run(left: pa.Table, right: pa.Table) -> pa.Table:
        return _task(left, right, *settings)

    place = fn.row_number().over(Window.partitionBy("w", "p").orderBy(fn.desc("total"), "u"))
    tasks = side.groupBy("pb", "ub").cogroup(other.groupBy("pb", "ub"))
    return tasks.applyInArrow(run, RANKED).withColumn("rank", place).where(fn.col("rank") <= n)


_SCHEMA = pa.schema(
    [
        ("p", pa.int64()),
        ("w", pa.int32()),
        ("u", pa.int64()),
        ("total", pa.float64()),
        ("s", pa.float64()),
        ("direct", pa.float64()),
        ("r", pa.float64()),
        ("k", pa.int64()),
        ("category", pa.float64()),
    ]
)


def _kinds(*frames: DataFrame) -> DataFrame:
    """`frames` in one, each row with its frame's place (`kind`), missing columns null."""
    tagged = [frame.withColumn("kind", fn.lit(i)) for i, frame in enumerate(frames)]
    joined = tagged[0]
    for frame in tagged[1:]:
        joined = joined.unionByName(frame, allowMissingColumns=True)
    return joined


def _task(
    side: pa.Table,
    other: pa.Table,
    weights: tuple[float, ...],
    cf_half: float,
    co: float,
    half: float,
    n: int,
    alone: bool,
) -> pa.Table:
    """One (product block, user block) pair's ranked rows (`RANKED`): `side` holds its
    products (kind 0), evidence (1) and banned pairs (2), `other` its users (0) and
    their category terms (1)."""
    kind, user_kind = _column(side, "kind"), _column(other, "kind")
    items, known, ban = (side.filter(pa.array(kind == i)) for i in range(3))
    people, terms = (other.filter(pa.array(user_kind == i)) for i in range(2))
    if items.num_rows == 0 or people.num_rows == 0:
        return pa.Table.from_batches([], _SCHEMA)
    by_p = np.argsort(_column(items, "p"))
    p, of, item_x = _column(items, "p")[by_p], _column(items, "c")[by_p], _factors(items)[by_p]
    by_u = np.argsort(_column(people, "u"))
    u, e = _column(people, "u")[by_u], _column(people, "e", np.float64)[by_u]
    user_x = _factors(people, item_x.shape[1])[by_u]
    c, tu, t = _column(terms, "c"), _column(terms, "u"), _column(terms, "t", np.float64)
    kinds = int(max(of.max(initial=-1), c.max(initial=-1))) + 1
    order = np.lexsort((tu, c))
    x_ptr, (x_u, x_direct, x_r, x_k) = _by_product(
        known, p, u, ("direct", np.float64), ("r", np.float64), ("k", None)
    )
    b_ptr, (b_u,) = _by_product(ban, p, u)
    found = best(
        e,
        np.ascontiguousarray(user_x.T),
        _ptr(c[order], kinds),
        np.searchsorted(u, tu[order]),
        t[order],
        item_x,
        of,
        x_ptr,
        x_u,
        x_direct,
        x_r,
        x_k,
        b_ptr,
        b_u,
        np.asarray(weights, np.float64),
        cf_half,
        co,
        half,
        n,
        alone,
    )
    j, w, at, total, s, direct, r, k, category = found
    columns = [p[j], w.astype(np.int32), u[at], total, s, direct, r, k, category]
    return pa.Table.from_arrays(columns, schema=_SCHEMA)


def _column(table: pa.Table, name: str, kind: type | None = None) -> npt.NDArray[Any]:
    """A column of `table` as NumPy (int64, or `kind`), nulls as NaN."""
    values = table.column(name).to_numpy()
    return np.asarray(values, dtype=kind or np.int64)


def _factors(table: pa.Table, width: int | None = None) -> npt.NDArray[np.float32]:
    """The `x` lists of `table` as a (rows, factors) float32 array; a null list (no
    factors) as zeros of `width`."""
    listed = table.column("x").combine_chunks()
    if width is not None and listed.null_count:
        filled = np.zeros((len(listed), width), np.float32)
        valid = np.asarray(listed.is_valid().to_numpy(zero_copy_only=False), bool)
        filled[valid] = _factors(table.filter(listed.is_valid()))
        return filled
    flat = np.asarray(listed.flatten().to_numpy(zero_copy_only=False), np.float32)
    return flat.reshape(len(listed), -1)


def _by_product(
    table: pa.Table,
    p: npt.NDArray[np.int64],
    u: npt.NDArray[np.int64],
    *fields: tuple[str, type | None],
) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[Any]]]:
    """The (p, u, fields...) rows of `table` in CSR by product place (`p` sorted):
    (offsets, [user places, fields...]), users ascending within a product."""
    keys, users = _column(table, "p"), _column(table, "u")
    j = np.searchsorted(p, keys)
    ours = j < p.size  # rows of the block's other products are not this task's
    ours[ours] = p[j[ours]] == keys[ours]
    order = np.flatnonzero(ours)[np.lexsort((users[ours], j[ours]))]
    columns = [np.searchsorted(u, users[order])]
    columns += [_column(table, name, kind)[order] for name, kind in fields]
    return _ptr(j[order], p.size), columns


def _ptr(sorted_keys: npt.NDArray[np.int64], size: int) -> npt.NDArray[np.int64]:
    """CSR offsets of `sorted_keys` (0 <= key < size)."""
    ptr = np.zeros(size + 1, np.int64)
    np.cumsum(np.bincount(sorted_keys, minlength=size), out=ptr[1:])
    return ptr
