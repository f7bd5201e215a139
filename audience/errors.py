"""The one error hierarchy of `audience`.

Every failure a user can cause is an `AudienceError` that carries its context, so
the CLI can print one actionable line and the API can map it to an HTTP status in
one place::

    AudienceError
    ├── ConfigError            a parameter or setting is invalid (names it)
    ├── InputError             an input file cannot be read as an event log (names the file)
    │   ├── MissingColumnError     a required column is absent (lists the columns found)
    │   └── RejectLimitError       too many rows were rejected (carries the summary)
    ├── ArtifactError          a trained artifact is missing, incomplete or tampered with
    ├── NotFoundError          a named record (a campaign) does not exist (names it)
    ├── StateError             a record is not in the state the action needs (launched twice)
    └── StoreError       the campaign store cannot be reached or is busy: retry
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class AudienceError(Exception):
    """Base of every error `audience` raises on purpose."""


class ConfigError(AudienceError):
    """A parameter or setting has a value we cannot use."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class InputError(AudienceError):
    """An input cannot be read as an event log."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class MissingColumnError(InputError):
    def __init__(self, path: Path | str, column: str, role: str, found: list[str]) -> None:
        self.column = column
        self.found = found
        super().__init__(
            path,
            f"required {role} column '{column}' is missing; columns found: {', '.join(found)}"
            " (map yours with --columns user=...,product=...,event=...,time=...)",
        )


class RejectLimitError(InputError):
    def __init__(self, path: Path | str, summary: dict[str, Any], detail: str) -> None:
        self.summary = summary
        super().__init__(path, detail)


class ArtifactError(AudienceError):
    """A trained artifact cannot be used: it is missing, incomplete or does not match."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class NotFoundError(AudienceError):
    """A record the caller named (a campaign) does not exist."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class StateError(AudienceError):
    """A record is not in the state an action needs: a campaign launched twice, or
    reported before its launch."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class StoreError(AudienceError):
    """The campaign store cannot be reached, or stayed locked past the timeout."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"store {where}: {message}")
