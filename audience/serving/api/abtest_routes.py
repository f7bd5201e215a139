"""/abtest: thin wrappers over `audience.experiments.abtest` and `audience.experiments.campaign`.

The bodies only give the statistics their types and bounds; every check of meaning stays
in the library, whose `ConfigError` names the field and becomes a 422 (errors.py). The
result types are the library's own dataclasses, so the OpenAPI document shows exactly
what `to_dict()` returns. The handlers are plain functions: statsmodels and scipy run in
FastAPI's thread pool, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from audience.errors import ConfigError
from audience.experiments import abtest, campaign
from audience.serving.api.holder import IndexHolder
from audience.serving.api.models import MAX_ID, MAX_LIKE, ErrorBody
from audience.serving.api.routes import JSON, check_n, serving

_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorBody} for c in (401, 422)}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm(_Body):
    conversions: int = Field(ge=0)
    exposures: int = Field(ge=1)


class SizeRequest(_Body):
    baseline: float = Field(description="control conversion rate")
    target: float | None = Field(default=None, description="treatment rate to detect")
    lift: float | None = Field(default=None, description="or the lift to detect")
    relative: bool = Field(default=True, description="lift is relative (0.1 = +10%)")
    n_control: int | None = Field(
        default=None, description="users available: gives power (with a lift) or the MDE"
    )
    ratio: float = Field(default=1.0, description="treatment users per control user")
    power: float = 0.8
    alpha: float = 0.05
    sides: abtest.Sides = "two-sided"
    method: abtest.PowerMethod = "pooled"


class TestRequest(_Body):
    control: Arm
    variants: list[Arm] = Field(min_length=1, max_length=len(abtest.VARIANT_ARMS))
    alpha: float = 0.05
    method: abtest.TestMethod = "z-pooled"
    interval: abtest.IntervalMethod = "newcombe"
    lift_interval: abtest.LiftMethod = "koopman"
    sides: abtest.Sides = "two-sided"


class SrmRequest(_Body):
    observed: list[int] = Field(min_length=2, max_length=100, description="users per group")
    shares: list[float] | None = Field(default=None, max_length=100, description="planned split")
    alpha: float = 0.001


class BayesRequest(_Body):
    control: Arm
    variant: Arm
    prior_alpha: float = 1.0
    prior_beta: float = 1.0


class PlanRequest(_Body):
    product_id: str = Field(min_length=1, max_length=MAX_ID)
    n: int | None = Field(default=None, description="audience size (default: the stored N)")
    like: list[str] = Field(default_factory=list, max_length=MAX_LIKE)
    category: str | None = Field(default=None, max_length=MAX_ID)
    experiment_id: str = Field(min_length=1, max_length=MAX_ID)
    holdout_share: float = 0.1
    baseline: float
    lift: float
    relative: bool = True
    cost_per_contact: float
    value_per_conversion: float
    power: float = 0.8
    alpha: float = 0.05
    sides: abtest.Sides = "two-sided"


class Assignment(BaseModel):
    user_id: str
    group: str
    rank: int


class PlanResponse(BaseModel):
    product_id: str
    strategy: str
    model_version: str
    plan: campaign.CampaignPlan
    groups: list[Assignment]


def _json(data: dict[str, Any]) -> Response:
    return Response(orjson.dumps(data), media_type=JSON)


def abtest_router(holder: IndexHolder, auth: Sequence[Depends]) -> APIRouter:
    """The A/B endpoints, behind the API key when keys are set."""
    router = APIRouter(prefix="/abtest", dependencies=list(auth), tags=["abtest"])

    @router.post(
        "/size",
        response_model=abtest.SampleSize | abtest.Power | abtest.DetectableEffect,
        responses=_ERRORS,
    )
    def size(body: SizeRequest) -> Response:
        """Users per arm to detect a lift; with n_control, the power (given a target or
        lift) or the minimum detectable effect (given neither)."""
        return _json(_size(body).to_dict())

    @router.post(
        "/test", response_model=abtest.Comparison | abtest.MultiComparison, responses=_ERRORS
    )
    def test(body: TestRequest) -> Response:
        """Is a variant's conversion rate different from control's (Holm over several)?"""
        options: dict[str, Any] = body.model_dump(exclude={"control", "variants"})
        control = (body.control.conversions, body.control.exposures)
        arms = [(v.conversions, v.exposures) for v in body.variants]
        if len(arms) == 1:
            return _json(abtest.compare(*control, *arms[0], **options).to_dict())
        return _json(abtest.compare_variants(control, arms, **options).to_dict())

    @router.post("/srm", response_model=abtest.SampleRatioCheck, responses=_ERRORS)
    def srm(body: SrmRequest) -> Response:
        """Sample-ratio-mismatch check: do the group sizes fit the planned split?"""
        check = abtest.sample_ratio_mismatch(body.observed, body.shares, alpha=body.alpha)
        return _json(check.to_dict())

    @router.post("/bayes", response_model=abtest.BayesComparison, responses=_ERRORS)
    def bayes(body: BayesRequest) -> Response:
        """Posterior probability that the variant converts better than control."""
        result = abtest.bayes_compare(
            body.control.conversions,
            body.control.exposures,
            body.variant.conversions,
            body.variant.exposures,
            prior_alpha=body.prior_alpha,
            prior_beta=body.prior_beta,
        )
        return _json(result.to_dict())

    @router.post("/plan", response_model=PlanResponse, responses=_ERRORS)
    def plan(body: PlanRequest) -> Response:
        """Draw the product's audience from the model, split it into treatment and a
        hashed holdout, and price the campaign."""
        index = serving(holder).index
        n = check_n(body.n, index.n)
        answer = index.recommend(body.product_id, n, tuple(body.like), body.category)
        result, groups = campaign.plan_campaign(
            [m.user_id for m in answer.audience],
            body.experiment_id,
            holdout_share=body.holdout_share,
            baseline_rate=body.baseline,
            lift=body.lift,
            relative_lift=body.relative,
            cost_per_contact=body.cost_per_contact,
            value_per_conversion=body.value_per_conversion,
            alpha=body.alpha,
            power=body.power,
            sides=body.sides,
        )
        return _json(
            {
                "product_id": answer.product_id,
                "strategy": answer.strategy,
                "model_version": answer.model_version,
                "plan": result.to_dict(),
                "groups": groups.to_dicts(),
            }
        )

    return router


def _size(body: SizeRequest) -> abtest.SampleSize | abtest.Power | abtest.DetectableEffect:
    """As `audience abtest size`: the question asked is told by which fields are given."""
    if body.target is not None and body.lift is not None:
        raise ConfigError("lift", "give target or lift, not both")
    target = body.target
    if target is None and body.lift is not None:
        target = abtest.target_rate(body.baseline, body.lift, relative=body.relative)
    common: dict[str, Any] = {"alpha": body.alpha, "sides": body.sides, "method": body.method}
    if body.n_control is None:
        if target is None:
            raise ConfigError("target", "give target or lift (or n_control for the MDE)")
        return abtest.sample_size(
            body.baseline, target, power=body.power, ratio=body.ratio, **common
        )
    if not body.ratio > 0:
        raise ConfigError("ratio", f"must be > 0, got {body.ratio:g}")
    n_treatment = round(body.n_control * body.ratio)
    if target is None:
        return abtest.minimum_detectable_effect(
            body.baseline, body.n_control, n_treatment, power=body.power, **common
        )
    return abtest.achieved_power(body.baseline, target, body.n_control, n_treatment, **common)
