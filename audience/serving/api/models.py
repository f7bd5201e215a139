"""Request and response models: the typed contract the OpenAPI document publishes.

Hot endpoints return pre-encoded bytes and never instantiate these; they are declared
as `response_model` so the document is complete, and tests check that the bytes match.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from audience.serving.index import Strategy

#: Bounds of identifiers and free text in paths, queries and bodies.
MAX_ID = 128
MAX_LIKE = 20
MAX_QUERY = 100
MAX_LIMIT = 100

_EXAMPLE_MEMBER: dict[str, Any] = {
    "user_id": "U360293",
    "rank": 1,
    "score": 1.2365,
    "reasons": ["12 purchases in Electronics", "59 interactions"],
}


class Member(BaseModel):
    user_id: str
    rank: int = Field(description="1 = most worth contacting")
    score: float = Field(description="engagement with the product (higher is better)")
    reasons: list[str] = Field(description="the evidence behind the name, for a person")


class Recommendation(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "product_id": "P230920",
                    "strategy": "personalized",
                    "audience": [_EXAMPLE_MEMBER],
                    "model_version": "20261123T012206788074Z",
                    "notes": [],
                }
            ]
        }
    )
    product_id: str
    strategy: Strategy = Field(
        description="personalized: the product's own audience; lookalike: merged from the "
        "`like` products; category: its category's; cold_start: the most engaged overall"
    )
    audience: list[Member]
    model_version: str
    notes: list[str] = Field(description="anything ignored or assumed, in words")


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product_id: str = Field(min_length=1, max_length=MAX_ID)
    n: int | None = Field(default=None, ge=1, description="default: the stored N")
    like: list[str] = Field(default_factory=list, max_length=MAX_LIKE)
    category: str | None = Field(default=None, max_length=MAX_ID)


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"items": [{"product_id": "P230920", "n": 5}, {"product_id": "NEW-1"}]}]
        },
    )
    items: list[BatchItem] = Field(min_length=1, description="at most AUDIENCE_MAX_BATCH")


class BatchResponse(BaseModel):
    model_version: str
    results: list[Recommendation]


class UserScore(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "U199397",
                    "score": 0.785,
                    "rank": 1,
                    "users": 417300,
                    "components": {"interactions": 0.35, "recency": 0.047},
                    "features": {"interactions": 60, "days_since_last": 4.6},
                    "model_version": "20261123T012206788074Z",
                }
            ]
        }
    )
    user_id: str
    score: float = Field(description="engagement score: the sum of the components")
    rank: int = Field(description="1 = most engaged of all users")
    users: int = Field(description="users ranked")
    components: dict[str, float]
    features: dict[str, Any]
    model_version: str


class Product(BaseModel):
    product_id: str
    product_name: str | None
    category: str | None
    price: float | None
    interactions: int


class ProductSearch(BaseModel):
    query: str
    products: list[Product]


class ProductSample(BaseModel):
    product_ids: list[str]


class Health(BaseModel):
    status: Literal["alive"]


class Ready(BaseModel):
    status: Literal["ready", "not ready"]
    model_version: str | None
    created_at: str | None
    age_seconds: float | None
    loaded_at: str | None
    stored_n: int | None
    last_check: str | None
    reloads: int
    failed_reloads: int
    last_reload_error: dict[str, str] | None


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. invalid_parameter, unauthorized")
    message: str = Field(description="what went wrong and what to do, for a person")
    field: str | None = Field(default=None, description="the parameter or field at fault")


class ErrorBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "invalid_parameter",
                        "message": "n must be between 1 and 10 (the stored N), got 50",
                        "field": "n",
                    }
                }
            ]
        }
    )
    error: ErrorDetail
