"""The service's endpoints over an `IndexHolder`: audiences, users, products, operations.

Hot endpoints are `async` (no thread hop), read the holder once, and return the cached
JSON bytes as a `Response`, so FastAPI neither validates nor re-serialises them; their
`response_model` is there for the OpenAPI document. Endpoints that scan a table
(search, sample, metrics) are plain functions: FastAPI runs them in its thread pool,
off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from fastapi.params import Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from audience.data.schema import USER
from audience.serving.api.errors import ApiError, documented
from audience.serving.api.holder import IndexHolder, Loaded
from audience.serving.api.models import (
    LIKE_PATTERN,
    MAX_ID,
    MAX_LIKE,
    MAX_LIKE_TEXT,
    MAX_LIMIT,
    MAX_QUERY,
    SEGMENT_PATTERN,
    BatchRequest,
    BatchResponse,
    Health,
    ProductSample,
    ProductSearch,
    Ready,
    Recommendation,
    UserScore,
    bound,
)
from audience.serving.api.observe import Metrics

JSON = "application/json"
DEFAULT_N = 10
_ALIVE = orjson.dumps({"status": "alive"})
_FIXED = ("user_id", "rank", "score")
#: The hot route's template (also answered by `fast.FastRecommend`).
RECOMMEND = "/recommend/{product_id}"
#: A concrete path under the template: OpenAPI matches it first, so GET on it is a 405.
BATCH = "/recommend/batch"
BATCH_ID = BATCH.rsplit("/", 1)[1]
#: A path parameter that holds an id: 1 to MAX_ID characters, no "/".
SEGMENT: dict[str, Any] = {
    "min_length": 1,
    "max_length": MAX_ID,
    "json_schema_extra": {"pattern": SEGMENT_PATTERN},
}


def serving(holder: IndexHolder) -> Loaded:
    """The loaded index, or a 503 (only possible before start-up finishes)."""
    loaded = holder.loaded
    if loaded is None:
        raise ApiError(503, "not_ready", "no model loaded yet: retry shortly (see /ready)")
    return loaded


def check_n(n: int | None, stored: int, field: str = "n") -> int:
    """n within 1..stored N; omitted means 10 (or N when fewer are stored)."""
    if n is None:
        return min(DEFAULT_N, stored)
    if not 1 <= n <= stored:
        raise ApiError(
            422,
            "invalid_parameter",
            f"{field} must be between 1 and {stored} (the N this model stores), got {n}",
            field,
        )
    return n


def like_ids(text: str | None) -> tuple[str, ...]:
    """The comma-separated `like` products: at most MAX_LIKE parts of at most MAX_ID
    characters (LIKE_PATTERN); spaces around an id are dropped, empty parts skipped."""
    if not text:
        return ()
    parts = text.split(",")
    if len(parts) > MAX_LIKE:
        message = f"like: at most {MAX_LIKE} products, got {len(parts)}"
        raise ApiError(422, "invalid_parameter", message, "like")
    if any(len(part) > MAX_ID for part in parts):
        message = f"like: ids are at most {MAX_ID} characters"
        raise ApiError(422, "invalid_parameter", message, "like")
    return tuple(part.strip() for part in parts if part.strip())


def recommend_body(
    loaded: Loaded, product_id: str, n: int | None, like: str | None, category: str | None
) -> bytes:
    """The encoded answer of GET /recommend (the route's and `FastRecommend`'s)."""
    key = (product_id, check_n(n, loaded.index.n), like_ids(like), category)
    return loaded.cache.get(key)


def audience_router(holder: IndexHolder, max_batch: int, auth: Sequence[Depends]) -> APIRouter:
    """/recommend and /users: campaign endpoints, behind the API key when keys are set."""
    router = APIRouter(dependencies=list(auth), tags=["audiences"])
    keyed = (401,) if auth else ()

    # The batch route comes first: its concrete path wins over the template, as in OpenAPI.

    @router.post(
        BATCH,
        response_model=BatchResponse,
        responses=documented(400, *keyed, 413, 422, 503),
        summary="Audiences of many products in one call",
    )
    async def recommend_batch(body: BatchRequest) -> Response:
        """Up to AUDIENCE_MAX_BATCH products; results in the order asked, all from one
        model version."""
        if len(body.items) > max_batch:
            raise ApiError(
                422,
                "invalid_parameter",
                f"items: at most {max_batch} products per call, got {len(body.items)}; "
                "split the list",
                "items",
            )
        loaded = serving(holder)
        parts = [
            loaded.cache.get(
                (
                    item.product_id,
                    check_n(item.n, loaded.index.n, f"items.{i}.n"),
                    tuple(item.like),
                    item.category,
                )
            )
            for i, item in enumerate(body.items)
        ]
        version = orjson.dumps(loaded.index.version)
        content = b'{"model_version":' + version + b',"results":[' + b",".join(parts) + b"]}"
        return Response(content, media_type=JSON)

    @router.get(
        RECOMMEND,
        response_model=Recommendation,
        responses=documented(*keyed, 404, 414, 422, 503),
        summary="Who to contact about a product",
    )
    async def recommend(
        product_id: Annotated[
            str,
            Path(description="case-sensitive; `batch` is the batch endpoint's path", **SEGMENT),
        ],
        n: Annotated[
            int | None,
            Query(
                description="audience size, 1 to the stored N (its maximum here; `stored_n` "
                "in /ready); default 10, or N when fewer are stored",
                json_schema_extra=bound(maximum="stored_n", minimum=1),
            ),
        ] = None,
        like: Annotated[
            str,
            Query(
                max_length=MAX_LIKE_TEXT,
                description=f"for a new product: similar products, comma-separated: at most "
                f"{MAX_LIKE} ids of at most {MAX_ID} characters (spaces around an id are "
                "dropped, empty ids skipped)",
                json_schema_extra={"pattern": LIKE_PATTERN},
            ),
        ] = "",
        category: Annotated[
            str | None, Query(max_length=MAX_ID, description="for a new product: its category")
        ] = None,
    ) -> Response:
        """The product's top-n users with scores and reasons. An unknown product is not an
        error: it gets the lookalike, category or cold-start audience, and `strategy` says
        which."""
        if product_id == BATCH_ID:  # OpenAPI matches the concrete path first: POST only
            raise HTTPException(405, headers={"Allow": "POST"})
        body = recommend_body(serving(holder), product_id, n, like, category)
        return Response(body, media_type=JSON)

    @router.get(
        "/users/{user_id}",
        response_model=UserScore,
        responses=documented(
            *keyed,
            404,
            422,
            503,
            _404="a user not in the model (`unknown_user`) or opted out (`opted_out`), or an id "
            "containing '/', which cannot be addressed in the path (`not_found`)",
        ),
        summary="A user's engagement score, its components and rank",
    )
    async def user(user_id: Annotated[str, Path(**SEGMENT)]) -> Response:
        loaded = serving(holder)
        if user_id in loaded.index.optouts:
            raise ApiError(404, "opted_out", f"user {user_id!r} has opted out", "user_id")
        row = loaded.index.user(user_id)
        if row is None:
            raise ApiError(
                404,
                "unknown_user",
                f"user {user_id!r} is not in model {loaded.index.version}: no interactions "
                "before it was trained, or a misspelt id",
                "user_id",
            )
        return Response(orjson.dumps(_user(row, loaded)), media_type=JSON)

    return router


def _user(row: dict[str, Any], loaded: Loaded) -> dict[str, Any]:
    return {
        "user_id": row[USER],
        "score": row["score"],
        "rank": row["rank"],
        "users": loaded.index.users.height,
        "components": {k[2:]: v for k, v in row.items() if k.startswith("c_")},
        "features": {k: v for k, v in row.items() if k not in _FIXED and not k.startswith("c_")},
        "model_version": loaded.index.version,
    }


def catalog_router(holder: IndexHolder) -> APIRouter:
    """/products: open, for pickers in merchants' tools and the UI."""
    router = APIRouter(tags=["products"])

    @router.get("/products", response_model=ProductSearch, responses=documented(414, 422, 503))
    def search(
        query: Annotated[
            str, Query(max_length=MAX_QUERY, description="id prefix or part of the name")
        ] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    ) -> Response:
        """Catalog products whose id starts with, or name contains, the query (case
        ignored), most interacted first; an empty query lists the most interacted."""
        hits = serving(holder).index.search(query, limit)
        body = {"query": query, "products": hits.to_dicts()}
        return Response(orjson.dumps(body), media_type=JSON)

    @router.get(
        "/products/sample", response_model=ProductSample, responses=documented(414, 422, 503)
    )
    def sample(n: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 10) -> Response:
        """n random products that have a personalized audience (for demos and load tests)."""
        ids = serving(holder).index.sample(n)
        return Response(orjson.dumps({"product_ids": ids}), media_type=JSON)

    return router


