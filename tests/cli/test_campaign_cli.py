"""`audience optout` and `audience campaign`, end to end through the command, on both
store engines: create, launch after the fact, export, simulate, report; the errors name
what is wrong and exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from audience.model.audiences import AudienceConfig
from audience.serving.segment import audience as audience_of
from audience.store.store import Store
from audience_cli.ui_cli import ArtifactIndex
from tests.cli.test_cli import run
from tests.serving.test_segment import _published


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _published(tmp_path_factory.mktemp("campaigns"), AudienceConfig())


def audience(root: Path, url: str, *args: str | Path) -> dict[str, Any]:
    done = run(*args, "--artifact", root, "--database", url, "--json")
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def refused(root: Path, url: str, *args: str | Path) -> str:
    done = run(*args, "--artifact", root, "--database", url)
    assert done.returncode == 2, done.stdout
    return done.stderr


def test_the_campaign_loop_from_the_command_line(
    root: Path, database_url: str, tmp_path: Path
) -> None:
    top = audience(
        root, database_url, "segment", "--product", "P0", "--size", "3", "--out", tmp_path / "s.csv"
    )
    assert top["rows"] == 3
    first = pl.read_csv(tmp_path / "s.csv").get_column("user_id")[0]
    assert audience(root, database_url, "optout", "add", first, "--reason", "asked")["added"] == 1
    made = audience(
        root,
        database_url,
        "campaign",
        "create",
        "--product",
        "P0",
        "--size",
        "4000",
        "--holdout",
        "0.5",
        "--name",
        "spring",
        "--window-days",
        "7",
        "--cost-per-contact",
        "0.1",
        "--value-per-conversion",
        "20",
    )
    cid = made["id"]
    assert made["state"] == "created" and made["treatment"] + made["holdout"] == 4000
    # The split is drawn afresh for each campaign id, so the check's verdict is random (a
    # false alarm in 0.1% of campaigns): it must judge the arms this campaign has.
    srm = made["srm"]
    assert srm["observed"] == [made["treatment"], made["holdout"]] and srm["shares"] == [0.5, 0.5]
    assert srm["mismatch"] is (srm["p_value"] < srm["alpha"]) and made["removed"]["opted_out"] == 1
    assert [c["id"] for c in audience(root, database_url, "campaign", "list")["campaigns"]] == [cid]
    assert "launch it first" in refused(
        root, database_url, "campaign", "report", cid, "--log", tmp_path / "none.parquet"
    )
    launched = audience(
        root, database_url, "campaign", "launch", cid, "--at", "2023-03-01T00:00:00"
    )
    assert launched["launched_at"] == "2023-03-01T00:00:00+00:00"
    assert "already launched" in refused(root, database_url, "campaign", "launch", cid)
    sent = audience(root, database_url, "campaign", "export", cid, "--out", tmp_path / "t.parquet")
    frame = pl.read_parquet(tmp_path / "t.parquet")
    assert frame.columns == ["user_id", "arm", "rank", "score"]
    assert sent["rows"] == made["treatment"] == frame.height and set(frame["arm"]) == {"treatment"}
    assert first not in frame.get_column("user_id").to_list()
    every = audience(
        root, database_url, "campaign", "export", cid, "--arm", "all", "--out", tmp_path / "all.csv"
    )
    assert every["rows"] == 4000 and pl.read_csv(tmp_path / "all.csv")["rank"].to_list() == list(
        range(1, 4001)
    )
    log = tmp_path / "post.parquet"
    audience(
        root,
        database_url,
        "campaign",
        "simulate",
        cid,
        "--baseline",
        "0.1",
        "--lift",
        "0.5",
        "--seed",
        "3",
        "--background",
        "300",
        "--out",
        log,
    )
    report = audience(
        root, database_url, "campaign", "report", cid, "--log", log, "--out", tmp_path / "report"
    )
    assert report["treatment"]["users"] == made["treatment"]
    assert report["comparison"]["significant"] is True and report["partial"] is False
    assert {Path(p).name for p in report["files"].values()} == {
        "report.json",
        "report.md",
        "report.png",
    }
    shown = audience(root, database_url, "campaign", "show", cid)
    assert shown["state"] == "launched" and shown["report"]["verdict"] == report["verdict"]
    listed = run("campaign", "list", "--artifact", root, "--database", database_url)
    assert cid in listed.stdout and "launched" in listed.stdout


def test_optouts_from_the_command_line(root: Path, database_url: str, tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("user_id\nu2\nu3\n")
    assert (
        audience(root, database_url, "optout", "add", "u1", "--file", tmp_path / "ids.txt")["added"]
        == 3
    )
    assert audience(root, database_url, "optout", "add", "u1")["already_opted_out"] == 1
    assert audience(root, database_url, "optout", "remove", "u2", "u9")["removed"] == 1
    listed = audience(root, database_url, "optout", "list", "--limit", "1")
    assert listed["opted_out"] == 2 and len(listed["optouts"]) == 1
    assert "users" in refused(root, database_url, "optout", "add")


def test_campaign_errors_name_what_is_wrong(root: Path, database_url: str) -> None:
    assert "no campaign 'nope'" in refused(root, database_url, "campaign", "show", "nope")
    base = ("campaign", "create", "--product", "P0", "--size", "100", "--name", "x")
    assert "holdout" in refused(root, database_url, *base, "--holdout", "1")
    assert "conversion" in refused(
        root, database_url, *base, "--holdout", "0.5", "--conversion", "clicked"
    )
    assert "--at" in refused(root, database_url, "campaign", "launch", "nope", "--at", "soon")
    made = audience(root, database_url, *base, "--holdout", "0.5")
    assert "in the future" in refused(
        root, database_url, "campaign", "launch", made["id"], "--at", "2999-01-01T00:00:00"
    )
    assert "--out" in refused(
        root, database_url, "campaign", "export", made["id"], "--out", "list.txt"
    )
    url = "mysql://nowhere"
    assert "AUDIENCE_DATABASE_URL" in refused(root, url, "campaign", "list")


def test_the_standalone_ui_serves_without_the_opted_out(
    root: Path, database_url: str, tmp_path: Path
) -> None:
    """`audience ui` has no server to follow the store: its index getter reads the
    opt-outs itself, again once its interval has passed."""
    store = Store.open(database_url, tmp_path)
    get_index = ArtifactIndex(root, store, every=0)
    first = get_index()
    assert first is not None
    product = first.sample(1, seed=1)[0]
    named = first.recommend(product, first.n).audience[0].user_id
    store.add_optouts([named], "test")
    try:
        served = get_index()
        assert served is not None and named in served.optouts
        assert named not in [m.user_id for m in audience_of(served, product, served.n).audience]
    finally:
        store.remove_optouts([named])
