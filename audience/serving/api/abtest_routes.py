"""/abtest: thin wrappers over `audience.experiments.abtest` and `audience.experiments.campaign`.

The bodies give the statistics their types and the bounds each field has on its own, so
the OpenAPI document states them; checks that relate fields stay in the library, whose
`ConfigError` names the field and becomes a 422 (errors.py), and each body's description
names them. The result types are the library's own dataclasses, so the OpenAPI document
shows exactly what `to_dict()` returns. The handlers are plain functions: statsmodels and
scipy run in FastAPI's thread pool, never on the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, Field

from audience.errors import ConfigError
from audience.experiments import abtest, campaign
from audience.serving.api.errors import documented
from audience.serving.api.holder import IndexHolder
from audience.serving.api.models import (
    MAX_ID,
    NOT_BLANK_PATTERN,
    AudienceQuery,
    Body,
    integral,
)
from audience.serving.api.routes import JSON, check_n, serving

#: The statistics' domain. Rates and levels within [1e-9, 1 - 1e-9] and sizes up to a
#: trillion keep their arithmetic finite and in 64 bits; the exact Bayes closed form sums
#: one term per conversion, so its arms stop at a million. Beyond these the library's
#: numbers overflowed or went wrong (the contract test found it), so the schema says so.
LEAST = 1e-9
MAX_USERS = 10**12
MAX_BAYES = 10**6
MAX_WEIGHT = 1e6
MAX_MONEY = 1e12
Rate = Annotated[float, Field(ge=LEAST, le=1 - LEAST)]
Alpha = Annotated[float, Field(ge=LEAST, le=0.5, description="significance level")]
Power = Annotated[float, Field(ge=LEAST, le=1 - LEAST, description="above alpha")]
Lift = Annotated[
    float, Field(gt=-1, le=MAX_WEIGHT, description="relative (0.1 = +10%) unless relative=false")
]
Weight = Annotated[float, Field(ge=LEAST, le=MAX_WEIGHT)]
#: At least 1: below, a posterior's density is infinite at 0 or 1 and the library's
#: numerical integration answered wrongly (P = 1.0 for about 0.9) with warnings.
Prior = Annotated[float, Field(ge=1, le=MAX_WEIGHT, description="Beta prior pseudo-count")]
Money = Annotated[float, Field(ge=0, le=MAX_MONEY)]
Users = Annotated[int, Field(ge=0, le=MAX_USERS), BeforeValidator(integral)]
Exposed = Annotated[int, Field(ge=1, le=MAX_USERS), BeforeValidator(integral)]
Converted = Annotated[int, Field(ge=0, le=MAX_BAYES), BeforeValidator(integral)]


class Arm(Body):
    """One arm's users: conversions at most exposures."""

    conversions: Users = Field(description="at most exposures")
    exposures: Exposed


class BayesArm(Body):
    """One arm's users: conversions at most exposures."""

    conversions: Converted = Field(description="at most exposures")
    exposures: Exposed


class SizeRequest(Body):
    """The question follows from the fields given: `target` or `lift` (not both) asks for
    the users needed per arm, or with `n_control` the power; `n_control` alone asks for
    the minimum detectable effect. Also 422 (rules a schema cannot state): a target equal
    to the baseline, a lift whose treatment rate is outside (0, 1) or equals the baseline,
    power not above alpha, `n_control` x `ratio` rounding to 0 treatment users, or, for the
    minimum detectable effect, groups too small to detect even a 100% treatment rate."""

    baseline: Rate = Field(description="control conversion rate")
    target: Rate | None = Field(default=None, description="treatment rate to detect")
    lift: Lift | None = Field(default=None, description="or the lift to detect")
    relative: bool = Field(default=True, description="lift is relative (0.1 = +10%)")
    n_control: Exposed | None = Field(
        default=None, description="users available: gives power (with a lift) or the MDE"
    )
    ratio: Weight = Field(default=1.0, description="treatment users per control user")
    power: Power = 0.8
    alpha: Alpha = 0.05
    sides: abtest.Sides = "two-sided"
    method: abtest.PowerMethod = "pooled"


