"""The `audience` command as a user runs it: exit codes, one-line errors, --json output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from audience import artifact
from audience_cli.commands import settings_for
from audience_cli.main import parser
from tests.data.test_ingest import (
    BAD_FILES,
    BAD_ROWS,
    RATINGS,
    SEED_HEADER,
    bad_file,
    ratings_1990s,
)

AUDIENCE = str(Path(sys.executable).with_name("audience"))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUDIENCE, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def test_ingest_json_is_one_object(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(SEED_HEADER + "c1,p1,X,cart,2022-10-01\n")
    done = run("ingest", tmp_path / "log.csv", "--out", tmp_path / "out", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events"] == 1
    assert summary["outputs"]["events"] == str(tmp_path / "out" / "events.parquet")


def test_ingest_human_summary(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(SEED_HEADER + BAD_ROWS)
    done = run("ingest", tmp_path / "log.csv", "--out", tmp_path / "out", "--max-reject-share", "1")
    assert done.returncode == 0, done.stderr
    assert "rejected:    9 (75.00%; limit 100.00%)" in done.stdout
    assert "unknown event types: 'view' x1" in done.stdout


@pytest.mark.parametrize(("kind", "message"), BAD_FILES.items())
def test_bad_files_exit_2_with_one_line(tmp_path: Path, kind: str, message: str) -> None:
    done = run("ingest", bad_file(tmp_path, kind), "--out", tmp_path / "out")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_parameter_exits_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(SEED_HEADER + "c1,p1,X,cart,2022-10-01\n")
    done = run("ingest", tmp_path / "log.csv", "--out", tmp_path / "o", "--columns", "shop=x")
    assert done.returncode == 2
    assert done.stderr.startswith("audience ingest: error: --columns: unknown role 'shop'")


def test_reject_limit_exits_1_and_reports_in_json(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(SEED_HEADER + BAD_ROWS)
    done = run("ingest", tmp_path / "log.csv", "--out", tmp_path / "out", "--json")
    assert done.returncode == 1
    assert "9 of 12 rows rejected" in done.stderr
    error = json.loads(done.stdout)
    assert error["type"] == "RejectLimitError"
    assert error["summary"]["rejected"] == 9
    assert not (tmp_path / "out" / "events.parquet").exists()


@pytest.mark.parametrize(("preset", "viable"), [("loyal", True), ("marketplace", False)])
def test_analyze_writes_every_output_and_the_verdict_follows_the_preset(
    tmp_path: Path, preset: str, viable: bool
) -> None:
    done = run("analyze", "--preset", preset, "--scale", "0.05", "--out", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["verdict"]["viable"] is viable
    for name in ("data_statistics.json", "cf_metrics.json", "analysis.md"):
        assert (tmp_path / name).stat().st_size > 0
    for chart in ("activity", "retention", "cf_baselines"):
        assert (tmp_path / "charts" / f"{chart}.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "cf_metrics.json").read_text())
    assert saved["input"]["generated"] == {"preset": preset, "scale": 0.05, "seed": 0}
    assert saved["command"].startswith("audience analyze")
    assert "tuning ALS" in done.stderr  # progress for the slow steps


def test_analyze_reads_a_raw_log_with_its_column_mapping(tmp_path: Path) -> None:
    rows = "".join(
        f"v{u},i{p},{kind},{1_664_582_400_000 + 86_400_000 * (u + p)}\n"
        for u in range(30)
        for p in range(u % 4, u % 4 + 3)
        for kind in ("view", "addtocart")
    )
    (tmp_path / "log.csv").write_text("visitor,item,action,ts\n" + rows)
    done = run(
        "analyze",
        tmp_path / "log.csv",
        "--columns",
        "user=visitor,product=item,event=action,time=ts",
        "--events",
        "view=search_keyword,addtocart=cart",
        "--out",
        tmp_path / "results",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["statistics"]["events"] == 180
    assert result["input"]["ingest"]["rejected"] == 0


def test_train_publishes_a_version_and_a_failed_train_keeps_it(tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    done = run("train", "--scale", "0.02", "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (out / "current").read_text().strip() == result["version"]
    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    assert manifest["config"]["model"] == "fitted" and manifest["config"]["n"] == 10
    assert manifest["input"]["generated"]["scale"] == 0.02
    # Rows counts every product's list; a list equal to its category's is stored once.
    tables = artifact.load(out).tables
    heads = tables["category_audiences"].group_by("category").len()
    shared = tables["products"].join(heads, left_on="audience_category", right_on="category")
    stored = manifest["files"]["audiences.parquet"]["rows"]
    assert result["stats"]["rows"] == stored + shared.get_column("len").sum() > stored
    assert "building audiences" in done.stderr

    failed = run("train", "--scale", "0.02", "--out", out, "--exclude", "view")
    assert failed.returncode == 2
    message = "audience train: error: exclude: unknown event types ['view']; known: ["
    assert failed.stderr.startswith(message)
    assert (out / "current").read_text().strip() == result["version"]


def test_train_human_summary_reports_overlap_and_distinct_users(tmp_path: Path) -> None:
    done = run("train", "--scale", "0.02", "--out", tmp_path, "--cap", "3", "--n", "5")
    assert done.returncode == 0, done.stderr
    assert "distinct users:" in done.stdout
    assert "overlap (other category): mean Jaccard" in done.stdout


def test_abtest_plan_draws_a_products_audience_from_the_model(tmp_path: Path) -> None:
    assert run("train", "--scale", "0.02", "--out", tmp_path / "art").returncode == 0
    product = "P0664"  # has interactions in the scale-0.02 sample
    args = ["--experiment-id", "x", "--baseline", "0.02", "--lift", "0.3"]
    args += ["--cost-per-contact", "0.05", "--value-per-conversion", "40"]
    done = run("abtest", "plan", "--product", product, "--artifact", tmp_path / "art", *args,
               "--out", tmp_path / "plan.csv", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    groups = (tmp_path / "plan.csv").read_text().splitlines()
    assert groups[0] == "user_id,group,rank" and len(groups) == 11  # the stored N = 10
    both = run("abtest", "plan", "--product", product, "--users", tmp_path / "plan.csv", *args)
    assert both.returncode == 2 and "--users/--product" in both.stderr


RATING_FLAGS = ["--columns", RATINGS["columns"], "--events", RATINGS["events"]]


def test_a_1990s_ratings_log_goes_through_ingest_analyze_evaluate_and_train(
    tmp_path: Path,
) -> None:
    """Issue #21: a MovieLens-100k-shaped log of 1997-98 was rejected whole."""
    log = ratings_1990s(tmp_path / "ratings.csv")
    done = run("ingest", log, "--out", tmp_path / "data", *RATING_FLAGS, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rejected"] == 0 and summary["first_event"].startswith("1997-09")
    assert summary["event_time"]["read_as"] == {"epoch seconds": summary["rows_read"]}

    results = tmp_path / "results"
    analyzed = run("analyze", log, "--out", results, *RATING_FLAGS, "--json")
    assert analyzed.returncode == 0, analyzed.stderr
    analysis = json.loads(analyzed.stdout)
    assert analysis["input"]["ingest"]["rejected"] == 0
    assert analysis["statistics"]["events"] == summary["events"]
    assert analysis["verdict"]["summary"]

    evaluated = run("evaluate", log, "--out", results, *RATING_FLAGS, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    backtest = json.loads(evaluated.stdout)
    assert backtest["input"]["ingest"]["rejected"] == 0
    assert backtest["split"]["cutoff"].startswith("1998-")
    assert (results / "model_metrics.md").stat().st_size > 0

    trained = run("train", tmp_path / "data", "--out", tmp_path / "artifacts", "--json")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["stats"]


def test_time_flags_beat_the_environment_and_a_failure_names_them(tmp_path: Path) -> None:
    log = ratings_1990s(tmp_path / "ratings.csv", rows=20_000)
    env = os.environ | {"AUDIENCE_EARLIEST_EVENT_TIME": "2000-01-01"}

    def audience(*args: str | Path) -> subprocess.CompletedProcess[str]:
        argv = [AUDIENCE, *map(str, args), *RATING_FLAGS]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)

    for command in ("ingest", "analyze", "evaluate"):  # train reads the flags the same way
        failed = audience(command, log, "--out", tmp_path / command)
        assert failed.returncode == 1, (command, failed.stderr)
        line = failed.stderr.splitlines()[-1]  # after the progress lines
        assert f"audience {command}: error: {log}: 20,000 of 20,000 rows rejected" in line
        assert "by one check, 'event_time before 2000-01-01': those values, read as epoch " in line
        assert "seconds (20,000 rows), are from 1997-09-" in line
        assert "(--earliest-time, or AUDIENCE_EARLIEST_EVENT_TIME)" in line
        assert "(--future-tolerance, or AUDIENCE_FUTURE_TOLERANCE)" in line
        assert "lower the floor: --earliest-time 1997-09-" in line
        kept = line.split("Rejected rows: ")[1].split(".parquet")[0] + ".parquet"
        assert pl.read_parquet(kept).height == 20_000  # the file the error names is there

    failed = audience("ingest", log, "--out", tmp_path / "data", "--json")
    error = json.loads(failed.stdout)
    assert error["summary"]["rejects_by_reason"] == {"event_time before 2000-01-01": 20_000}
    assert error["summary"]["event_time"]["observed_range"][0].startswith("1997-09-")

    done = audience("ingest", log, "--out", tmp_path / "data", "--earliest-time", "1990-01-01")
    assert done.returncode == 0, done.stderr
    for command in ("ingest", "analyze", "train", "evaluate"):
        flags = ["--earliest-time", "1990-01-01", "--future-tolerance", "P2D"]
        settings = settings_for(parser().parse_args([command, "x", "--out", "o", *flags]))
        assert (settings.earliest_event_time.year, settings.future_tolerance.days) == (1990, 2)
    tolerance = audience("ingest", log, "--out", tmp_path / "o", "--future-tolerance=-P1D")
    assert tolerance.returncode == 2
    assert tolerance.stderr.startswith("audience ingest: error: --future-tolerance: ")
