"""The store on both engines (`database_url` runs each test on SQLite and on a real
PostgreSQL server): migrations, opt-outs, contacts and fatigue, campaigns, launches
that are whole or absent, and writers in several processes that lose nothing."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audience.errors import ConfigError, NotFoundError, StateError, StoreError
from audience.store.engine import engine
from audience.store.migrations import LATEST, migrate
from audience.store.store import CREATED, DAY, LAUNCHED, Campaign, Fatigue, Store

NOW = 1_800_000_000.0


def open_store(url: str, tmp_path: Path) -> Store:
    return Store.open(url, tmp_path)


def campaign(cid: str = "c1", treatment: int = 3, holdout: int = 2) -> tuple[Campaign, list]:
    record = Campaign(
        cid,
        "spring",
        "p1",
        CREATED,
        NOW,
        None,
        "v1",
        {"size": 5},
        {"mismatch": False},
        treatment,
        holdout,
        None,
    )
    rows = [
        (f"u{i}", "treatment" if i < treatment else "holdout", i + 1, 1.0 - i / 10)
        for i in range(treatment + holdout)
    ]
    return record, rows


def test_migrations_run_once_and_record_the_version(database_url: str, tmp_path: Path) -> None:
    found = engine(database_url, tmp_path)
    assert migrate(found) == LATEST
    assert migrate(found) == LATEST  # a second start applies nothing
    with found.transaction(write=False) as tx:
        assert tx.run("SELECT version FROM schema_migrations") == [(LATEST,)]
    with found.transaction(write=True) as tx:
        tx.run("INSERT INTO schema_migrations VALUES (?, ?, ?)", (LATEST + 1, "future", NOW))
    with pytest.raises(StoreError, match="newer than this audience knows"):
        migrate(found)


def test_optouts_are_added_once_and_removed(database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url, tmp_path)
    assert store.add_optouts(["a", "b", "a"], reason="asked", at=NOW) == 2
    assert store.add_optouts(["b", "c"], at=NOW + 1) == 1
    assert store.optouts() == {"a", "b", "c"}
    rows = store.optout_rows()
    assert [r["user_id"] for r in rows] == ["c", "a", "b"]  # newest first, then by id
    assert rows[1]["reason"] == "asked"
    assert store.optout_rows(limit=1) == rows[:1]
    assert store.remove_optouts(["a", "zzz"]) == 1
    assert store.optouts() == {"b", "c"}


def test_contacts_are_idempotent_and_drive_the_fatigue_rules(
    database_url: str, tmp_path: Path
) -> None:
    store = open_store(database_url, tmp_path)
    batch = [
        ("u1", NOW - 1 * DAY, "email"),
        ("u1", NOW - 2 * DAY, "email"),
        ("u2", NOW - 10 * DAY, "sms"),
        ("u3", NOW - 0.5 * DAY, "email"),
    ]
    assert store.record_contacts("c1", batch) == 4
    assert store.record_contacts("c1", batch) == 0  # a retried batch records nothing new
    assert store.contacts("c1") == 4
    rules = Fatigue(contacted_within_days=1.5, max_contacts=2, per_days=7)
    assert store.fatigued(rules, now=NOW) == {
        "contacted_within_days": {"u1", "u3"},
        "contact_policy": {"u1"},  # two contacts in 7 days: a third is not sent
    }
    assert store.fatigued(Fatigue(), now=NOW) == {}
    assert store.fatigued(Fatigue(max_contacts=1, per_days=30), now=NOW)["contact_policy"] == {
        "u1",
        "u2",
        "u3",
    }


def test_fatigue_rules_are_checked() -> None:
    with pytest.raises(ConfigError, match="exclude_contacted_within_days"):
        Fatigue(contacted_within_days=-1)
    with pytest.raises(ConfigError, match="max_contacts"):
        Fatigue(max_contacts=0)
    with pytest.raises(ConfigError, match="per_days"):
        Fatigue(max_contacts=2, per_days=0)


def test_a_campaign_is_stored_launched_once_and_reported(database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url, tmp_path)
    record, rows = campaign()
    store.add_campaign(record, rows)
    assert store.campaign("c1") == record
    assert [c.id for c in store.campaigns()] == ["c1"]
    assert [r[0] for r in store.assignments("c1", "holdout")] == ["u3", "u4"]
    assert len(store.assignments("c1")) == 5
    launched = store.launch("c1", NOW + 60, "email")
    assert (launched.state, launched.launched_at) == (LAUNCHED, NOW + 60)
    assert store.contacts("c1") == 3  # the treatment arm, and only it
    with pytest.raises(StateError, match="already launched"):
        store.launch("c1", NOW + 120, "email")
    assert store.contacts("c1") == 3
    assert store.save_report("c1", {"lift": 0.1}).report == {"lift": 0.1}
    with pytest.raises(NotFoundError, match="no campaign 'nope'"):
        store.campaign("nope")
    with pytest.raises(NotFoundError):
        store.launch("nope", NOW, "email")
    with pytest.raises(ConfigError, match="arm"):
        store.assignments("c1", "control")


def _writer(url: str, root: str, worker: int, users: int) -> None:
    store = Store.open(url, Path(root))
    for i in range(users):
        store.add_optouts([f"w{worker}-{i}", f"shared-{i}"], at=NOW)
        store.record_contacts(
            "c1", [(f"w{worker}-{i}", NOW, "email"), (f"shared-{i}", NOW, "email")]
        )


def test_writers_in_several_processes_lose_and_duplicate_nothing(
    database_url: str, tmp_path: Path
) -> None:
    open_store(database_url, tmp_path).optouts()  # the schema, before the race
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_writer, args=(database_url, str(tmp_path), w, 60)) for w in range(3)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    store = open_store(database_url, tmp_path)
    assert len(store.optouts()) == 3 * 60 + 60
    assert store.contacts("c1") == 3 * 60 + 60


LAUNCHER = """
import sys
from collections.abc import Iterator
from pathlib import Path
from audience.store.store import Store
store = Store.open(sys.argv[1], Path(sys.argv[2]))
print("go", flush=True)
store.launch("big", 1.0, "email")
print("done", flush=True)
"""


def test_a_launch_killed_midway_leaves_everything_or_nothing(
    database_url: str, tmp_path: Path
) -> None:
    store = open_store(database_url, tmp_path)
    record, rows = campaign("big", treatment=60_000, holdout=100)
    store.add_campaign(record, rows)
    outcomes = set()
    for delay in (0.05, 0.2, 0.5, 1.0, 30.0):
        with subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, database_url, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "go"
            try:
                child.wait(delay)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.wait(10)
        time.sleep(0.2)  # PostgreSQL rolls the killed session back as it notices
        state = store.campaign("big").state
        contacts = store.contacts("big")
        assert (state, contacts) in ((CREATED, 0), (LAUNCHED, 60_000))
        outcomes.add(state)
        if state == LAUNCHED:
            break
    assert LAUNCHED in outcomes  # the last try had all the time it needed


def test_a_store_that_cannot_be_reached_is_a_store_error(tmp_path: Path) -> None:
    with closed_port() as port:
        store = Store.open(f"postgresql://postgres@127.0.0.1:{port}/none", tmp_path)
        with pytest.raises(StoreError, match=r"postgresql://postgres@127.0.0.1"):
            store.optouts()
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(StoreError, match="sqlite"):
        Store.open(f"sqlite:///{blocked}/audience.db", tmp_path).optouts()


def test_only_known_urls_are_accepted(tmp_path: Path) -> None:
    for url in ("mysql://x", "sqlite://relative", "redis://h"):
        with pytest.raises(ConfigError, match="AUDIENCE_DATABASE_URL"):
            engine(url, tmp_path)
    assert engine(None, tmp_path).shown == f"sqlite:///{tmp_path / 'audience.db'}"
    shown = engine("postgresql://me:secret@db.example:5433/audience", tmp_path).shown
    assert shown == "postgresql://me@db.example:5433/audience"  # no password in messages


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port bound but not listening: a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