def ops_router(holder: IndexHolder, metrics: Metrics) -> APIRouter:
    """/health, /ready, /metrics: open, for orchestrators and Prometheus."""
    router = APIRouter(tags=["operations"])

    @router.get("/health", response_model=Health)
    async def health() -> Response:
        """The process answers (liveness); says nothing about the model."""
        return Response(_ALIVE, media_type=JSON)

    @router.get(
        "/ready",
        response_model=Ready,
        responses={503: {"model": Ready, "description": "no model loaded yet"}},
    )
    async def ready() -> Response:
        """A model is loaded (readiness): its version and age, and the last reload error."""
        body = _ready(holder)
        status = 200 if body["status"] == "ready" else 503
        return Response(orjson.dumps(body), status, media_type=JSON)

    @router.get(
        "/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}}
    )
    def prometheus() -> Response:
        """Prometheus text format: requests, latency histogram, artifact version."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


def _ready(holder: IndexHolder) -> dict[str, Any]:
    loaded, status = holder.loaded, holder.status
    index = None if loaded is None else loaded.index
    now = datetime.now(UTC)
    return {
        "status": "not ready" if index is None else "ready",
        "model_version": None if index is None else index.version,
        "created_at": None if index is None else index.created_at.isoformat(),
        "age_seconds": None if index is None else (now - index.created_at).total_seconds(),
        "loaded_at": None if index is None else index.loaded_at.isoformat(),
        "stored_n": None if index is None else index.n,
        "last_check": None if status.last_check is None else status.last_check.isoformat(),
        "reloads": status.reloads,
        "failed_reloads": status.failures,
        "last_reload_error": status.last_error,
        "store": None if holder.store is None else holder.store.engine.shown,
        "optouts": len(holder.optouts),
        "optouts_read_at": None if status.optouts_at is None else status.optouts_at.isoformat(),
        "store_error": status.store_error,
    }
