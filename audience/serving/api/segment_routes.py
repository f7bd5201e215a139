"""/segments: a product's audience at any depth, filtered, as JSON, CSV or Parquet.

`GET /segments/{product_id}` and `POST /segments` (the same, plus an `exclude_users`
list) rank on demand from the served model (`audience.serving.segment`), in FastAPI's
thread pool: the ranking releases the GIL, and /recommend's hot path is not touched.
CSV and Parquet are sent in chunks; JSON is limited to MAX_JSON_ROWS rows, which a
campaign system reads comfortably in one document.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Annotated, Literal

import orjson
import polars as pl
from fastapi import APIRouter, Path, Query
from fastapi.params import Depends
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from audience.data.schema import PRODUCT
from audience.serving.api.errors import ApiError, documented
from audience.serving.api.holder import IndexHolder
from audience.serving.api.models import (
    LIKE_PATTERN,
    MAX_ID,
    MAX_LIKE,
    MAX_LIKE_TEXT,
    Body,
    Count,
    Member,
    Size,
)
from audience.serving.api.routes import JSON, SEGMENT, like_ids, serving
from audience.serving.index import Strategy
from audience.serving.segment import Filters, Segment, segment, size_of
from audience.settings import Settings
from audience.store.store import Fatigue

#: The most rows a JSON answer holds; CSV and Parquet have no such limit.
MAX_JSON_ROWS = 10_000
#: The most user ids `POST /segments` takes to leave out.
MAX_EXCLUDED = 10_000
#: Rows written per chunk of a CSV answer.
CHUNK_ROWS = 50_000
EVENTS_PATTERN = "^[A-Za-z_][A-Za-z0-9_ ]*(,[A-Za-z_][A-Za-z0-9_ ]*)*$"
Format = Literal["json", "csv", "parquet"]
MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


class SegmentAnswer(BaseModel):
    product_id: str
    strategy: Strategy
    size: int = Field(description="rows in this answer")
    known_users: int = Field(description="every user the model knows (what `share` is of)")
    ranked_users: int = Field(description="users the strategy ranks (the excluded are not)")
    removed: dict[str, int] = Field(description="users removed by each filter asked for")
    audience: list[Member]
    model_version: str
    notes: list[str]


class SegmentRequest(Body):
    product_id: str = Field(min_length=1, max_length=MAX_ID)
    size: Size | None = Field(default=None, description="users (or give share)")
    share: float | None = Field(default=None, gt=0, le=1, description="of every known user")
    like: list[Annotated[str, Field(min_length=1, max_length=MAX_ID)]] = Field(
        default_factory=list, max_length=MAX_LIKE
    )
    category: str | None = Field(default=None, min_length=1, max_length=MAX_ID)
    min_score: float | None = None
    active_within_days: float | None = Field(default=None, ge=0)
    exclude_events: list[Annotated[str, Field(min_length=1, max_length=MAX_ID)]] = Field(
        default_factory=list, max_length=20
    )
    exclude_users: list[Annotated[str, Field(min_length=1, max_length=MAX_ID)]] = Field(
        default_factory=list, max_length=MAX_EXCLUDED
    )
    reasons: bool = False
    format: Format = "json"
    exclude_contacted_within_days: float | None = Field(
        default=None, ge=0, description="leave out users contacted in the last D days"
    )
    max_contacts: Count | None = Field(
        default=None,
        description="contact policy: leave out users with this many contacts in the last "
        "`contact_window_days` (default AUDIENCE_MAX_CONTACTS; 0 = no policy)",
    )
    contact_window_days: float | None = Field(
        default=None, gt=0, description="the policy's window (default AUDIENCE_CONTACT_WINDOW_DAYS)"
    )


def _answer(found: Segment, fmt: Format, reasons: bool) -> Response:
    """The segment in the asked format; CSV and Parquet sent in chunks."""
    rows = found.rows
    if fmt == "json":
        members = rows.select(
            "user_id", "rank", "score", *(["reasons"] if reasons else [])
        ).to_dicts()
        for m in members:
            m.setdefault("reasons", [])
        body = {
            "product_id": found.product_id,
            "strategy": found.strategy,
            "size": rows.height,
            "known_users": found.known_users,
            "ranked_users": found.ranked_users,
            "removed": found.removed,
            "audience": members,
            "model_version": found.model_version,
            "notes": found.notes,
        }
        return Response(orjson.dumps(body), media_type=JSON)
    table = rows.select(pl.lit(found.product_id).alias(PRODUCT), pl.all())
    headers = {
        "X-Model-Version": found.model_version,
        "X-Strategy": found.strategy,
        "Content-Disposition": f'attachment; filename="segment.{fmt}"',
    }
    if fmt == "csv":
        if reasons:
            table = table.with_columns(pl.col("reasons").list.join("; "))
        return StreamingResponse(_csv(table), media_type=MEDIA["csv"], headers=headers)
    buffer = io.BytesIO()
    table.write_parquet(buffer)
    return StreamingResponse(
        _chunks(buffer.getvalue()), media_type=MEDIA["parquet"], headers=headers
    )


def _csv(table: pl.DataFrame) -> Iterator[bytes]:
    yield table.head(0).write_csv().encode()
    for at in range(0, table.height, CHUNK_ROWS):
        yield table.slice(at, CHUNK_ROWS).write_csv(include_header=False).encode()


def _chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def segment_router(holder: IndexHolder, settings: Settings, auth: Sequence[Depends]) -> APIRouter:
    router = APIRouter(tags=["segments"], dependencies=list(auth))
    keyed = (401,) if auth else ()
    ok = {
        200: {
            "model": SegmentAnswer,
            "content": {MEDIA["csv"]: {}, MEDIA["parquet"]: {}},
            "description": "JSON (at most 10,000 rows), or CSV / Parquet: product_id, rank, "
            "user_id, score (+ reasons)",
        }
    }
    rules = (
        "a rule between parameters broken (size and share together or neither; JSON for "
        "more than 10,000 rows) or an event type the model does not know"
    )
    on_get = ok | documented(*keyed, 404, 414, 422, 503, _422=rules)
    on_post = ok | documented(400, *keyed, 413, 422, 503, _422=rules)

    def answer(request: SegmentRequest) -> Response:
        index = serving(holder).index
        k = size_of(index, request.size, request.share)
        if request.format == "json" and k > MAX_JSON_ROWS:
            raise ApiError(
                422,
                "invalid_parameter",
                f"JSON holds at most {MAX_JSON_ROWS:,} rows, {k:,} were asked for: ask for "
                "format=csv or format=parquet",
                "format",
            )
        rules = Fatigue.of(
            settings,
            request.exclude_contacted_within_days,
            request.max_contacts,
            request.contact_window_days,
        )
        assert holder.store is not None
        filters = Filters(
            request.min_score,
            request.active_within_days,
            tuple(request.exclude_events),
            frozenset(request.exclude_users),
            holder.store.fatigued(rules),
        )
        found = segment(
            index,
            request.product_id,
            k,
            tuple(dict.fromkeys(request.like)),
            request.category,
            filters,
            request.reasons,
        )
        return _answer(found, request.format, request.reasons)

    @router.get("/segments/{product_id}", response_class=Response, responses=on_get)
    def get_segment(
        product_id: Annotated[str, Path(**SEGMENT)],
        size: Annotated[int | None, Query(ge=1, description="users (or give share)")] = None,
        share: Annotated[float | None, Query(gt=0, le=1, description="of every known user")] = None,
        like: Annotated[str | None, Query(max_length=MAX_LIKE_TEXT, pattern=LIKE_PATTERN)] = None,
        category: Annotated[str | None, Query(min_length=1, max_length=MAX_ID)] = None,
        min_score: float | None = None,
        active_within_days: Annotated[float | None, Query(ge=0)] = None,
        exclude_events: Annotated[
            str | None, Query(max_length=1000, pattern=EVENTS_PATTERN)
        ] = None,
        reasons: bool = False,
        format: Format = "json",
        exclude_contacted_within_days: Annotated[float | None, Query(ge=0)] = None,
        max_contacts: Annotated[int | None, Query(ge=0)] = None,
        contact_window_days: Annotated[float | None, Query(gt=0)] = None,
    ) -> Response:
        """A product's audience to any depth: the first `size` users (or `share` of every
        known user) of the ranking the stored lists come from, filtered. Give exactly one
        of size and share; JSON holds at most 10,000 rows (else 422: ask for CSV or
        Parquet); exclude_events names event types the model knows."""
        events = [t.strip() for t in (exclude_events or "").split(",") if t.strip()]
        request = SegmentRequest.model_construct(
            product_id=product_id,
            size=size,
            share=share,
            like=list(like_ids(like)),
            category=category,
            min_score=min_score,
            active_within_days=active_within_days,
            exclude_events=events,
            exclude_users=[],
            reasons=reasons,
            format=format,
            exclude_contacted_within_days=exclude_contacted_within_days,
            max_contacts=max_contacts,
            contact_window_days=contact_window_days,
        )
        return answer(request)

    @router.post("/segments", response_class=Response, responses=on_post)
    def post_segment(body: SegmentRequest) -> Response:
        """The same as GET, with `exclude_users` (at most 10,000 ids) in the body. Give
        exactly one of size and share; JSON holds at most 10,000 rows."""
        return answer(body)

    return router
