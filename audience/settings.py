"""The one configuration object, read from `AUDIENCE_*` environment variables.

Built lazily by whoever needs it (`Settings()`) and passed down; nothing reads the
environment at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from audience.data.schema import DEFAULT_EVENT_WEIGHTS
from audience.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIENCE_", frozen=True)

    #: Engagement weight per event type. The vocabulary of accepted event types is
    #: exactly these keys. A value given here (e.g.
    #: `AUDIENCE_EVENT_WEIGHTS='{"view": 0.5}'`) is merged over the defaults, so
    #: declaring an extra type does not drop the standard ones.
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))

    #: Ingest fails when more than this share of rows is rejected.
    max_reject_share: float = Field(default=0.01, ge=0.0, le=1.0)

    #: Events before this are rejected (`--earliest-time`). Logs of any era are valid, so
    #: the default only keeps out what cannot be a real event time: before Unix time
    #: began. The placeholders exports write for "unknown" (1970-01-01T00:00:00,
    #: 1900-01-01, 9999-12-31) are rejected whatever this is (audience.data.times).
    earliest_event_time: datetime = datetime(1970, 1, 1, tzinfo=UTC)

    #: Events later than the run's clock plus this are rejected (`--future-tolerance`):
    #: an ISO-8601 duration (`P2D`, `PT36H`), `2d`, `36:00:00` or a number of seconds.
    future_tolerance: timedelta = Field(default=timedelta(days=1), ge=timedelta(0))

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
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)

    #: Share of successful, fast requests written to the access log; errors and slow
    #: requests are always logged. Below 1 keeps logging off the hot path at high rates.
    access_log_sample: float = Field(default=1.0, ge=0.0, le=1.0)

    # --- the campaign store (audience.store) -------------------------------------------------

    #: Where opt-outs, contacts and campaigns are kept: `postgresql://user@host:port/db` for
    #: several machines, `sqlite:///path.db`, or unset: SQLite in ARTIFACT/audience.db.
    database_url: str | None = None

    #: The default contact policy of segments and campaigns (overridable per request):
    #: leave out users who already had `max_contacts` contacts in the last
    #: `contact_window_days` days. 0 switches the policy off.
    max_contacts: int = Field(default=2, ge=0)
    contact_window_days: float = Field(default=7.0, gt=0)

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

    @field_validator("earliest_event_time", mode="before")
    @classmethod
    def _no_bare_number(cls, value: object) -> object:
        # Pydantic reads "1995" as 1995 seconds after the epoch; nobody means that here.
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            raise ValueError("expected a date or an ISO-8601 time such as 1995-01-01")
        return value

    @field_validator("earliest_event_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    @field_validator("future_tolerance", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        # An environment variable is text, and Pydantic reads a number of seconds only as a number.
        if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return value

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self.event_weights)


def configured(overrides: Mapping[str, tuple[str, object]]) -> Settings:
    """The settings with command-line values over the environment's: flag beats environment
    beats default. `overrides` maps a field to (its flag, the value given or None).

    A value that does not validate is a ConfigError naming the flag, or the environment
    variable it came from.
    """
    given = {field: value for field, (_, value) in overrides.items() if value is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        parameter = overrides[field][0] if field in given else f"AUDIENCE_{field.upper()}"
        got = error["input"]
        message = str(error["msg"]).removeprefix("Value error, ")
        shown = repr(got) if isinstance(got, str) else str(got)
        raise ConfigError(parameter, f"{message}; got {shown}") from None


def _split(value: object) -> object:
    """A comma-separated environment string as a list of its non-empty, stripped parts."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
