"""/optouts: users who must never be named, kept in the store.

A write goes to the store in one transaction, then this worker serves the new snapshot
at once; the other workers and machines read it on their next poll (within
AUDIENCE_RELOAD_SECONDS). Keyed like the campaign endpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.params import Depends
from pydantic import BaseModel, Field

from audience.serving.api.errors import documented
from audience.serving.api.holder import IndexHolder
from audience.serving.api.models import MAX_ID, Body
from audience.serving.api.routes import SEGMENT
from audience.store.store import Store

#: The most user ids one POST /optouts takes.
MAX_OPTOUTS = 10_000


class OptoutRequest(Body):
    user_ids: list[Annotated[str, Field(min_length=1, max_length=MAX_ID)]] = Field(
        min_length=1, max_length=MAX_OPTOUTS
    )
    reason: str | None = Field(default=None, max_length=200)


class OptoutChange(BaseModel):
    changed: int = Field(description="users whose opt-out this call added or removed")
    opted_out: int = Field(description="opted-out users now, in the store")


class Optout(BaseModel):
    user_id: str
    at: str
    reason: str | None


class OptoutList(BaseModel):
    opted_out: int
    optouts: list[Optout]


def optout_router(holder: IndexHolder, store: Store, auth: Sequence[Depends]) -> APIRouter:
    router = APIRouter(tags=["opt-outs"], dependencies=list(auth))
    keyed = (401,) if auth else ()

    def changed(count: int) -> dict[str, Any]:
        holder.sync_optouts()
        return {"changed": count, "opted_out": len(holder.optouts)}

    @router.post(
        "/optouts", response_model=OptoutChange, responses=documented(400, *keyed, 413, 422, 503)
    )
    def add(body: OptoutRequest) -> dict[str, Any]:
        """Opt users out (at most 10,000 per call): from now on no answer names them."""
        return changed(store.add_optouts(body.user_ids, body.reason))

    @router.delete(
        "/optouts/{user_id}",
        response_model=OptoutChange,
        responses=documented(*keyed, 404, 422, 503),
    )
    def remove(user_id: Annotated[str, Path(**SEGMENT)]) -> dict[str, Any]:
        """Take a user's opt-out back (`changed` is 0 when there was none)."""
        return changed(store.remove_optouts([user_id]))

    @router.get("/optouts", response_model=OptoutList, responses=documented(*keyed, 422, 503))
    def listing(limit: Annotated[int, Query(ge=1, le=MAX_OPTOUTS)] = 100) -> dict[str, Any]:
        """The newest opt-outs, and how many there are."""
        rows = store.optout_rows(limit)
        return {"opted_out": len(store.optouts()), "optouts": rows}

    return router
