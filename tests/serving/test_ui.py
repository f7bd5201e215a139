"""The merchant UI: its handlers on a tiny artifact, then end to end in a real browser.

The browser tests start the server in a subprocess on 127.0.0.1 (`audience serve`, which
mounts the UI under /ui, once it does; `audience ui` until then), drive Debian's
headless Chromium with Playwright (launched by `executable_path`; `make test` installs
the package), compare what the page shows with the answer of the API or, without one,
of the same artifact opened here, and save screenshots under results/ui/. Each server
keeps its campaigns in a SQLite store of its own, which the tests open too.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from audience.errors import AudienceError
from audience.experiments import abtest
from audience.serving import campaigns
from audience.serving.index import Index
from audience.serving.segment import segment
from audience.settings import Settings
from audience.store.store import Store

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
SCREENSHOTS = RESULTS / "ui"
HOST = "127.0.0.1"
START_TIMEOUT = 90.0  # seconds for the server to answer its first page
STEP_TIMEOUT_MS = 30_000  # any single browser wait
CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audience_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui-artifact")
    _cli("train", "--scale", "0.02", "--out", str(root))
    return root


@pytest.fixture(scope="session")
def index(artifact_root: Path) -> Index:
    return Index.open(artifact_root)


# --- handlers, without a browser ----------------------------------------------------------


def test_not_ready_is_said_in_plain_words() -> None:
    from audience.serving import ui

    with pytest.raises(ui._MessageError, match="not ready"):
        ui._index(lambda: None)
    status, table, _, state = ui._guard(
        lambda: ui._show(ui._index(lambda: None), "P1", 5, None, "", None, Path("/nonexistent")),
        ui._no_audience,
    )
    assert "not ready" in status and table.is_empty() and state is None


def test_unknown_product_and_empty_search_are_messages(index: Index) -> None:
    from audience.serving import ui

    with pytest.raises(ui._MessageError, match="Unknown product `NOPE`"):
        ui.audience(index, "NOPE", 10)
    with pytest.raises(ui._MessageError, match="No product matches"):
        ui.search_products(index, "no such product name")
    with pytest.raises(ui._MessageError, match="Choose a product"):
        ui.audience(index, "  ", 10)
    # a new product with similar products named gets their audience
    known = index.sample(2, seed=1)
    found, summary = ui.audience(index, "NEW-1", 5, like=", ".join(known))
    assert found.strategy == "lookalike" and "Strategy: lookalike" in summary
    with pytest.raises(ui._MessageError, match="share"):
        ui.audience(index, known[0], 10, share=150)


def test_unexpected_failure_shows_no_stack_trace() -> None:
    from audience.serving import ui

    def boom() -> str:
        raise KeyError("internal detail")

    message = ui._guard(boom, lambda m: m)
    assert message == ui.UNEXPECTED and "internal detail" not in message


def test_audience_csv_is_the_whole_segment_and_begins_with_the_index_answer(
    index: Index, tmp_path: Path
) -> None:
    from audience.serving import ui

    pid = index.sample(1, seed=2)[0]
    found, summary = ui.audience(index, pid, 0, share=10)  # a share wins over N
    answer = index.recommend(pid, index.n)
    frame = pl.read_csv(ui.audience_csv(found, tmp_path), schema_overrides={"user_id": pl.String})
    assert frame.height == found.rows.height == -(-index.users.height // 10)
    assert f"{frame.height:,} shoppers" in summary and "10.00% of the" in summary
    assert frame.columns[:4] == ["rank", "user_id", "score", "reasons"]
    head = frame.head(len(answer.audience))
    assert head["user_id"].to_list() == [m.user_id for m in answer.audience]
    assert head["reasons"].to_list() == ["; ".join(m.reasons) for m in answer.audience]
    assert head["score"].to_list() == pytest.approx([m.score for m in answer.audience])
    assert set(frame["strategy"]) == {"personalized"}


def test_sample_size_text_and_power_curve() -> None:
    from audience.serving import ui

    size = abtest.sample_size(0.02, 0.022)
    assert f"**{size.n_control:,}**" in ui.sample_size_text(size)
    figure = ui.power_curve(size)
    line = figure.axes[0].lines[0]
    assert min(line.get_ydata()) < size.power < max(line.get_ydata())


def test_mounts_under_fastapi_without_leaking_event_loops(tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from audience.serving import ui

    store = Store.open(f"sqlite:///{tmp_path}/store.db", tmp_path)
    app = ui.mount(FastAPI(), lambda: None, RESULTS, store, Settings())
    with TestClient(app) as client:
        page = client.get("/ui/")
        config = client.get("/ui/config")
    assert page.status_code == 200 and config.json()["title"] == "Audience"
    gc.collect()  # gradio's unclosed loops would raise ResourceWarning (an error) here


def test_backtest_headline(tmp_path: Path) -> None:
    from audience.serving import ui

    assert "No backtest results yet" in ui.backtest_text(tmp_path)
    favoured = {"metric": "ndcg@10", "order": [{"model": "fitted", "mean": 0.0123}]}
    metrics = {"command": "audience evaluate x", "favoured": {"overall": favoured}}
    (tmp_path / "model_metrics.json").write_text(json.dumps(metrics))
    assert "**fitted** (ndcg@10 0.0123)" in ui.backtest_text(tmp_path)


def test_the_model_says_whether_it_uses_cf(index: Index) -> None:
    """Insights say in plain words whether the audiences use collaborative filtering."""
    from audience.serving import ui

    assert "do not use collaborative filtering" in ui.model_text(index)  # the sample: off
    assert "retention_30d" in ui.cf_text(index.collaborative)
    on = {"mode": "auto", "on": True, "why": "the log supports CF", "weight": 8.0}
    assert "come back often enough" in ui.cf_text(on)
    assert "turned on" in ui.cf_text(on | {"mode": "on"})
    assert "did not improve" in ui.cf_text(on | {"weight": 0.0})
    assert ui.cf_text({}) == ""  # an artifact from before the collaborative term


def test_age_text() -> None:
    from audience.serving import ui

    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert ui.age_text(now - timedelta(days=2, hours=3), now) == "2 days"
    assert ui.age_text(now - timedelta(minutes=1), now) == "1 minute"
    assert ui.age_text(now, now) == "less than a minute"


# --- the server and the browser -----------------------------------------------------------


def _chromium() -> str | None:
    found = os.environ.get("AUDIENCE_CHROMIUM") or next(
        (p for p in CHROMIUM_PATHS if Path(p).is_file()), shutil.which("chromium")
    )
    return found or None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str  # the UI's address, ending in /
    api: str | None  # the API's root, when the API serves the UI
    log: Path
    database: str  # the campaign store's URL

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(server.base, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(
        f"server not answering {server.base} after {START_TIMEOUT:.0f} s:\n{server.output()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _start(artifact: Path, log: Path, use_api: bool) -> Server:
    """`audience serve` (the UI under /ui/ beside the API), or `audience ui` alone."""
    port = _free_port()
    root = f"http://{HOST}:{port}"
    common = ["--artifact", str(artifact), "--host", HOST, "--port", str(port)]
    database = f"sqlite:///{log.parent / 'store.db'}"
    env = os.environ | {
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
        "AUDIENCE_DATABASE_URL": database,
    }
    if use_api:
        args, base, api = ["serve", *common], f"{root}/ui/", root
        env |= {"AUDIENCE_RESULTS": str(RESULTS), "AUDIENCE_API_KEYS": ""}
    else:
        args, base, api = ["ui", *common, "--results", str(RESULTS)], f"{root}/", None
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "audience_cli.main", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
        )
    return Server(process, base, api, log, database)


@pytest.fixture(scope="session")
def server(artifact_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("ui-server") / "server.log"
    running = _start(artifact_root, log, use_api=True)
    try:
        _wait_ready(running)
        yield running
    finally:
        _stop(running.process)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        reason = (
            "Debian's chromium is not installed: `make test` installs it (apt-get, as root), "
            "or set AUDIENCE_CHROMIUM to a Chromium binary"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    tab = context.new_page()
    try:
        tab.goto(server.base, timeout=STEP_TIMEOUT_MS)
        tab.locator("#search-query textarea").wait_for()
        yield tab
    finally:
        context.close()


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _expected(server: Server, product_id: str, n: int) -> list[dict[str, Any]]:
    """The audience the API answers for the product."""
    assert server.api is not None, "the browser tests run against `audience serve`"
    url = f"{server.api}/recommend/{product_id}?n={n}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert isinstance(body.get("audience"), list), f"unexpected API answer from {url}: {body}"
    return [
        {k: member[k] for k in ("rank", "user_id", "score", "reasons")}
        for member in body["audience"]
    ]


def _status(page: Any, contains: str) -> str:
    status = page.locator("#audience-status")
    status.get_by_text(contains).first.wait_for()
    return str(status.inner_text())


def _shown_rows(page: Any, table: str = "#audience-table") -> list[list[str]]:
    rows = page.locator(f"{table} [role=row]")
    cells = [
        rows.nth(i).locator("[role=gridcell], td").all_inner_texts() for i in range(rows.count())
    ]
    return [[c.strip() for c in row] for row in cells if row]


def _wait_rows(page: Any, count: int) -> list[list[str]]:
    deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
    rows = _shown_rows(page)
    while len(rows) != count and time.monotonic() < deadline:
        page.wait_for_timeout(200)
        rows = _shown_rows(page)
    return rows


def _check_table(rows: list[list[str]], expected: list[dict[str, Any]]) -> None:
    assert [r[1] for r in rows] == [m["user_id"] for m in expected]
    assert [int(r[0]) for r in rows] == [m["rank"] for m in expected]
    assert [float(r[2]) for r in rows] == pytest.approx([m["score"] for m in expected], abs=1e-4)
    assert [r[3] for r in rows] == ["; ".join(m["reasons"]) for m in expected]


def test_merchant_finds_product_sees_audience_downloads_and_sizes_test(
    page: Any, server: Server, index: Index, tmp_path: Path
) -> None:
    # search by a word of a busy product's name; the top match's audience opens at once
    busy = index.catalog.filter(pl.col("interactions") > 0).sort("interactions", descending=True)
    word = str(busy.item(1, "product_name")).split()[1]
    hits = index.search(word, 20)
    page.locator("#search-query textarea").fill(word)
    page.locator("#search-button").click()
    _status(page, f"showing {hits.item(0, 'product_id')}")
    assert page.locator("#matches [role=row]").count() >= min(hits.height, 5)

    # choose another match from the picker
    chosen = next(
        p for p in hits["product_id"] if index.knows(p) and p != hits.item(0, "product_id")
    )
    page.locator("#product input").click()
    page.get_by_role("option", name=re.compile(f"^{chosen} ")).click()
    status = _status(page, f"for product {chosen}")
    assert "Strategy: personalized" in status
    expected = _expected(server, chosen, 10)
    _check_table(_wait_rows(page, len(expected)), expected)
    _shot(page, "01_audience")

    # switch N to 5
    n_box = page.locator("#n input[type=number]")
    n_box.fill("5")
    n_box.press("Tab")
    _status(page, "5 shoppers")
    expected = _expected(server, chosen, 5)
    _check_table(_wait_rows(page, 5), expected)
    _shot(page, "02_audience_n5")

    # download the CSV: the same rows as the API's answer, full precision
    with page.expect_download(timeout=STEP_TIMEOUT_MS) as download:
        page.locator("#download-audience").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    frame = pl.read_csv(saved, schema_overrides={"user_id": pl.String, "reasons": pl.String})
    assert frame["user_id"].to_list() == [m["user_id"] for m in expected]
    assert frame["rank"].to_list() == [m["rank"] for m in expected]
    assert frame["score"].to_list() == pytest.approx([m["score"] for m in expected], rel=1e-12)
    assert frame["reasons"].to_list() == ["; ".join(m["reasons"]) for m in expected]
    assert set(frame["product_id"]) == {chosen}

    # a campaign-size segment: 5,000 shoppers, the first 100 shown, all downloaded
    n_box.fill("5000")
    n_box.press("Tab")
    _status(page, "the first 100 are shown")
    wanted = segment(index, chosen, 5000).rows
    shown = _shown_rows(page)  # the table renders the rows in view, not all 100
    assert [r[1] for r in shown] == wanted["user_id"].head(len(shown)).to_list()
    with page.expect_download(timeout=STEP_TIMEOUT_MS) as download:
        page.locator("#download-audience").click()
    deep = pl.read_csv(download.value.path(), schema_overrides={"user_id": pl.String})
    assert deep["user_id"].to_list() == wanted["user_id"].to_list()
    assert deep["score"].to_list() == pytest.approx(wanted["score"].to_list(), rel=1e-12)
    _shot(page, "02b_segment_5000")

    # sample size: the page's numbers are audience.experiments.abtest's
    page.get_by_role("tab", name="Campaign", exact=True).click()
    page.locator("#baseline input").fill("3")
    page.locator("#lift input").fill("15")
    page.locator("#size-button").click()
    result = page.locator("#size-result")
    result.get_by_text("You need").wait_for()
    size = abtest.sample_size(0.03, abtest.target_rate(0.03, 0.15), alpha=0.05, power=0.8)
    text = result.inner_text()
    assert f"You need {size.n_control:,} users in the control group" in text
    assert f"{size.n_treatment:,} in the treatment group ({size.total:,} in all)" in text
    page.locator("#power-curve img").wait_for()

    # a finished test's result: the page's verdict and p-value are audience.experiments.abtest's
    page.locator("#test-button").click()
    verdict = page.locator("#test-result")
    verdict.get_by_text("p = ").wait_for()
    compared = abtest.compare(48, 2400, 70, 2400)
    assert f"p = {compared.p_value:.4g}" in verdict.inner_text()
    assert ("not significant" in verdict.inner_text()) is not compared.significant

    # plan the campaign on the audience shown, with both groups as CSV
    page.locator("#plan-button").click()
    page.locator("#plan-result").get_by_text("expected ROI").wait_for()
    with page.expect_download(timeout=STEP_TIMEOUT_MS) as download:
        page.locator("#download-groups").click()
    groups = pl.read_csv(download.value.path(), schema_overrides={"user_id": pl.String})
    assert sorted(groups["user_id"]) == sorted(wanted["user_id"])  # planned on the segment
    assert set(groups["group"]) <= {"treatment", "control"}
    _shot(page, "03_campaign")


def test_merchant_sees_plain_errors(page: Any, index: Index) -> None:
    page.locator("#search-query textarea").fill("no such thing at all")
    page.locator("#search-button").click()
    _status(page, "No product matches")
    assert _shown_rows(page) == []

    page.locator("#product input").fill("NOT-A-PRODUCT")
    page.locator("#product input").press("Enter")
    page.locator("#show-audience").click()
    status = _status(page, "Unknown product")
    assert "Traceback" not in page.content() and "Error" not in status
    assert _shown_rows(page) == []
    _shot(page, "04_unknown_product")

    # a new product: named similar products give a lookalike audience
    page.get_by_text("New product without history?").click()
    similar = index.sample(2, seed=3)
    page.locator("#like textarea").fill(", ".join(similar))
    page.locator("#like textarea").press("Enter")
    _status(page, "Strategy: lookalike")
    assert len(_wait_rows(page, 10)) == 10
    _shot(page, "05_new_product_lookalike")


def test_insights_show_results_and_model_age(page: Any, index: Index) -> None:
    page.get_by_role("tab", name="Insights").click()
    model = page.locator("#insights-model")
    model.get_by_text(index.version).wait_for()
    assert "ago" in model.inner_text()
    for name in ("activity", "retention", "cf_baselines", "lift"):
        if (RESULTS / "charts" / f"{name}.png").is_file():
            page.locator(f"#chart-{name} img").wait_for()
        else:
            page.get_by_text(f"{name}.png is not there yet").wait_for()
    assert "Analysis verdict" in page.locator("#insights-verdict").inner_text()
    if (RESULTS / "model_metrics.json").is_file():
        page.locator("#insights-backtest").get_by_text("the best audiences come from").wait_for()
    _shot(page, "06_insights")


def test_ui_says_not_ready_without_a_model(browser: Any, tmp_path: Path) -> None:
    server = _start(tmp_path / "no-artifact", tmp_path / "server.log", use_api=False)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    try:
        _wait_ready(server)
        tab = context.new_page()
        tab.goto(server.base)
        tab.locator("#model-header").get_by_text("not ready yet").wait_for()
        tab.locator("#search-query textarea").fill("speaker")
        tab.locator("#search-button").click()
        _status(tab, "not ready yet")
        assert "Traceback" not in tab.content()
        _shot(tab, "07_not_ready")
    finally:
        context.close()
        _stop(server.process)


def test_campaign_log_errors_are_messages(tmp_path: Path) -> None:
    from audience.serving import ui

    with pytest.raises(ui._MessageError, match="Type the path"):
        ui.read_log("  ")
    with pytest.raises(AudienceError, match="no such file"):
        ui.read_log(str(tmp_path / "missing.parquet"))
    (tmp_path / "events.csv").write_text("user_id,product_id\n1,2\n")
    with pytest.raises(ui._MessageError, match="not a Parquet event table"):
        ui.read_log(str(tmp_path / "events.csv"))
    with pytest.raises(ui._MessageError, match="Show an audience"):
        store = Store.open(f"sqlite:///{tmp_path}/store.db", tmp_path)
        ui.create_campaign(None, store, Settings(), None, campaigns.Plan("x"))  # type: ignore[arg-type]


def _campaign_row(page: Any, campaign_id: str, contains: str) -> list[str]:
    """The campaign's row of the list, once it shows `contains`."""
    row = page.locator("#campaigns-table [role=row]", has_text=campaign_id)
    row.get_by_text(contains).first.wait_for()
    return [c.strip() for c in row.first.locator("[role=gridcell], td").all_inner_texts()]


