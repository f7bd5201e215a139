"""The campaign store: opt-outs, contact history and campaigns, on either engine.

Every method is one transaction, so a crash leaves each write whole or absent: a
launch marks the campaign launched and records its treatment arm's contacts together
or not at all. Writes are idempotent where a caller may retry: adding an opt-out twice
keeps the first, and a contact is identified by (campaign, user, channel, time), so a
batch sent again records nothing new. Times are seconds since the epoch (UTC).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from audience.errors import ConfigError, NotFoundError, StateError
from audience.settings import Settings
from audience.store.engine import Engine, Tx, engine
from audience.store.migrations import migrate

ARMS: Final = ("treatment", "holdout")
CREATED, LAUNCHED = "created", "launched"
DAY: Final = 86_400.0


def epoch(at: datetime | None) -> float:
    """Seconds since the epoch of `at` (a naive time is UTC); now for None."""
    if at is None:
        return time.time()
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def moment(seconds: float | None) -> str | None:
    """ISO-8601 UTC text of an epoch time."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


@dataclass(frozen=True)
class Fatigue:
    """Contact rules: who a new list leaves out because they were contacted lately.

    `contacted_within_days`: anyone contacted in the last D days. `max_contacts` per
    `per_days`: anyone who already had that many contacts in the last `per_days` days
    (at most 2 in 7: a third is not sent). None switches a rule off.
    """

    contacted_within_days: float | None = None
    max_contacts: int | None = None
    per_days: float = 7.0

    def __post_init__(self) -> None:
        if self.contacted_within_days is not None and self.contacted_within_days < 0:
            raise ConfigError("exclude_contacted_within_days", "must be at least 0")
        if self.max_contacts is not None and self.max_contacts < 1:
            raise ConfigError("max_contacts", "must be at least 1 (or no policy)")
        if not self.per_days > 0:
            raise ConfigError("per_days", f"must be above 0, got {self.per_days}")

    @classmethod
    def of(
        cls,
        settings: Settings,
        within_days: float | None = None,
        max_contacts: int | None = None,
        window_days: float | None = None,
    ) -> Fatigue:
        """A request's rules: what it gives, over the settings' default policy (a
        `max_contacts` of 0 switches the policy off)."""
        most = settings.max_contacts if max_contacts is None else max_contacts
        return cls(within_days, most or None, window_days or settings.contact_window_days)

    def as_dict(self) -> dict[str, Any]:
        return {
            "exclude_contacted_within_days": self.contacted_within_days,
            "max_contacts": self.max_contacts,
            "per_days": self.per_days,
        }


@dataclass(frozen=True)
class Campaign:
    """A stored campaign: what was frozen at creation, and what happened since."""

    id: str
    name: str
    product_id: str
    state: str
    created_at: float
    launched_at: float | None
    model_version: str
    spec: dict[str, Any]
    srm: dict[str, Any]
    treatment: int
    holdout: int
    report: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "product_id": self.product_id,
            "state": self.state,
            "created_at": moment(self.created_at),
            "launched_at": moment(self.launched_at),
            "model_version": self.model_version,
            "treatment": self.treatment,
            "holdout": self.holdout,
            **self.spec,
            "srm": self.srm,
            "report": self.report,
        }


_CAMPAIGN = (
    "id, name, product_id, state, created_at, launched_at, model_version, spec, srm, "
    "treatment, holdout, report"
)


def _campaign(row: Sequence[Any]) -> Campaign:
    cid, name, product, state, created, launched, version, spec, srm, t, h, report = row
    return Campaign(
        cid,
        name,
        product,
        state,
        float(created),
        None if launched is None else float(launched),
        version,
        json.loads(spec),
        json.loads(srm),
        int(t),
        int(h),
        None if report is None else json.loads(report),
    )


