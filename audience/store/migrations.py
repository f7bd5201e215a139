"""The store's schema, as numbered migrations the tool applies itself.

Each migration runs once, in one write transaction with its row in `schema_migrations`,
so a crash leaves the schema at the previous version, and two processes starting at
once apply it once (the second waits for the first's lock, then finds it done). A new
version appends a migration; none is ever edited once released. Times are seconds since
the Unix epoch (UTC) in DOUBLE PRECISION, which both engines store exactly enough.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from audience.errors import StoreError
from audience.store.engine import Engine


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: Final = (
    Migration(
        1,
        "opt-outs, campaigns with their frozen assignments, contact history",
        (
            """CREATE TABLE optouts (
                user_id TEXT PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL,
                reason TEXT
            )""",
            """CREATE TABLE campaigns (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                product_id TEXT NOT NULL,
                state TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                launched_at DOUBLE PRECISION,
                model_version TEXT NOT NULL,
                spec TEXT NOT NULL,
                srm TEXT NOT NULL,
                treatment BIGINT NOT NULL,
                holdout BIGINT NOT NULL,
                report TEXT
            )""",
            """CREATE TABLE assignments (
                campaign_id TEXT NOT NULL REFERENCES campaigns (id),
                user_id TEXT NOT NULL,
                arm TEXT NOT NULL,
                rank BIGINT NOT NULL,
                score DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (campaign_id, user_id)
            )""",
            "CREATE INDEX assignments_by_rank ON assignments (campaign_id, rank)",
            """CREATE TABLE contacts (
                campaign_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                channel TEXT NOT NULL,
                PRIMARY KEY (campaign_id, user_id, channel, at)
            )""",
            "CREATE INDEX contacts_by_time ON contacts (at, user_id)",
        ),
    ),
)

LATEST: Final = MIGRATIONS[-1].version


def migrate(engine: Engine) -> int:
    """Apply every migration the store lacks; the schema version it is at now."""
    with engine.transaction(write=True) as tx:
        engine.lock_schema(tx)
        tx.run(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        done = {int(v) for (v,) in tx.run("SELECT version FROM schema_migrations")}
        if done and max(done) > LATEST:
            raise StoreError(
                engine.shown,
                f"schema version {max(done)} is newer than this audience knows ({LATEST}): "
                "upgrade audience",
            )
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements:
                tx.run(statement)
            tx.run(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
    return LATEST
