"""Opt-outs through the service, on both store engines: no answer names an opted-out
user (the fast path, batches, segments, users), other workers follow within a poll, and
a store that goes away costs writes, not answers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient

from audience.errors import StoreError
from audience.model.audiences import AudienceConfig
from audience.serving.api import create_app
from audience.serving.api.holder import AnswerCache
from audience.serving.index import Index
from audience.settings import Settings
from audience.store.store import Store
from tests.postgres import server
from tests.serving.test_api import free_port, serve, stop, wait_ready
from tests.serving.test_segment import _published

POLL = 0.5


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _published(tmp_path_factory.mktemp("optouts"), AudienceConfig())


def client(root: Path, url: str, **changes: Any) -> TestClient:
    config = Settings(artifact=root, database_url=url, reload_seconds=POLL, **changes)
    devnull = os.open(os.devnull, os.O_WRONLY)
    return TestClient(create_app(config, signals=False, log_fd=devnull, ui=False))


def users_named(c: TestClient, product: str) -> dict[str, list[str]]:
    """The users each kind of answer names for the product."""
    csv = c.get(f"/segments/{product}", params={"size": 2000, "format": "csv"}).text
    return {
        "fast path": [m["user_id"] for m in c.get(f"/recommend/{product}").json()["audience"]],
        "routed": [
            m["user_id"] for m in c.get(f"/recommend/{product}", params={"n": 7}).json()["audience"]
        ],
        "batch": [
            m["user_id"]
            for m in c.post("/recommend/batch", json={"items": [{"product_id": product}]}).json()[
                "results"
            ][0]["audience"]
        ],
        "segment json": [
            m["user_id"]
            for m in c.get(f"/segments/{product}", params={"size": 100}).json()["audience"]
        ],
        "segment csv": pl.read_csv(io.StringIO(csv)).get_column("user_id").to_list(),
    }


def test_an_opted_out_user_is_named_by_no_answer(root: Path, database_url: str) -> None:
    with client(root, database_url) as c:
        product = c.get("/products/sample", params={"n": 1}).json()["product_ids"][0]
        before = users_named(c, product)
        first, second = before["fast path"][:2]
        answer = c.post("/optouts", json={"user_ids": [first, "never-seen"], "reason": "test"})
        assert answer.json() == {"changed": 2, "opted_out": 2}
        after = users_named(c, product)
        for kind, users in after.items():
            assert first not in users, kind
        assert after["fast path"][0] == second  # the next in the ranking moves up
        assert len(after["fast path"]) == len(before["fast path"])  # and the list stays full
        assert after["fast path"] == before["segment json"][1:][: len(after["fast path"])]
        gone = c.get(f"/users/{first}")
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, "opted_out")
        removed = c.get(f"/segments/{product}", params={"size": 5}).json()["removed"]
        assert removed["opted_out"] == 1
        assert c.get("/ready").json()["optouts"] == 2
        listed = c.get("/optouts").json()
        assert listed["opted_out"] == 2 and {r["user_id"] for r in listed["optouts"]} == {
            first,
            "never-seen",
        }
        assert c.delete(f"/optouts/{first}").json() == {"changed": 1, "opted_out": 1}
        assert c.delete(f"/optouts/{first}").json()["changed"] == 0
        assert users_named(c, product)["fast path"] == before["fast path"]


def test_other_workers_follow_within_a_poll(root: Path, database_url: str) -> None:
    with client(root, database_url) as writer, client(root, database_url) as other:
        product = other.get("/products/sample", params={"n": 1}).json()["product_ids"][0]
        first = other.get(f"/recommend/{product}").json()["audience"][0]["user_id"]  # cached
        writer.post("/optouts", json={"user_ids": [first]})
        start = time.monotonic()
        while first in [
            m["user_id"] for m in other.get(f"/recommend/{product}").json()["audience"]
        ]:
            assert time.monotonic() - start < POLL + 1, "not served within the poll + 1 s"
            time.sleep(0.05)


def test_contact_rules_leave_out_recent_contacts_and_say_how_many(
    root: Path, database_url: str
) -> None:
    with client(root, database_url) as c:
        product = c.get("/products/sample", params={"n": 1}).json()["product_ids"][0]
        users = [
            m["user_id"]
            for m in c.get(f"/segments/{product}", params={"size": 6}).json()["audience"]
        ]
        now = time.time()
        contacts = [
            {"user_id": users[0], "at": _iso(now - 3600), "channel": "email"},
            {"user_id": users[1], "at": _iso(now - 2 * 86400), "channel": "email"},
            {"user_id": users[1], "at": _iso(now - 3 * 86400), "channel": "sms"},
        ]
        made = c.post(
            "/campaigns", json={"product_id": product, "size": 6, "holdout": 0.5, "name": "t"}
        )
        cid = made.json()["id"]
        assert c.post(f"/campaigns/{cid}/contacts", json={"contacts": contacts}).json() == {
            "recorded": 3,
            "duplicates": 0,
        }
        assert c.post(f"/campaigns/{cid}/contacts", json={"contacts": contacts}).json() == {
            "recorded": 0,
            "duplicates": 3,
        }
        default = c.get(f"/segments/{product}", params={"size": 6}).json()
        assert default["removed"]["contact_policy"] == 1  # two in 7 days: the default policy
        assert users[1] not in [m["user_id"] for m in default["audience"]]
        recent = c.get(
            f"/segments/{product}",
            params={"size": 6, "exclude_contacted_within_days": 1, "max_contacts": 0},
        ).json()
        assert recent["removed"] == {"contacted_within_days": 1}
        assert users[0] not in [m["user_id"] for m in recent["audience"]]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def test_without_its_database_the_service_answers_and_refuses_writes(root: Path) -> None:
    with server() as db, client(root, db.url) as c:
        product = c.get("/products/sample", params={"n": 1}).json()["product_ids"][0]
        first = c.get(f"/recommend/{product}").json()["audience"][0]["user_id"]
        c.post("/optouts", json={"user_ids": [first]})
        db.stop()
        named = [m["user_id"] for m in c.get(f"/recommend/{product}").json()["audience"]]
        assert named and first not in named  # the last snapshot stays in force
        refused = c.post("/optouts", json={"user_ids": ["someone"]})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "store_unavailable"
        assert refused.headers["retry-after"]
        plain = c.get(f"/segments/{product}", params={"size": 50, "max_contacts": 0})
        assert plain.status_code == 200 and first not in plain.text  # no contact rule to read
        ruled = c.get(f"/segments/{product}", params={"size": 50})  # the default policy
        assert ruled.status_code == 503 and ruled.json()["error"]["code"] == "store_unavailable"
        time.sleep(POLL * 3)
        ready = c.get("/ready").json()
        assert ready["status"] == "ready" and ready["store_error"] is not None
        assert ready["optouts"] == 1
        db.start()
        assert c.post("/optouts", json={"user_ids": ["someone"]}).status_code == 200
        time.sleep(POLL * 3)
        assert c.get("/ready").json()["store_error"] is None


def test_a_server_does_not_start_without_knowing_the_opt_outs(root: Path) -> None:
    with server() as db:
        url = db.url
    with pytest.raises(StoreError, match=r"postgresql://postgres@127\.0\.0\.1"), client(root, url):
        pass


def test_a_new_opt_out_drops_only_the_answers_that_name_it(root: Path) -> None:
    index = Index.open(root)
    cache = AnswerCache(index)
    products = index.sample(40, seed=3)
    bodies = {p: cache.get((p, index.n, (), None)) for p in products}
    named = {p: [m.user_id for m in index.recommend(p, index.n).audience] for p in products}
    gone = named[products[0]][0]
    later = cache.carried(index.excluding(frozenset({gone})))
    for p in products:
        body = later.get((p, index.n, (), None))
        assert (body is bodies[p]) == (gone not in named[p]), p  # kept, or answered anew
        assert gone.encode() not in body
    taken_back = later.carried(index.excluding(frozenset()))
    assert taken_back.get((products[0], index.n, (), None)) == bodies[products[0]]
    assert not taken_back._entries.keys() - {(products[0], index.n, (), None)}


def test_two_workers_and_the_command_line_write_at_once(
    root: Path, database_url: str, tmp_path: Path
) -> None:
    """`audience serve --workers 2` takes opt-outs and contact batches from four client
    threads while `audience optout add` writes too: every write is there once, the
    retried contact batches (each sent twice, by two threads) are recorded once, and
    both workers end up serving every opt-out."""
    port = free_port()
    env = {"AUDIENCE_DATABASE_URL": database_url, "AUDIENCE_RELOAD_SECONDS": str(POLL)}
    process = serve("--artifact", str(root), "--port", str(port), "--workers", "2", env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        product = httpx.get(f"{base}/products/sample?n=1").json()["product_ids"][0]
        made = httpx.post(
            f"{base}/campaigns",
            json={"product_id": product, "size": 5, "holdout": 0.5, "name": "at once"},
            timeout=30,
        )
        assert made.status_code == 201, made.text
        campaign = made.json()["id"]
        start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()

        def write(thread: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                for call in range(15):
                    ids = [f"api-{thread}-{call}-{k}" for k in range(4)]
                    assert http.post("/optouts", json={"user_ids": ids}).status_code == 200
                    batch = [  # threads 0 and 1 send the same batches, as do 2 and 3
                        {"user_id": f"c-{thread // 2}-{call}-{k}", "at": _iso(start + call)}
                        for k in range(5)
                    ]
                    sent = http.post(f"/campaigns/{campaign}/contacts", json={"contacts": batch})
                    assert sent.status_code == 200, sent.text

        (tmp_path / "ids.txt").write_text("\n".join(f"cli-{k}" for k in range(300)))
        cli = subprocess.Popen(
            [sys.executable, "-m", "audience_cli.main", "optout", "add", "--file",
             str(tmp_path / "ids.txt"), "--artifact", str(root), "--database", database_url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(write, range(4)))
        said = cli.communicate(timeout=60)
        assert cli.returncode == 0, said
        store = Store.open(database_url, root)
        optouts = store.optouts()
        assert len([u for u in optouts if u.startswith("api-")]) == 4 * 15 * 4
        assert len([u for u in optouts if u.startswith("cli-")]) == 300
        assert store.contacts(campaign) == 2 * 15 * 5
        time.sleep(POLL + 1)
        seen = {httpx.get(f"{base}/ready").json()["optouts"] for _ in range(20)}
        assert seen == {len(optouts)}  # whichever worker answers
    finally:
        stop(process)
        store = Store.open(database_url, root)
        store.remove_optouts(store.optouts())
