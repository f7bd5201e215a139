"""Request and response models: the typed contract the OpenAPI document publishes.

Hot endpoints return pre-encoded bytes and never instantiate these; they are declared
as `response_model` so the document is complete, and tests check that the bytes match.

Request bodies are validated strictly, as their JSON Schema reads: a string is not a
number, `true` is not 1, and an unknown field is refused. Bounds that depend on the
served model or the settings (the stored N, the batch limit) are marked with `bound()`
and written into the document when it is served (openapi.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from audience.serving.index import Strategy

#: Bounds of identifiers and free text in paths, queries and bodies.
MAX_ID = 128
MAX_LIKE = 20
MAX_QUERY = 100
MAX_LIMIT = 100
#: The longest `like` query value: MAX_LIKE ids of MAX_ID characters and the commas between.
MAX_LIKE_TEXT = MAX_LIKE * MAX_ID + MAX_LIKE - 1
#: The `like` query value as the server reads it (ECMA-262, as OpenAPI patterns are).
LIKE_PATTERN = f"^[^,]{{0,{MAX_ID}}}(,[^,]{{0,{MAX_ID}}}){{0,{MAX_LIKE - 1}}}$"
#: A path segment: an id containing "/" cannot be addressed in the path (404).
SEGMENT_PATTERN = "^[^/]+$"
#: A string with a character str.strip() keeps (so not blank), in literal characters so
#: that every regex dialect (ECMA-262, Python, Rust) reads the class alike.
NOT_BLANK_PATTERN = "[^" + "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + "]"
#: Extension key of a bound the document fills in when served (see `bound`).
BOUND = "x-audience-bound"


def bound(**keywords: str | int) -> dict[str, Any]:
    """Schema extra: set each keyword (maximum, maxItems) to the serving bound of that name
    (`maximum="stored_n"`), or to a number, on the non-null branch of a nullable value."""
    return {BOUND: keywords}


def integral(value: object) -> object:
    """JSON Schema's integer includes 1.0; strict validation would refuse it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: Integer fields of a request body: an int, or a float without a fraction. Bounds come
#: before the validator, else pydantic writes them as `ge`, not `minimum`.
Size = Annotated[int, Field(ge=1), BeforeValidator(integral)]


class Body(BaseModel):
    """A request body: strict types, no unknown fields, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


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


class AudienceQuery(Body):
    """A product's audience as GET /recommend asks for it (batch items, /abtest/plan)."""

    product_id: str = Field(min_length=1, max_length=MAX_ID)
    n: Size | None = Field(
        default=None,
        description="audience size, 1 to the stored N (its maximum here); "
        "default 10, or N when fewer are stored",
        json_schema_extra=bound(maximum="stored_n"),
    )
    like: list[Annotated[str, Field(max_length=MAX_ID)]] = Field(
        default_factory=list, max_length=MAX_LIKE
    )
    category: str | None = Field(default=None, max_length=MAX_ID)


class BatchItem(AudienceQuery):
    """One product of a batch."""


class BatchRequest(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [{"product_id": "P230920", "n": 5}, {"product_id": "NEW-1"}]}]
        },
    )
    items: list[BatchItem] = Field(
        min_length=1,
        description="at most AUDIENCE_MAX_BATCH (its maxItems here)",
        json_schema_extra=bound(maxItems="max_batch"),
    )


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
    store: str | None = Field(description="the campaign store (URL without password)")
    optouts: int = Field(description="opted-out users in the snapshot being served")
    optouts_read_at: str | None = Field(description="when that snapshot was read")
    store_error: dict[str, str] | None = Field(
        description="the last failure to read the store; the older snapshot stays in force"
    )


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