def test_merchant_creates_launches_and_judges_a_campaign(
    page: Any, server: Server, index: Index, artifact_root: Path, tmp_path: Path
) -> None:
    store = Store.open(server.database, artifact_root)
    campaigns_tab = page.get_by_role("tab", name="Campaigns", exact=True)
    status = page.locator("#campaigns-status")

    # no audience shown yet: a message, not a campaign
    campaigns_tab.click()
    page.locator("#create-campaign").click()
    status.get_by_text("Show an audience on the Audience tab first").wait_for()

    # show a 2,000-shopper segment on the Audience tab, then make it a campaign
    pid, size = index.sample(1, seed=4)[0], 2000
    page.get_by_role("tab", name="Audience", exact=True).click()
    page.locator("#product input").fill(pid)
    page.locator("#product input").press("Enter")
    page.locator("#n input[type=number]").fill(str(size))
    page.locator("#show-audience").click()
    _status(page, f"{size:,} shoppers for product {pid}")
    campaigns_tab.click()
    page.locator("#campaign-source").get_by_text(f"{size:,} shoppers").wait_for()
    page.locator("#campaign-name textarea").fill("ui spring test")
    page.locator("#create-campaign").click()
    status.get_by_text("Created campaign").wait_for()
    made = store.campaigns()[0]
    assert made.name == "ui spring test" and made.product_id == pid
    assert made.treatment + made.holdout == size and made.spec["holdout_share"] == 0.5
    assert made.spec["strategy"] == "personalized" and made.spec["conversion"] == "purchased"
    assert made.spec["fatigue"]["max_contacts"] == Settings().max_contacts
    row = _campaign_row(page, made.id, "created")
    assert row[:6] == [made.id, made.name, pid, "created", str(made.treatment), str(made.holdout)]

    # launch it: its treatment arm is recorded as contacted
    page.locator("#launch-campaign").click()
    status.get_by_text(f"Launched {made.id}").wait_for()
    assert _campaign_row(page, made.id, "launched")[3] == "launched"
    assert store.campaign(made.id).state == "launched"
    assert store.contacts(made.id) == made.treatment

    # judge it from a simulated log after the launch, typed in as a path
    log = tmp_path / "after_launch.parquet"
    campaigns.simulate(
        store, made.id, baseline=0.05, lift=0.2, seed=0, background=500
    ).write_parquet(log)
    page.locator("#campaign-log textarea").fill(str(log))
    page.locator("#run-report").click()
    report = page.locator("#campaign-report")
    report.get_by_text("Verdict:").wait_for()
    stored = store.campaign(made.id).report
    assert stored is not None
    assert stored["verdict"] in report.inner_text()
    assert report.locator("table").count() == 2  # the arms, and the effect and money
    page.locator("#campaign-chart img").wait_for()
    _campaign_row(page, made.id, stored["verdict"][:30])
    assert "Traceback" not in page.content()
    _shot(page, "08_campaigns")

    # a fresh page shows the stored report of the campaign chosen in the list
    page.reload()
    page.get_by_role("tab", name="Campaigns", exact=True).click()
    _campaign_row(page, made.id, "launched")
    page.locator("#show-report").click()
    report.get_by_text("Verdict:").wait_for()
    assert stored["verdict"] in report.inner_text()
    page.locator("#campaign-chart img").wait_for()
