"""Where the store lives, and one transaction at a time against it.

Two engines behind one small interface, chosen by URL (`AUDIENCE_DATABASE_URL`):

- SQLite (default, `sqlite:///path`): a file beside the artifacts, no server. WAL mode
  lets readers run while one writer writes, and every write transaction starts with
  `BEGIN IMMEDIATE`, so several `audience serve` workers and the CLI queue for the
  write lock (up to `busy_seconds`) instead of failing or losing a write. DuckDB was
  not chosen: it allows one writing process per file.
- PostgreSQL (`postgresql://...`), for several machines.

Statements are written once, with `?` placeholders, in the SQL both engines speak
(`INSERT ... ON CONFLICT`, `DOUBLE PRECISION`). A connection is opened per transaction:
writes are rare next to reads of the served model, and a store that went away and came
back is used again without anyone noticing. Every failure to reach the store, or a lock
held past the timeout, is a `StoreError` (HTTP 503, CLI exit 2).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from audience.errors import ConfigError, StoreError

Row = tuple[Any, ...]
Kind = Literal["sqlite", "postgresql"]
#: The file of the default store, in the artifact root.
DEFAULT_FILE = "audience.db"


class Tx(Protocol):
    """One open transaction."""

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Execute one statement; its rows (empty for a write)."""
        ...

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one write; how many rows it changed."""
        ...

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Execute one statement per row."""
        ...


class Engine(Protocol):
    kind: Kind
    #: The URL without its password, for messages and /ready.
    shown: str

    def transaction(self, write: bool) -> contextlib.AbstractContextManager[Tx]:
        """A transaction, committed on leaving, rolled back on an exception."""
        ...

    def lock_schema(self, tx: Tx) -> None:
        """Serialise schema migrations between processes (inside a write transaction)."""
        ...


class _Cursor:
    """A DB-API cursor as a `Tx`; `marker` is the engine's placeholder."""

    def __init__(self, cursor: Any, marker: str) -> None:
        self.cursor, self.marker = cursor, marker

    def _sql(self, sql: str) -> str:
        return sql if self.marker == "?" else sql.replace("?", self.marker)

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.cursor.execute(self._sql(sql), tuple(params))
        return list(self.cursor.fetchall()) if self.cursor.description else []

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.cursor.execute(self._sql(sql), tuple(params))
        return int(self.cursor.rowcount)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.cursor.executemany(self._sql(sql), [tuple(r) for r in rows])


class Sqlite:
    kind: Kind = "sqlite"

    def __init__(self, path: Path, busy_seconds: float = 30.0) -> None:
        self.path = path
        self.shown = f"sqlite:///{path}"
        self.busy_seconds = busy_seconds

    @contextlib.contextmanager
    def transaction(self, write: bool) -> Iterator[Tx]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=self.busy_seconds, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(self.shown, str(exc)) from None
        try:
            cursor = connection.cursor()
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.OperationalError as exc:
                raise StoreError(self.shown, str(exc)) from None
            try:
                yield _Cursor(cursor, "?")
            except BaseException:
                connection.rollback()
                raise
            try:
                connection.commit()
            except sqlite3.OperationalError as exc:
                raise StoreError(self.shown, str(exc)) from None
        finally:
            connection.close()

    def lock_schema(self, tx: Tx) -> None:
        """`BEGIN IMMEDIATE` already holds the one write lock."""


class Postgres:
    kind: Kind = "postgresql"

    def __init__(self, url: str, connect_seconds: float = 5.0) -> None:
        self.url = url
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" if parts.username else host
        netloc += f":{parts.port}" if parts.port else ""
        self.shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        self.connect_seconds = connect_seconds

    @contextlib.contextmanager
    def transaction(self, write: bool) -> Iterator[Tx]:
        import psycopg

        try:
            connection = psycopg.connect(
                self.url, connect_timeout=max(1, round(self.connect_seconds)), autocommit=True
            )
        except psycopg.OperationalError as exc:
            raise StoreError(self.shown, _first_line(exc)) from None
        try:
            with connection.transaction(), connection.cursor() as cursor:
                yield _Cursor(cursor, "%s")
        except psycopg.OperationalError as exc:
            raise StoreError(self.shown, _first_line(exc)) from None
        finally:
            connection.close()

    def lock_schema(self, tx: Tx) -> None:
        tx.run("SELECT pg_advisory_xact_lock(?)", (0x61756469,))  # "audi"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def engine(url: str | None, artifact_root: Path) -> Engine:
    """The engine of `url` (None: SQLite in ARTIFACT_ROOT/audience.db)."""
    if not url:
        return Sqlite(artifact_root / DEFAULT_FILE)
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return Postgres(url)
    if scheme == "sqlite" and url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return Sqlite(Path(url.removeprefix("sqlite:///")))
    raise ConfigError(
        "AUDIENCE_DATABASE_URL",
        "expected postgresql://user@host:port/db or sqlite:///path/to/file.db, got "
        f"{url.split('@')[-1]!r}",
    )
