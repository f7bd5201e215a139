"""/campaigns: create, launch, list, export and read the report of campaigns; record
contacts. Each call is one function of `audience.serving.campaigns` on the store, in
FastAPI's thread pool. Reports are made from a log by `audience campaign report` or the
UI (the server reads no logs) and read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field

from audience.experiments.judge import Scope
from audience.serving import campaigns
from audience.serving.api.errors import ApiError, documented
from audience.serving.api.holder import IndexHolder
from audience.serving.api.models import MAX_ID, Body
from audience.serving.api.routes import JSON, SEGMENT, serving
from audience.serving.api.segment_routes import (
    MAX_JSON_ROWS,
    MEDIA,
    Format,
    SegmentQuery,
    stream,
)
from audience.serving.segment import size_of
from audience.settings import Settings
from audience.store.store import Store, epoch

#: The most contacts one POST /campaigns/{id}/contacts records.
MAX_CONTACTS = 10_000
Arm = Literal["treatment", "holdout", "all"]


#: An ISO-8601 time in a JSON body (strict bodies take no other strings).
Time = Annotated[datetime, Field(strict=False)]
LIST_FORMATS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {MEDIA["csv"]: {}, MEDIA["parquet"]: {}, JSON: {}},
        "description": "user_id, arm, rank, score as CSV (default), Parquet or JSON",
    }
}


class CampaignRequest(SegmentQuery):
    name: str = Field(min_length=1, max_length=campaigns.MAX_NAME, pattern=campaigns.NAME_PATTERN)
    holdout: float = Field(gt=0, lt=1, description="share of the segment held out")
    conversion: str = Field(default="purchased", min_length=1, max_length=MAX_ID)
    scope: Scope = "product"
    window_days: float = Field(default=14.0, gt=0, le=3650)
    cost_per_contact: float = Field(default=0.0, ge=0)
    value_per_conversion: float = Field(default=0.0, ge=0)
    channel: str = Field(default=campaigns.DEFAULT_CHANNEL, min_length=1, max_length=MAX_ID)


class LaunchRequest(Body):
    at: Time | None = Field(
        default=None, description="when it launched elsewhere (ISO-8601); omitted: now"
    )


class Contact(Body):
    user_id: str = Field(min_length=1, max_length=MAX_ID)
    at: Time
    channel: str | None = Field(
        default=None, min_length=1, max_length=MAX_ID, description="omitted: the campaign's"
    )


class ContactBatch(Body):
    contacts: list[Contact] = Field(min_length=1, max_length=MAX_CONTACTS)


class ContactsRecorded(BaseModel):
    recorded: int = Field(description="contacts new to the store")
    duplicates: int = Field(description="contacts it already had (a retried batch)")


class CampaignList(BaseModel):
    campaigns: list[dict[str, Any]]


def campaign_router(holder: IndexHolder, settings: Settings, auth: Sequence[Depends]) -> APIRouter:
    router = APIRouter(tags=["campaigns"], dependencies=list(auth))
    keyed = (401,) if auth else ()
    unknown = "no such campaign (`not_found`), or an id containing '/'"

    def store() -> Store:
        assert holder.store is not None
        return holder.store

    @router.post(
        "/campaigns",
        status_code=201,
        response_model=dict[str, Any],
        responses=documented(
            400, *keyed, 409, 413, 422, 503, _409="no user qualifies now (`conflict`)"
        ),
    )
    def create(body: CampaignRequest) -> dict[str, Any]:
        """Freeze the product's segment (as /segments ranks and filters it), split it into
        treatment and a hashed holdout, check the split, and store the campaign."""
        index = serving(holder).index
        plan = campaigns.Plan(
            name=body.name,
            holdout_share=body.holdout,
            conversion=body.conversion,
            scope=body.scope,
            window_days=body.window_days,
            cost_per_contact=body.cost_per_contact,
            value_per_conversion=body.value_per_conversion,
            channel=body.channel,
            like=tuple(dict.fromkeys(body.like)),
            category=body.category,
            extra={
                "min_score": body.min_score,
                "active_within_days": body.active_within_days,
                "exclude_events": body.exclude_events,
                "exclude_users": len(body.exclude_users),
            },
        )
        k = size_of(index, body.size, body.share)
        made = campaigns.create(
            index,
            store(),
            settings,
            body.product_id,
            k,
            plan,
            body.plain_filters(),
            body.rules(settings),
        )
        return made.as_dict()

    @router.get("/campaigns", response_model=CampaignList, responses=documented(*keyed, 503))
    def listing() -> dict[str, Any]:
        """Every campaign, newest first, with its state and result."""
        return {"campaigns": [c.as_dict() for c in store().campaigns()]}

    @router.get(
        "/campaigns/{campaign_id}",
        response_model=dict[str, Any],
        responses=documented(*keyed, 404, 422, 503, _404=unknown),
    )
    def show(campaign_id: Annotated[str, Path(**SEGMENT)]) -> dict[str, Any]:
        return store().campaign(campaign_id).as_dict()

    @router.post(
        "/campaigns/{campaign_id}/launch",
        response_model=dict[str, Any],
        responses=documented(400, *keyed, 404, 409, 413, 422, 503, _404=unknown),
    )
    def launch(
        campaign_id: Annotated[str, Path(**SEGMENT)], body: LaunchRequest | None = None
    ) -> dict[str, Any]:
        """Record the launch (now, or `at`) and the treatment arm as contacted, in one
        transaction; a campaign is launched once (409 the second time)."""
        at = None if body is None else body.at
        return campaigns.launch(store(), campaign_id, at).as_dict()

    @router.get(
        "/campaigns/{campaign_id}/assignments",
        response_class=Response,
        responses=LIST_FORMATS | documented(*keyed, 404, 422, 503, _404=unknown),
    )
    def export(
        campaign_id: Annotated[str, Path(**SEGMENT)],
        arm: Arm = "treatment",
        format: Format = "csv",
    ) -> Response:
        """The list to send: user_id, arm, rank, score. CSV and Parquet are streamed;
        JSON holds at most 10,000 rows."""
        rows = campaigns.assignments(store(), campaign_id, None if arm == "all" else arm)
        if format == "json":
            if rows.height > MAX_JSON_ROWS:
                raise ApiError(
                    422,
                    "invalid_parameter",
                    f"JSON holds at most {MAX_JSON_ROWS:,} rows, this list has {rows.height:,}: "
                    "ask for format=csv or format=parquet",
                    "format",
                )
            body = {"campaign_id": campaign_id, "arm": arm, "assignments": rows.to_dicts()}
            return Response(orjson.dumps(body), media_type=JSON)
        headers = {"Content-Disposition": f'attachment; filename="{campaign_id}-{arm}.{format}"'}
        return stream(rows, format, headers)

    @router.get(
        "/campaigns/{campaign_id}/report",
        response_model=dict[str, Any],
        responses=documented(*keyed, 404, 409, 422, 503, _404=unknown),
    )
    def report(campaign_id: Annotated[str, Path(**SEGMENT)]) -> dict[str, Any]:
        """The campaign's last report (made from a log by `audience campaign report` or
        the UI); 409 when there is none yet."""
        found = store().campaign(campaign_id)
        if found.report is None:
            raise ApiError(
                409,
                "no_report",
                f"{campaign_id} has no report yet: run `audience campaign report "
                f"{campaign_id} --log LOG` (state: {found.state})",
                "campaign_id",
            )
        return found.report

    @router.post(
        "/campaigns/{campaign_id}/contacts",
        response_model=ContactsRecorded,
        responses=documented(400, *keyed, 404, 413, 422, 503, _404=unknown),
    )
    def contacts(
        campaign_id: Annotated[str, Path(**SEGMENT)], body: ContactBatch
    ) -> dict[str, Any]:
        """Record contacts a campaign system made (at most 10,000 per call). A contact is
        (campaign, user, channel, time): a retried batch records nothing twice."""
        spec = store().campaign(campaign_id).spec
        channel = str(spec.get("channel", campaigns.DEFAULT_CHANNEL))
        batch = [(c.user_id, epoch(c.at), c.channel or channel) for c in body.contacts]
        recorded = store().record_contacts(campaign_id, batch)
        return {"recorded": recorded, "duplicates": len(batch) - recorded}

    return router
