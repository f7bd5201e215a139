"""The backtest's metrics on a log small enough to work out by hand, and `audience evaluate`."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import beta

from audience.data.schema import DEFAULT_EVENT_WEIGHTS, EVENT_SCHEMA, PRODUCT, USER
from audience.errors import ConfigError
from audience.evidence.baselines import first_allowed, random, ranked
from audience.evidence.evaluate import (
    ModelScores,
    activity_targeting,
    audience_ranking,
    backtest,
    ceiling,
    concentration,
    favoured,
    one_percent,
    parse_cutoff,
    random_expected,
    split,
)
from audience.model.cf import Task
from audience.model.quality import Truth, per_product
from tests.cli.test_cli import run
from tests.data.test_ingest import SEED_HEADER
from tests.model.test_repeat import refill_log

DAY0 = datetime(2022, 10, 1, 12, tzinfo=UTC)
CUTOFF = DAY0 + timedelta(days=10)
D = 1 / math.log2(3)  # the NDCG discount of the second rank

# Users a..e are known at the cutoff (day 10); products p1..p4 are known.
#   a: p1, p2, p3 (3 events)   b: p1, p2 (2)   d: p2, p2 (2)   c: p3 (1)   e: p4 (1)
# Popularity (most events, ties by user_id): a, b, d, c, e.
EARLY = [
    ("a", "p1", 0),
    ("a", "p2", 1),
    ("a", "p3", 2),
    ("b", "p1", 3),
    ("b", "p2", 4),
    ("c", "p3", 5),
    ("d", "p2", 6),
    ("d", "p2", 8),
    ("e", "p4", 7),
]
# After the cutoff (7 events):
LATE = [
    ("a", "p4", 10),  # relevant: a is known and new to p4
    ("b", "p3", 11),  # relevant
    ("c", "p1", 12),  # relevant
    ("c", "p4", 12),  # relevant
    ("e", "p4", 13),  # e touched p4 before the cutoff: excluded, not relevant
    ("f", "p1", 14),  # f is unknown at the cutoff: not a candidate
    ("a", "p5", 15),  # p5 is unknown at the cutoff: no history model can rank it
]
# Task rows (products with a relevant known user): p1 -> {c}, p3 -> {b}, p4 -> {a, c}.
# Excluded: p1 -> {a, b}; p3 -> {a, c}; p4 -> {e}. Allowed candidates: 3, 3, 4.
# Candidates: 5 users, so the 1% audience is ceil(0.05) = 1 user deep.


def log(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(u, p, "cart", DAY0 + timedelta(days=d)) for u, p, d in rows],
        schema=EVENT_SCHEMA,
        orient="row",
    )


@pytest.fixture
def task() -> Task:
    early, late, _ = split(log(EARLY + LATE), CUTOFF)
    return Task(early, late, DEFAULT_EVENT_WEIGHTS)


def test_split_at_a_given_cutoff_and_the_ceilings() -> None:
    early, late, cutoff = split(log(EARLY + LATE), CUTOFF)
    assert (early.height, late.height, cutoff) == (9, 7, CUTOFF)
    # 6 of the 7 late events are by known users (all but f); 5 are by a known user on a
    # known product (not f's, not a's on p5).
    assert ceiling(early, late) == {"known_users": 6 / 7, "known_pairs": 5 / 7}
    with pytest.raises(ConfigError, match="no events on one side"):
        split(log(EARLY), CUTOFF)


def test_parse_cutoff_reads_dates_as_utc_and_rejects_nonsense() -> None:
    assert parse_cutoff("2022-10-11") == datetime(2022, 10, 11, tzinfo=UTC)
    assert parse_cutoff("2022-10-11T02:00:00+02:00") == datetime(2022, 10, 11, tzinfo=UTC)
    with pytest.raises(ConfigError, match="--cutoff"):
        parse_cutoff("next tuesday")


def test_task_as_worked_out(task: Task) -> None:
    assert task.index.users.to_list() == ["a", "b", "c", "d", "e"]
    assert task.rows.tolist() == [0, 2, 3]  # p1, p3, p4
    assert task.truth.counts.tolist() == [1, 1, 2]
    assert task.activity.tolist() == [3, 2, 1, 2, 1]
    assert one_percent(task.n_users) == 1
    assert one_percent(337_121) == 3372


def test_global_ranking_strikes_out_each_rows_exclusions(task: Task) -> None:
    # Global order a, b, d, c, e. p1 drops a, b; p3 drops a, c; p4 drops e.
    ranking = ranked(task.activity.astype(float), task.excluded, 3, k=2)
    assert ranking.tolist() == [[3, 2], [1, 3], [0, 1]]
    short = ranked(task.activity.astype(float), task.excluded, 3, k=4)
    assert short.tolist() == [[3, 2, 4, -1], [1, 3, 4, -1], [0, 1, 3, 2]]


def test_global_ranking_matches_first_allowed_on_the_global_order() -> None:
    rng = np.random.default_rng(7)
    n_users, n_rows = 50, 30
    activity = rng.integers(0, 5, n_users)
    excluded = np.unique(rng.integers(0, n_rows * n_users, 400)).astype(np.int64)
    order = np.lexsort((np.arange(n_users), -activity)).astype(np.int64)
    candidates = np.broadcast_to(order, (n_rows, n_users))
    for k in (1, 5, 20):
        expected = first_allowed(candidates, excluded, n_users, k)
        assert ranked(activity.astype(float), excluded, n_rows, k).tolist() == (expected.tolist())


def test_random_expectation_by_hand() -> None:
    relevant, allowed = np.array([1, 1, 2, 0]), np.array([3, 3, 4, 9])
    m = random_expected(relevant, allowed, (1, 2))
    # A row without a relevant user is dropped, as in quality.per_product.
    # k = 2, p1 (A=3, T=1): 2 of 3 allowed users drawn, each relevant w.p. 1/3:
    # E[hits] = 2/3, precision 1/3, recall 2/3, E[DCG] = (1 + D) / 3 over ideal 1,
    # P(no hit) = C(2, 2) / C(3, 2) = 1/3. p4 (A=4, T=2): E[hits] = 1, precision 1/2,
    # recall 1/2, NDCG (1 + D) / 2 / (1 + D) = 1/2, P(no hit) = C(2, 2) / C(4, 2) = 1/6.
    assert m["precision@2"].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 2])
    assert m["recall@2"].tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 2])
    assert m["ndcg@2"].tolist() == pytest.approx([(1 + D) / 3, (1 + D) / 3, 1 / 2])
    assert m["hit_rate@2"].tolist() == pytest.approx([2 / 3, 2 / 3, 5 / 6])
    # k = 1: hits = T / A.
    assert m["precision@1"].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 2])
    assert m["recall@1"].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 4])
    # More depth than candidates: everyone is drawn, a hit is certain.
    full = random_expected(np.array([2]), np.array([3]), (5,))
    assert full["hit_rate@5"].tolist() == [1.0]
    assert full["precision@5"].tolist() == pytest.approx([2 / 5])


def test_random_expectation_agrees_with_random_draws() -> None:
    n_users, n_rows, k = 12, 6, 3
    rng = np.random.default_rng(0)
    excluded = np.unique(rng.integers(0, n_rows * n_users, 20)).astype(np.int64)
    rows, users = excluded // n_users, excluded % n_users
    pairs = [
        (r, u)
        for r in range(n_rows)
        for u in range(n_users)
        if (r, u) not in set(zip(rows, users, strict=True))
    ]
    chosen = [pairs[i] for i in rng.choice(len(pairs), 15, replace=False)]
    truth = Truth.from_pairs(
        np.array([p for p, _ in chosen]), np.array([u for _, u in chosen]), n_rows, n_users
    )
    allowed = n_users - np.bincount(rows, minlength=n_rows)
    expected = random_expected(truth.counts, allowed, (k,))
    draws = [per_product(random(n_users, excluded, n_rows, k, s), truth, (k,)) for s in range(4000)]
    for name, values in expected.items():  # 4 standard errors of a mean of 4000 draws
        simulated = np.mean([d[name] for d in draws], axis=0)
        assert simulated == pytest.approx(values, abs=0.03), name


def test_one_percent_hits_recall_concentration_and_lifts(task: Task) -> None:
    scores = ModelScores(task, n=2, seed=0)
    scores.add_random()
    scores.add_global("popularity", task.activity.astype(float))
    # Popularity, top 2: p1 -> d, c (hit at rank 2); p3 -> b, d (hit at rank 1);
    # p4 -> a, b (hit at rank 1, c missed).
    pop = scores.per["popularity"]
    assert pop["precision@2"].tolist() == [1 / 2, 1 / 2, 1 / 2]
    assert pop["recall@2"].tolist() == [1, 1, 1 / 2]
    assert pop["ndcg@2"].tolist() == pytest.approx([D, 1, 1 / (1 + D)])
    # The 1% audience is the top 1 user: p1 -> d (miss), p3 -> b (hit), p4 -> a (hit).
    # hits@1% = mean(0, 1, 1) = 2/3; recall@1% = mean(0, 1, 1/2) = 1/2.
    assert scores.per_1["popularity"]["hits@1%"].tolist() == [0, 1, 1]
    assert scores.per_1["popularity"]["recall@1%"].tolist() == [0, 1, 1 / 2]
    # Random at depth 1: hits = recall x T = T / A: 1/3, 1/3, 2/4; recall 1/3, 1/3, 1/4.
    # Means 7/18 and 11/36, so the lifts are (2/3) / (7/18) = 12/7 and (1/2) / (11/36) = 18/11.
    summary = scores.summary()
    one = summary["popularity"]["one_percent"]
    assert one["metrics"]["hits@1%"]["mean"] == pytest.approx(2 / 3)
    assert one["metrics"]["recall@1%"]["mean"] == pytest.approx(1 / 2)
    assert one["lift_over_random"]["hits@1%"]["lift"] == pytest.approx(12 / 7)
    assert one["lift_over_random"]["recall@1%"]["lift"] == pytest.approx(18 / 11)
    # Random precision@2 means (1/3 + 1/3 + 1/2) / 3 = 7/18: popularity's lift is 9/7.
    lift = summary["popularity"]["lift_over_random"]["precision@2"]
    assert lift["lift"] == pytest.approx(9 / 7)
    assert lift["ci95_low"] <= lift["lift"] <= lift["ci95_high"]
    # Slots: d 2 (p1, p3), b 2 (p3, p4), c 1, a 1 = 6; the top 1% (1 user) holds 2 of them.
    assert summary["popularity"]["concentration"] == pytest.approx(1 / 3)
    assert summary["popularity"]["user_coverage"] == pytest.approx(4 / 5)


def test_concentration_by_hand() -> None:
    # 200 candidates -> the top 1% is 2 users. Slots: user 0 x3, user 1 x2, users 2-4 x1.
    ranking = np.array([[0, 1, 2], [0, 1, 3], [0, 4, -1]], dtype=np.int64)
    assert concentration(ranking, 200) == pytest.approx(5 / 8)
    assert concentration(np.full((2, 2), -1, dtype=np.int64), 200) == 0.0


def test_activity_precision_lift_and_base_rate(task: Task) -> None:
    # Known users a, b, c, d, e; all but d have a post-cutoff event: base rate 4/5.
    active = np.array([True, True, True, False, True])
    result = activity_targeting({"popularity": task.activity.astype(float)}, active, (1, 3), 0)
    assert result["base_rate"]["mean"] == pytest.approx(4 / 5)
    # Clopper-Pearson for 4 of 5: Beta(0.025; 4, 2) and Beta(0.975; 5, 1).
    assert result["base_rate"]["ci95_low"] == pytest.approx(beta.ppf(0.025, 4, 2))
    assert result["base_rate"]["ci95_high"] == pytest.approx(beta.ppf(0.975, 5, 1))
    pop = result["models"]["popularity"]
    # Top 1 = a (active): precision 1, lift 1 / 0.8. Top 3 = a, b, d: 2/3, lift 5/6.
    assert pop["@1"]["precision"]["mean"] == 1.0
    assert pop["@1"]["lift"]["lift"] == pytest.approx(5 / 4)
    assert pop["@3"]["precision"]["mean"] == pytest.approx(2 / 3)
    assert pop["@3"]["lift"]["lift"] == pytest.approx(5 / 6)
    assert pop["@3"]["lift"]["ci95_low"] <= 5 / 6 <= pop["@3"]["lift"]["ci95_high"]
    assert result["models"]["random"]["@3"]["lift"]["lift"] == 1.0


def test_audience_rows_map_to_task_codes(task: Task) -> None:
    built = pl.DataFrame(
        {
            PRODUCT: ["p1", "p1", "p2", "p4", "p4", "p4"],
            "rank": [1, 2, 1, 1, 2, 3],
            USER: ["c", "zz", "a", "b", "d", "a"],
        }
    )
    # p2 is not a task row; user zz is unknown (its slot stays empty); rank 3 is past n = 2.
    assert audience_ranking(built, task, 2).tolist() == [[2, -1], [-1, -1], [1, 3]]


def test_favoured_names_the_best_mean_and_its_paired_gain() -> None:
    per = {
        "x": {"ndcg@2": np.array([0.5, 0.4, 0.6])},
        "y": {"ndcg@2": np.array([0.1, 0.2, 0.1])},
        "z": {"ndcg@2": np.array([0.0, 0.0, 0.0])},
    }
    best = favoured(per, "ndcg@2", ("y", "x", "missing"), 0)
    assert [o["model"] for o in best["order"]] == ["x", "y"]
    assert best["best"] == "x" and best["runner_up"] == "y"
    assert best["gain_over_runner_up"]["mean"] == pytest.approx((1.5 - 0.4) / 3)
    assert best["clear"] is True


def test_evaluate_writes_results_and_json(tmp_path: Path) -> None:
    done = run("evaluate", "--scale", "0.05", "--activity-n", "10,100", "--out", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for name in ("model_metrics.json", "model_metrics.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "charts" / "lift.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "model_metrics.json").read_text())
    assert saved["command"].startswith("audience evaluate")
    assert saved["input"]["generated"] == {"preset": "marketplace", "scale": 0.05, "seed": 0}
    assert saved["config"]["activity_n"] == [10, 100]
    models = result["task_a"]["models"]
    assert set(models) == {
        "random",
        "popularity",
        "seed",
        "fitted",
        "audiences_seed",
        "audiences_seed_no_affinity",
        "audiences_fitted",
        "audiences_fitted_no_affinity",
        "audiences_hybrid",
        "als",
    }
    for entry in models.values():
        assert set(entry["metrics"]) == {"precision@10", "recall@10", "ndcg@10", "hit_rate@10"}
        assert {"lift_over_random", "user_coverage", "concentration"} <= set(entry)
    assert set(models["als"]["one_percent"]["metrics"]) == {"hits@1%", "recall@1%"}
    # The audiences are ranked to the 1% depth as segments are: on every evaluated product
    # here (fewer than the sample's 2,000), so the deeper list finds at least as much.
    assert (
        result["task_a"]["setup"]["one_percent"]["products"]
        == result["task_a"]["setup"]["evaluated_products"]
    )
    for name in ("audiences_seed", "audiences_fitted"):
        deep, top = models[name]["one_percent"]["metrics"], models[name]["metrics"]
        assert deep["recall@1%"]["mean"] >= top["recall@10"]["mean"] > 0
        assert deep["hits@1%"]["mean"] >= top["hit_rate@10"]["mean"]
    # Without affinity, an audience is the engagement ranking minus exclusions.
    assert models["audiences_seed_no_affinity"]["metrics"] == models["seed"]["metrics"]
    assert set(result["task_b"]["models"]["fitted"]) == {"@10", "@100"}
    assert 0 < result["ceiling"]["known_pairs"] <= result["ceiling"]["known_users"] <= 1
    assert result["favoured"]["train_default"]["best"] in {
        "audiences_seed",
        "audiences_fitted",
        "audiences_hybrid",
    }
    # The hybrid against ALS and the fitted audiences, product by product.
    differences = result["task_a"]["hybrid_differences"]
    assert set(differences) == {"audiences_hybrid - als", "audiences_hybrid - audiences_fitted"}
    for d in differences.values():
        assert d["ci95_low"] <= d["mean"] <= d["ci95_high"] and d["metric"] == "ndcg@10"
    term = models["audiences_hybrid"]["collaborative_term"]
    assert term["als"] == result["task_a"]["als_tuning"]["chosen"]  # tuned once, for both
    if term["weight"] == 0:  # the term did not help on the slice: the plain lists
        assert models["audiences_hybrid"]["metrics"] == models["audiences_fitted"]["metrics"]
    assert "tuning ALS" in done.stderr and "building product audiences" in done.stderr
    assert "The collaborative term" in (tmp_path / "model_metrics.md").read_text()


def test_evaluate_rejects_a_cutoff_outside_the_log(tmp_path: Path) -> None:
    done = run("evaluate", "--scale", "0.02", "--cutoff", "2030-01-01", "--out", tmp_path)
    assert done.returncode == 2
    assert "--cutoff" in done.stderr and "Traceback" not in done.stderr


def test_a_one_product_shop_goes_through_ingest_analyze_and_evaluate(tmp_path: Path) -> None:
    """Regression (issue 21): a log with one product made evaluate exit with "no product has
    a relevant known user" before judging activity, and analyze print NaN for ALS."""
    rng = np.random.default_rng(0)
    lines = [SEED_HEADER.strip()]
    for u in range(400):
        for day in np.sort(rng.uniform(0, 180, rng.integers(1, 5))):
            when = (DAY0 + timedelta(days=float(day))).isoformat()
            lines.append(f"c{u:03d},COFFEE,Coffee 1kg,purchased,{when}")
    (tmp_path / "shop.csv").write_text("\n".join(lines) + "\n")
    assert run("ingest", tmp_path / "shop.csv", "--out", tmp_path / "log").returncode == 0

    analyzed = run("analyze", tmp_path / "log", "--out", tmp_path / "analysis", "--json")
    assert analyzed.returncode == 0, analyzed.stderr
    analysis = json.loads(analyzed.stdout)
    assert "no product has a relevant user" in analysis["cf"]["skipped"]
    assert analysis["verdict"]["tested"] is False and analysis["verdict"]["viable"] is False
    assert analysis["verdict"]["summary"].startswith("CF could not be tested on this log")
    assert "ALS baseline not run" in (tmp_path / "analysis" / "analysis.md").read_text()
    assert not (tmp_path / "analysis" / "charts" / "cf_baselines.png").exists()

    evaluated = run("evaluate", tmp_path / "log", "--out", tmp_path / "backtest", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert "repeats" in result["task_a"]["skipped"] and "models" not in result["task_a"]
    fitted = result["task_b"]["models"]["fitted"]["@100"]["precision"]
    assert 0 < fitted["mean"] <= 1  # the other task was judged
    assert result["favoured"]["overall"]["best"] is None
    report = (tmp_path / "backtest" / "model_metrics.md").read_text()
    assert "Not judged: no product has a relevant user" in report

    repeated = run("evaluate", tmp_path / "log", "--repeat", "--out", tmp_path / "r", "--json")
    assert repeated.returncode == 0, repeated.stderr
    setup = json.loads(repeated.stdout)["task_a"]["setup"]
    assert setup["mode"] == "repeat" and setup["evaluated_products"] == 1


def test_repeat_mode_backtest_counts_refills_and_its_audiences_find_them() -> None:
    events, catalog = refill_log()
    default = backtest(events, catalog, DEFAULT_EVENT_WEIGHTS, activity_ns=(100,))
    assert "repeats" in default["task_a"]["skipped"]  # every later purchase is a refill
    repeat = backtest(events, catalog, DEFAULT_EVENT_WEIGHTS, activity_ns=(100,), repeat=True)
    models = repeat["task_a"]["models"]
    lift = models["audiences_fitted"]["lift_over_random"]["ndcg@10"]
    assert lift["ci95_low"] > 5  # the due buyers, far above a random past or new buyer
    # Engagement alone (no product evidence) does not know who is due for this product.
    alone = models["audiences_fitted_no_affinity"]["metrics"]["ndcg@10"]["mean"]
    assert models["audiences_fitted"]["metrics"]["ndcg@10"]["ci95_low"] > alone
    # Today's default mode, judged on the same task, excludes the very buyers who return.
    assert models["audiences_fitted_no_repeat"]["metrics"]["ndcg@10"]["mean"] == 0
    assert repeat["favoured"]["train_default"]["best"] in {"audiences_seed", "audiences_fitted"}
    assert "repeat mode" in models["audiences_hybrid"]["skipped"]
