"""/segments: a product's audience at any depth, filtered, as JSON, CSV or Parquet.

`GET /segments/{product_id}` and `POST /segments` (the same, plus an `exclude_users`
list) rank on demand from the served model (`audience.serving.segment`), in FastAPI's
thread pool: the ranking releases the GIL, and /recommend's hot path is not touched.
CSV and Parquet are sent in chunks; JSON is limited to MAX_JSON_ROWS rows, which a
campaign system reads comfortably in one document.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator, Sequence
from typing import Annotated, Literal

import orjson
import polars as pl
from fastapi import APIRouter, Path, Query
from fastapi.params import Depends
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, Field

from audience.data.schema import PRODUCT
from audience.serving.api.errors import ApiError, documented
from audience.serving.api.holder import IndexHolder
from audience.serving.api.models import (
    LIKE_PATTERN,
    MAX_ID,
    MAX_LIKE,
    MAX_LIKE_TEXT,
    Body,
    Member,
    Size,
    integral,
)
from audience.serving.api.routes import JSON, SEGMENT, like_ids, serving
from audience.serving.index import Strategy
from audience.serving.segment import Filters, Segment, segment, size_of
from audience.settings import Settings
from audience.store.store import Fatigue, Store

#: The most rows a JSON answer holds; CSV and Parquet have no such limit.
MAX_JSON_ROWS = 10_000
#: The most user ids `POST /segments` takes to leave out.
MAX_EXCLUDED = 10_000
#: Bounds of the contact rules: a century of history, a million contacts.
MAX_DAYS = 36_500
MAX_CONTACT_COUNT = 1_000_000
ContactCount = Annotated[int, Field(ge=0, le=MAX_CONTACT_COUNT), BeforeValidator(integral)]
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


class SegmentQuery(Body):
    """Which users: a product's segment, its size and filters (segments and campaigns)."""

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
    exclude_contacted_within_days: float | None = Field(
        default=None, ge=0, le=MAX_DAYS, description="leave out users contacted in the last D days"
    )
    max_contacts: ContactCount | None = Field(
        default=None,
        description="contact policy: leave out users with this many contacts in the last "
        "`contact_window_days` (default AUDIENCE_MAX_CONTACTS; 0 = no policy)",
    )
    contact_window_days: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DAYS,
        description="the policy's window (default AUDIENCE_CONTACT_WINDOW_DAYS)",
    )

    def filters(self, settings: Settings, store: Store) -> Filters:
        """The filters asked for, with the users the contact rules leave out."""
        return dataclasses.replace(
            self.plain_filters(), fatigued=store.fatigued(self.rules(settings))
        )

    def plain_filters(self) -> Filters:
        """The filters asked for, without the contact rules (`rules`)."""
        return Filters(
            self.min_score,
            self.active_within_days,
            tuple(self.exclude_events),
            frozenset(self.exclude_users),
        )

    def rules(self, settings: Settings) -> Fatigue:
        """The contact rules asked for, over the settings' default policy."""
        return Fatigue.of(
            settings,
            self.exclude_contacted_within_days,
            self.max_contacts,
            self.contact_window_days,
        )


class SegmentRequest(SegmentQuery):
    reasons: bool = False
    format: Format = "json"


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
    if fmt == "csv" and reasons:
        table = table.with_columns(pl.col("reasons").list.join("; "))
    return stream(table, fmt, headers)


def stream(table: pl.DataFrame, fmt: Format, headers: dict[str, str]) -> Response:
    """A table as CSV or Parquet, sent in chunks (CSV of one chunk at once)."""
    if fmt == "csv":
        chunks = _csv(table)
        if table.height <= CHUNK_ROWS:  # one chunk: sent whole
            return Response(next(chunks), media_type=MEDIA["csv"], headers=headers)
        return StreamingResponse(chunks, media_type=MEDIA["csv"], headers=headers)
    buffer = io.BytesIO()
    table.write_parquet(buffer)
    return StreamingResponse(
        _chunks(buffer.getvalue()), media_type=MEDIA["parquet"], headers=headers
    )


def _csv(table: pl.DataFrame) -> Iterator[bytes]:
    for at in range(0, max(table.height, 1), CHUNK_ROWS):
        buffer = io.BytesIO()
        table.slice(at, CHUNK_ROWS).write_csv(buffer, include_header=at == 0)
        yield buffer.getvalue()


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
        assert holder.store is not None
        filters = request.filters(settings, holder.store)
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
        exclude_contacted_within_days: Annotated[float | None, Query(ge=0, le=MAX_DAYS)] = None,
        max_contacts: Annotated[int | None, Query(ge=0, le=MAX_CONTACT_COUNT)] = None,
        contact_window_days: Annotated[float | None, Query(gt=0, le=MAX_DAYS)] = None,
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