class Store:
    """Opt-outs, contacts and campaigns; the schema is brought up to date on first use."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._ready = False

    @classmethod
    def open(cls, url: str | None, artifact_root: Path) -> Store:
        """The store at `url` (AUDIENCE_DATABASE_URL; None: SQLite beside the artifacts)."""
        return cls(engine(url, artifact_root))

    def _tx(self, write: bool = False) -> AbstractContextManager[Tx]:
        if not self._ready:
            migrate(self.engine)
            self._ready = True
        return self.engine.transaction(write)

    # --- opt-outs ------------------------------------------------------------------------

    def add_optouts(
        self, user_ids: Iterable[str], reason: str | None = None, at: float | None = None
    ) -> int:
        """Opt the users out; how many were not opted out before."""
        when = time.time() if at is None else at
        with self._tx(write=True) as tx:
            return sum(
                tx.count(
                    "INSERT INTO optouts (user_id, at, reason) VALUES (?, ?, ?) "
                    "ON CONFLICT (user_id) DO NOTHING",
                    (user, when, reason),
                )
                for user in dict.fromkeys(user_ids)
            )

    def remove_optouts(self, user_ids: Iterable[str]) -> int:
        """Take the users' opt-outs back; how many had one."""
        with self._tx(write=True) as tx:
            return sum(
                tx.count("DELETE FROM optouts WHERE user_id = ?", (user,))
                for user in dict.fromkeys(user_ids)
            )

    def optouts(self) -> frozenset[str]:
        """Every opted-out user."""
        with self._tx() as tx:
            return frozenset(u for (u,) in tx.run("SELECT user_id FROM optouts"))

    def optout_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The opt-outs, newest first: user_id, at (ISO), reason."""
        sql = "SELECT user_id, at, reason FROM optouts ORDER BY at DESC, user_id"
        with self._tx() as tx:
            rows = tx.run(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return [{"user_id": u, "at": moment(a), "reason": r} for u, a, r in rows]

    # --- contacts --------------------------------------------------------------------------

    def record_contacts(self, campaign_id: str, contacts: Iterable[tuple[str, float, str]]) -> int:
        """Record (user, time, channel) contacts of a campaign; how many were new."""
        with self._tx(write=True) as tx:
            return sum(
                tx.count(
                    "INSERT INTO contacts (campaign_id, user_id, at, channel) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (campaign_id, user, at, channel),
                )
                for user, at, channel in contacts
            )

    def fatigued(self, rules: Fatigue, now: float | None = None) -> dict[str, frozenset[str]]:
        """The users each rule leaves out at `now`, by rule name."""
        now = time.time() if now is None else now
        out: dict[str, frozenset[str]] = {}
        if rules.contacted_within_days is None and rules.max_contacts is None:
            return out  # no rule: nothing to read (and a store that is down is no matter)
        with self._tx() as tx:
            if rules.contacted_within_days is not None:
                since = now - rules.contacted_within_days * DAY
                rows = tx.run(
                    "SELECT DISTINCT user_id FROM contacts WHERE at >= ? AND at <= ?", (since, now)
                )
                out["contacted_within_days"] = frozenset(u for (u,) in rows)
            if rules.max_contacts is not None:
                rows = tx.run(
                    "SELECT user_id FROM contacts WHERE at >= ? AND at <= ? "
                    "GROUP BY user_id HAVING COUNT(*) >= ?",
                    (now - rules.per_days * DAY, now, rules.max_contacts),
                )
                out["contact_policy"] = frozenset(u for (u,) in rows)
        return out

    def contacts(self, campaign_id: str) -> int:
        with self._tx() as tx:
            (n,) = tx.run("SELECT COUNT(*) FROM contacts WHERE campaign_id = ?", (campaign_id,))[0]
        return int(n)

    # --- campaigns ---------------------------------------------------------------------------

    def add_campaign(
        self, campaign: Campaign, assignments: Sequence[tuple[str, str, int, float]]
    ) -> None:
        """Store a new campaign and its frozen (user, arm, rank, score) assignment."""
        with self._tx(write=True) as tx:
            tx.run(
                f"INSERT INTO campaigns ({_CAMPAIGN}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    campaign.id,
                    campaign.name,
                    campaign.product_id,
                    campaign.state,
                    campaign.created_at,
                    campaign.launched_at,
                    campaign.model_version,
                    json.dumps(campaign.spec),
                    json.dumps(campaign.srm),
                    campaign.treatment,
                    campaign.holdout,
                    None,
                ),
            )
            tx.many(
                "INSERT INTO assignments (campaign_id, user_id, arm, rank, score) "
                "VALUES (?, ?, ?, ?, ?)",
                [(campaign.id, *row) for row in assignments],
            )

    def campaign(self, campaign_id: str) -> Campaign:
        with self._tx() as tx:
            return _get(tx, campaign_id)

    def campaigns(self) -> list[Campaign]:
        """Every campaign, newest first."""
        with self._tx() as tx:
            rows = tx.run(f"SELECT {_CAMPAIGN} FROM campaigns ORDER BY created_at DESC, id")
        return [_campaign(r) for r in rows]

    def assignments(self, campaign_id: str, arm: str | None = None) -> list[tuple[Any, ...]]:
        """(user_id, arm, rank, score) of the campaign (one arm, or both), by rank."""
        if arm is not None and arm not in ARMS:
            raise ConfigError("arm", f"must be one of {', '.join(ARMS)} or all, got {arm!r}")
        sql = "SELECT user_id, arm, rank, score FROM assignments WHERE campaign_id = ?"
        params: tuple[Any, ...] = (campaign_id,)
        if arm is not None:
            sql, params = sql + " AND arm = ?", (campaign_id, arm)
        with self._tx() as tx:
            _get(tx, campaign_id)
            return tx.run(sql + " ORDER BY rank", params)

    def launch(self, campaign_id: str, at: float, channel: str) -> Campaign:
        """Mark the campaign launched at `at` and record its treatment arm as contacted,
        in one transaction. A campaign is launched once."""
        with self._tx(write=True) as tx:
            found = _get(tx, campaign_id)
            if found.state != CREATED:
                raise StateError(
                    "campaign",
                    f"{campaign_id} was already launched at {moment(found.launched_at)}",
                )
            tx.run(
                "UPDATE campaigns SET state = ?, launched_at = ? WHERE id = ?",
                (LAUNCHED, at, campaign_id),
            )
            users = tx.run(
                "SELECT user_id FROM assignments WHERE campaign_id = ? AND arm = ?",
                (campaign_id, "treatment"),
            )
            tx.many(
                "INSERT INTO contacts (campaign_id, user_id, at, channel) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(campaign_id, u, at, channel) for (u,) in users],
            )
            return _get(tx, campaign_id)

    def save_report(self, campaign_id: str, report: dict[str, Any]) -> Campaign:
        with self._tx(write=True) as tx:
            _get(tx, campaign_id)
            tx.run(
                "UPDATE campaigns SET report = ? WHERE id = ?", (json.dumps(report), campaign_id)
            )
            return _get(tx, campaign_id)


def _get(tx: Tx, campaign_id: str) -> Campaign:
    rows = tx.run(f"SELECT {_CAMPAIGN} FROM campaigns WHERE id = ?", (campaign_id,))
    if not rows:
        raise NotFoundError(
            "campaign", f"no campaign {campaign_id!r} (see `audience campaign list`)"
        )
    return _campaign(rows[0])
