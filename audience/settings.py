"""The one configuration object, read from `AUDIENCE_*` environment variables.

Built lazily by whoever needs it (`Settings()`) and passed down; nothing reads the
environment at import time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from audience.schema import DEFAULT_EVENT_WEIGHTS


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
