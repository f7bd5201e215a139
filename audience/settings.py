"""The one configuration object, read from `AUDIENCE_*` environment variables.

Built lazily by whoever needs it (`Settings()`) and passed down; nothing reads the
environment at import time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from audience.data.schema import DEFAULT_EVENT_WEIGHTS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIENCE_", frozen=True)

    #: Engagement weight per event type. The vocabulary of accepted event types is
    #: exactly these keys. A value given here (e.g.
    #: `AUDIENCE_EVENT_WEIGHTS='{"view": 0.5}'`) is merged over the defaults, so
    #: declaring an extra type does not drop the standard ones.
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))

    #: Ingest fails when more than this share of rows is rejected.
    max_reject_share: float = Field(default=0.01, ge=0.0, le=1.0)

    #: Events before this are rejected as out of range (epoch-0 placeholders, typos).
    earliest_event_time: datetime = datetime(2000, 1, 1, tzinfo=UTC)

    #: Events later than ingest time plus this are rejected as out of range.
    future_tolerance: timedelta = timedelta(days=1)

    # --- the service (`audience serve`, audience.serving.api) ---------------------------------

    #: Keys accepted in the X-API-Key header by /recommend, /users and /abtest
    #: (`AUDIENCE_API_KEYS=key1,key2`). Empty: those endpoints are open (demo mode),
    #: which the server announces loudly at start-up.
    api_keys: Annotated[frozenset[str], NoDecode] = frozenset()

    #: Artifact root the service serves (`audience train --out`); the CLI passes an
    #: absolute path.
    artifact: Path = Path("artifacts")

    #: Analysis and backtest results the merchant UI shows (`audience analyze/evaluate --out`).
    results: Path = Path("results")

    #: How often the service checks `ARTIFACT/current` for a new version; 0 = never
    #: (SIGHUP still triggers a check).
    reload_seconds: float = Field(default=5.0, ge=0.0)

    #: Browser origins allowed to call the API (`AUDIENCE_CORS_ORIGINS=https://a,https://b`);
    #: empty = no CORS headers. Never "*": keys travel in a header, origins are listed.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    #: Most products in one POST /recommend/batch.
    max_batch: int = Field(default=100, ge=1, le=10_000)

    #: Largest request body accepted, in bytes.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    #: Share of successful, fast requests written to the access log; errors and slow
    #: requests are always logged. Below 1 keeps logging off the hot path at high rates.
    access_log_sample: float = Field(default=1.0, ge=0.0, le=1.0)

    #: Level of the service's JSON logs (debug, info, warning, error).
    log_level: str = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: object) -> object:
        return _split(value)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        origins = _split(value)
        if isinstance(origins, list | tuple | set | frozenset) and "*" in origins:
            raise ValueError("'*' is not allowed: list the origins that may call the API")
        return origins

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError(f"must be debug, info, warning, error or critical; got {value!r}")
        return level

    @field_validator("event_weights")
    @classmethod
    def _merge_weights(cls, value: dict[str, float]) -> dict[str, float]:
        merged = DEFAULT_EVENT_WEIGHTS | {k.strip().lower(): v for k, v in value.items()}
        bad = {k: v for k, v in merged.items() if not k or v < 0}
        if bad:
            raise ValueError(f"event weights need a non-empty name and a weight >= 0: {bad}")
        return merged

    @field_validator("earliest_event_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self.event_weights)


def _split(value: object) -> object:
    """A comma-separated environment string as a list of its non-empty, stripped parts."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