class TestRequest(Body):
    """Each arm's conversions at most its exposures (else 422); z-unpooled is undefined,
    a 422, for a control and a variant at opposite ends (0% and 100%)."""

    control: Arm
    variants: list[Arm] = Field(min_length=1, max_length=len(abtest.VARIANT_ARMS))
    alpha: Alpha = 0.05
    method: abtest.TestMethod = "z-pooled"
    interval: abtest.IntervalMethod = "newcombe"
    lift_interval: abtest.LiftMethod = "koopman"
    sides: abtest.Sides = "two-sided"


class SrmRequest(Body):
    """`shares`, when given, has one value per group in `observed` (else 422)."""

    observed: list[Users] = Field(
        min_length=2,
        max_length=100,
        description="users per group; at least one group has users",
        json_schema_extra={"contains": {"type": "integer", "minimum": 1}},
    )
    shares: list[Weight] | None = Field(
        default=None, max_length=100, description="planned split: a weight per group"
    )
    alpha: Alpha = 0.001


class BayesRequest(Body):
    """Each arm's conversions at most its exposures (else 422)."""

    control: BayesArm
    variant: BayesArm
    prior_alpha: Prior = 1.0
    prior_beta: Prior = 1.0


class PlanRequest(AudienceQuery):
    """Also 422 (rules a schema cannot state): a lift whose treatment rate is outside
    (0, 1) or equals the baseline, and power not above alpha."""

    experiment_id: str = Field(
        min_length=1,
        max_length=MAX_ID,
        description="not only spaces",
        json_schema_extra={"pattern": NOT_BLANK_PATTERN},
    )
    holdout_share: Rate = 0.1
    baseline: Rate
    lift: Lift
    relative: bool = True
    cost_per_contact: Money
    value_per_conversion: Money
    power: Power = 0.8
    alpha: Alpha = 0.05
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
    try:
        content = orjson.dumps(data)
    except orjson.JSONEncodeError:  # an integer past 64 bits: a vanishing lift's sample size
        content = json.dumps(data, allow_nan=False, separators=(",", ":")).encode()
    return Response(content, media_type=JSON)


def abtest_router(holder: IndexHolder, auth: Sequence[Depends]) -> APIRouter:
    """The A/B endpoints, behind the API key when keys are set."""
    router = APIRouter(prefix="/abtest", dependencies=list(auth), tags=["abtest"])
    errors = documented(400, *((401,) if auth else ()), 413, 422)

    @router.post(
        "/size",
        response_model=abtest.SampleSize | abtest.Power | abtest.DetectableEffect,
        responses=errors,
    )
    def size(body: SizeRequest) -> Response:
        """Users per arm to detect a lift; with n_control, the power (given a target or
        lift) or the minimum detectable effect (given neither)."""
        return _json(_size(body).to_dict())

    @router.post(
        "/test", response_model=abtest.Comparison | abtest.MultiComparison, responses=errors
    )
    def test(body: TestRequest) -> Response:
        """Is a variant's conversion rate different from control's (Holm over several)?"""
        options: dict[str, Any] = body.model_dump(exclude={"control", "variants"})
        control = (body.control.conversions, body.control.exposures)
        arms = [(v.conversions, v.exposures) for v in body.variants]
        if len(arms) == 1:
            return _json(abtest.compare(*control, *arms[0], **options).to_dict())
        return _json(abtest.compare_variants(control, arms, **options).to_dict())

    @router.post("/srm", response_model=abtest.SampleRatioCheck, responses=errors)
    def srm(body: SrmRequest) -> Response:
        """Sample-ratio-mismatch check: do the group sizes fit the planned split?"""
        check = abtest.sample_ratio_mismatch(body.observed, body.shares, alpha=body.alpha)
        return _json(check.to_dict())

    @router.post("/bayes", response_model=abtest.BayesComparison, responses=errors)
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

    @router.post("/plan", response_model=PlanResponse, responses=errors | documented(503))
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
