"""API keys: which requests may call the campaign endpoints (X-API-Key header)."""

from __future__ import annotations

import hmac

from fastapi import Security
from fastapi.params import Depends
from fastapi.security import APIKeyHeader

from audience.serving.api.errors import ApiError

HEADER = "X-API-Key"


class ApiKeys:
    """The keys the operator issued; none at all means open (demo) mode."""

    def __init__(self, keys: frozenset[str]) -> None:
        self._encoded = [key.encode() for key in sorted(keys)]

    def __bool__(self) -> bool:
        return bool(self._encoded)

    def accepts(self, given: bytes | None) -> bool:
        """Whether the header's raw bytes are one of the keys."""
        if given is None:
            return False
        # compare_digest against every key: the time taken does not reveal which matched.
        return any([hmac.compare_digest(given, key) for key in self._encoded])

    def dependencies(self) -> list[Depends]:
        """The FastAPI dependency that guards campaign endpoints; none in open mode."""
        if not self:
            return []
        header = APIKeyHeader(
            name=HEADER, auto_error=False, description="a key the operator issued"
        )

        # A default, not Annotated: the annotation would name a local, which FastAPI
        # cannot resolve under `from __future__ import annotations`.
        async def require_key(key: str | None = Security(header)) -> None:
            if not self.accepts(None if key is None else key.encode("latin-1")):
                message = (
                    f"missing {HEADER} header" if key is None else f"{HEADER} is not a valid key"
                )
                raise ApiError(401, "unauthorized", message + ": ask the operator for one")

        return [Security(require_key)]
