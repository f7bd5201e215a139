"""Human-readable renderings of command results (the `--json` form is the result itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2%}" if abs(value) < 1 else f"{value:,.0f}"
    return str(value)


def table(rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def ingest_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"Ingested {summary['source']} ({len(summary['files'])} file(s))",
        f"  columns:     {', '.join(f'{k} <- {v}' for k, v in summary['columns'].items())}",
        f"  rows read:   {summary['rows_read']:,}",
        f"  events:      {summary['events']:,}  ({summary['users']:,} users, "
        f"{summary['products']:,} products)",
        f"  time span:   {summary['first_event']} .. {summary['last_event']}",
        f"  duplicates:  {summary['duplicates_removed']:,} removed",
        f"  rejected:    {summary['rejected']:,} ({summary['reject_share']:.2%}; "
        f"limit {summary['max_reject_share']:.2%})",
    ]
    lines += [
        f"    {count:>10,}  {reason}" for reason, count in summary["rejects_by_reason"].items()
    ]
    if summary["unknown_event_types"]:
        names = ", ".join(f"{k!r} x{v:,}" for k, v in summary["unknown_event_types"].items())
        lines.append(f"  unknown event types: {names} (map with --events NAME=TYPE)")
    lines.append(
        "  event mix:   " + ", ".join(f"{k} {v:,}" for k, v in summary["event_mix"].items())
    )
    lines += [f"  wrote {path}" for path in summary.get("outputs", {}).values()]
    return "\n".join(lines)


def comparison(rows: list[dict[str, Any]]) -> str:
    """The generated log's figures beside the reference's."""
    body = [["figure", "reference", "sample", "diff", ""]]
    for row in rows:
        body.append(
            [
                row["figure"],
                _number(row["reference"]),
                _number(row["sample"]),
                f"{row['rel_diff']:+.1%}",
                "ok" if row["within_tolerance"] else "OFF",
            ]
        )
    return table(body)


def stats_text(s: dict[str, Any]) -> str:
    """The summary statistics of a log (audience.data.stats.log_stats)."""
    if not s["events"]:
        return "The log is empty."
    split = s["split"]
    act = s["activity"]
    return "\n".join(
        [
            f"  events {s['events']:,}  users {s['users']:,}  products {s['products']:,}",
            f"  span   {s['first_event']} .. {s['last_event']}",
            "  mix    " + ", ".join(f"{k} {v:,}" for k, v in s["event_mix"].items()),
            f"  users by events: 1 {act['1']:.1%}, 2-5 {act['2-5']:.1%}, >5 {act['>5']:.1%}",
            f"  30-day retention {s['retention_30d']:.1%}",
            f"  80/20 split at {split['cut']}: early {split['early_events']:,} events / "
            f"{split['early_users']:,} users, "
            f"late {split['late_events']:,} / {split['late_users']:,}",
            f"    returning users {split['returning_users']:,} "
            f"({split['returning_share_of_early']:.1%} of early, "
            f"{split['returning_share_of_late']:.1%} of late); "
            f"new products in late part {split['new_product_share_late']:.1%}",
        ]
    )


CF_METRICS = ["precision@10", "recall@10", "ndcg@10", "hit_rate@10"]


def analysis_charts(result: dict[str, Any], out: Path) -> list[Path]:
    from audience.evidence import charts

    stats, cf = result["statistics"], result["cf"]
    drawn = [
        charts.activity(
            stats["activity_histogram"], out / "charts" / "activity.png", "Users by events"
        ),
        charts.retention(stats["retention"], out / "charts" / "retention.png", "Retention curve"),
    ]
    baselines = out / "charts" / "cf_baselines.png"
    if "skipped" in cf:
        baselines.unlink(missing_ok=True)  # an earlier run's chart would belie the skip
        return drawn
    title = "Product -> users on the late 20% (95% CI)"
    return [*drawn, charts.models(cf["models"], CF_METRICS, baselines, title)]


def _ci(m: dict[str, float], pct: bool = False) -> str:
    def f(v: float) -> str:
        return f"{100 * v:.2f}%" if pct else f"{v:.4f}"

    return f"{f(m['mean'])} [{f(m['ci95_low'])}, {f(m['ci95_high'])}]"


def _lift(x: dict[str, float | None]) -> str:
    if x["lift"] is None:
        return "n/a (baseline 0)"
    low = "?" if x["ci95_low"] is None else f"{x['ci95_low']:.2f}"
    high = "inf" if x["ci95_high"] is None else f"{x['ci95_high']:.2f}"
    return f"{x['lift']:.2f}x [{low}, {high}]"


def cf_table(cf: dict[str, Any]) -> str:
    if "skipped" in cf:
        return f"ALS baseline not run: {cf['skipped']}"
    rows = [["metric", *cf["models"], "ALS / random", "ALS / popularity"]]
    for metric in next(iter(cf["models"].values())):
        if metric == "user_coverage":
            continue
        rows.append(
            [metric]
            + [_ci(cf["models"][m][metric]) for m in cf["models"]]
            + [_lift(cf["lifts"][f"als_over_{b}"][metric]) for b in ("random", "popularity")]
        )
    rows.append(
        ["user_coverage"]
        + [f"{cf['models'][m]['user_coverage']:.2%}" for m in cf["models"]]
        + ["", ""]
    )
    return table(rows)


def _made_by(meta: dict[str, Any], *more: str) -> str:
    """The provenance line under a report's title: command, version, input (and more)."""
    said = "; ".join([f"input: `{meta['input']}`", *more])
    return f"Made by `{meta['command']}` (audience {meta['version']}); {said}."


def _markdown_table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def analysis_terminal(result: dict[str, Any]) -> str:
    stats, cf, verdict = result["statistics"], result["cf"], result["verdict"]
    ret = {p["days"]: p["share"] for p in stats["retention"]}
    task = cf["task"]
    return "\n".join(
        [
            "Log statistics",
            stats_text(stats),
            "  retention 7/30/90 days: "
            + " / ".join("n/a" if ret[d] is None else f"{ret[d]:.1%}" for d in (7, 30, 90)),
            f"  ceiling (late interactions by known users on known products): "
            f"{stats['split']['ceiling']:.1%}",
            f"  density {stats['density']:.2e}",
            "",
            f"ALS baseline ({task['evaluated_products']:,} products with a relevant known user, "
            f"{task['candidate_users']:,} candidate users, k={task['k']}"
            + ("" if "skipped" in cf else f"; ALS {cf['tuning']['chosen']}")
            + ")",
            cf_table(cf),
            "",
            f"Verdict: {verdict['summary']}",
        ]
    )


def analysis_markdown(
    result: dict[str, Any], meta: dict[str, Any], charts: list[Path], out: Path
) -> str:
    stats, cf, verdict = result["statistics"], result["cf"], result["verdict"]
    checks = [["criterion", "value", "threshold", "passed"]] + [
        [
            verdict["criteria"][n],
            "not tested" if c["value"] is None else f"{c['value']:.4g}",
            f"> {c['threshold']:g}",
            {True: "yes", False: "no", None: "not tested"}[c["passed"]],
        ]
        for n, c in verdict["checks"].items()
    ]
    retention = [["window (days)", "eligible users", "retained", "share"]] + [
        [
            str(p["days"]),
            f"{p['eligible_users']:,}",
            f"{p['retained_users']:,}",
            "n/a" if p["share"] is None else f"{p['share']:.2%}",
        ]
        for p in stats["retention"]
    ]
    cohort_keys = [k for k in stats["cohorts"][0] if k.startswith("month_")]
    cohorts = [["cohort", "users", *cohort_keys]] + [
        [
            c["cohort"],
            f"{c['users']:,}",
            *("" if c[k] is None else f"{c[k]:.2%}" for k in cohort_keys),
        ]
        for c in stats["cohorts"]
    ]
    images = "\n".join(f"![{c.stem}]({c.relative_to(out)})" for c in charts)
    return (
        "\n\n".join(
            [
                "# What this log can support",
                _made_by(meta),
                f"## Verdict\n\n**{verdict['summary']}**\n\n" + _markdown_table(checks),
                "## The log\n\n```\n" + stats_text(stats) + "\n```",
                "## Retention\n\n" + STATS_DEFINITION_NOTE + "\n\n" + _markdown_table(retention),
                "## Monthly cohorts\n\n" + _markdown_table(cohorts),
                "## Collaborative filtering, measured\n\n"
                + CF_TASK_NOTE
                + (
                    ""
                    if "skipped" in cf
                    else "ALS parameters chosen on a validation slice of the training period: "
                    f"`{cf['tuning']['chosen']}`.\n\n"
                )
                + "```\n"
                + cf_table(cf)
                + "\n```",
                "## Charts\n\n" + images,
            ]
        )
        + "\n"
    )


CF_TASK_NOTE = (
    "Task: for each product with late-period interactions, rank the users known at the cut, "
    "excluding users who already interacted with it; relevant = known users who interacted "
    "with it after the cut. Mean over products [95% bootstrap CI].\n\n"
)
STATS_DEFINITION_NOTE = (
    "Retention at N days: among users whose first active day d0 has d0 + N on or before the "
    "log's last day, the share active again on a day in (d0, d0 + N]."
)


def train_summary(result: dict[str, Any]) -> str:
    s = result["stats"]
    config = result["config"]
    overlap = s.get("overlap", {})
    lines = [
        f"Trained version {result['version']} ({config['model']} scorer, n={config['n']}"
        + (", repeat mode: past users stay candidates)" if config.get("repeat") else ")"),
        f"  users scored:        {_number(s['users_scored'])}",
        f"  product audiences:   {_number(s['products'])} products, {_number(s['rows'])} rows"
        f" ({_number(s['products_short'])} with fewer than {config['n']} candidates)",
        f"  distinct users:      {_number(s['distinct_users'])} across all audiences",
        f"  category audiences:  {_number(s['categories'])} (cold start)",
        f"  collaborative term:  {_cf_line(result['cf'])}",
    ]
    for label, o in overlap.items():
        lines.append(
            f"  overlap ({label.replace('_', ' ')}): mean Jaccard {o['mean_jaccard']:.3f}"
            f" over {_number(o['pairs'])} random product pairs"
        )
    lines.append(f"  wrote {result['path']} and made it current")
    return "\n".join(lines)


def _cf_line(cf: dict[str, Any]) -> str:
    """`--cf`'s outcome: off and why, or on with its weight and ALS's parameters."""
    if not cf["on"]:
        return f"off ({cf['why']})"
    als = cf["als"]
    weight = (
        f"weight {cf['weight']:g}, chosen on the validation slice"
        if cf["weight"]
        else "weight 0: it did not help on the validation slice"
    )
    solver = f" ({cf['solver']})" if "solver" in cf else ""
    return (
        f"on ({cf['why']}); {weight}; ALS{solver} {als['factors']} factors, "
        f"alpha {als['alpha']:g}, regularization {als['regularization']:g}"
    )


def _g(value: float) -> str:
    return f"{value:.3g}"


def _ci_g(m: dict[str, float]) -> str:
    """A mean and its interval to three significant digits (backtest values are tiny)."""
    return f"{_g(m['mean'])} [{_g(m['ci95_low'])}, {_g(m['ci95_high'])}]"


def _lift_g(x: dict[str, float | None]) -> str:
    if x["lift"] is None:
        return "n/a (random 0)"
    low = "?" if x["ci95_low"] is None else _g(x["ci95_low"])
    high = "inf" if x["ci95_high"] is None else _g(x["ci95_high"])
    return f"{_g(x['lift'])}x [{low}, {high}]"


def _scored(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    models = result["task_a"].get("models", {})  # none when task (a) had nothing to judge
    return {n: m for n, m in models.items() if "skipped" not in m}


def backtest_task_a(result: dict[str, Any]) -> list[list[str]]:
    """Product audiences at N: each model's metrics [95% CI] and lifts over random."""
    n = result["task_a"]["setup"]["n"]
    names = [f"ndcg@{n}", f"precision@{n}", f"recall@{n}", f"hit_rate@{n}"]
    head = ["model"] + [h for m in names[:2] for h in (m, "lift")] + names[2:]
    rows = [[*head, "user coverage", "concentration"]]
    for model, m in _scored(result).items():
        rows.append(
            [model]
            + [
                c
                for k in names[:2]
                for c in (_ci_g(m["metrics"][k]), _lift_g(m["lift_over_random"][k]))
            ]
            + [_ci_g(m["metrics"][k]) for k in names[2:]]
            + [f"{m['user_coverage'] * 100:.3g}%", f"{m['concentration']:.1%}"]
        )
    return rows


def backtest_one_percent(result: dict[str, Any]) -> list[list[str]]:
    """The 1% audience (k_1pct users) on the sampled products, for the models ranked that deep."""
    rows = [["model", "hits@1%", "lift", "recall@1%", "lift"]]
    for model, m in _scored(result).items():
        if "one_percent" in m:
            one = m["one_percent"]
            rows.append(
                [model]
                + [
                    c
                    for k in ("hits@1%", "recall@1%")
                    for c in (_ci_g(one["metrics"][k]), _lift_g(one["lift_over_random"][k]))
                ]
            )
    return rows


def backtest_task_b(result: dict[str, Any]) -> list[list[str]]:
    """Activity targeting: precision@N [95% CI] and lift over the base rate, per N."""
    b = result["task_b"]
    rows = [["model"] + [h for n in b["ns"] for h in (f"precision@{n}", "lift")]]
    for model, entry in b["models"].items():
        rows.append(
            [model]
            + [
                c
                for n in b["ns"]
                for c in (_ci_g(entry[f"@{n}"]["precision"]), _lift_g(entry[f"@{n}"]["lift"]))
            ]
        )
    return rows


def backtest_choice(result: dict[str, Any]) -> str:
    """Which model the backtest favours, overall and for `audience train`, with the figures."""
    if "skipped" in result["task_a"]:
        return f"- None: product audiences were not judged ({result['task_a']['skipped']})."
    lines = []
    for label, f in (
        ("Overall", result["favoured"]["overall"]),
        ("For `audience train`", result["favoured"]["train_default"]),
    ):
        if f["best"] is None:
            continue
        line = f"{label}: **{f['best']}** ({f['metric']} {_g(f['order'][0]['mean'])})"
        if "runner_up" in f:
            gain = f["gain_over_runner_up"]
            verdict = "interval excludes 0" if f["clear"] else "interval includes 0: not separated"
            line += (
                f", ahead of {f['runner_up']} by {_ci_g(gain)} (paired bootstrap over "
                f"products; {verdict})"
            )
        lines.append(f"- {line}.")
    return "\n".join(lines)


def backtest_hybrid(result: dict[str, Any]) -> str:
    """The hybrid audiences against ALS and the fitted audiences, product by product."""
    found = result["task_a"].get("hybrid_differences") or {}
    lines = []
    for label, d in found.items():
        verdict = (
            "better: the interval is above 0"
            if d["ci95_low"] > 0
            else "worse: the interval is below 0"
            if d["ci95_high"] < 0
            else "not separated: the interval includes 0"
        )
        lines.append(f"- {label}, {d['metric']}: {_ci_g(d)} (paired bootstrap; {verdict}).")
    return "\n".join(lines)


def backtest_charts(result: dict[str, Any], out: Path) -> list[Path]:
    from audience.evidence import charts

    n = result["task_a"]["setup"]["n"]
    models = {k: v for k, v in _scored(result).items() if k != "random"}
    b = result["task_b"]
    panels = {
        f"(a) ndcg@{n}": {k: v["lift_over_random"][f"ndcg@{n}"] for k, v in models.items()},
        f"(a) precision@{n}": {
            k: v["lift_over_random"][f"precision@{n}"] for k, v in models.items()
        },
    }
    if not models:  # task (a) had nothing to judge
        panels = {}
    panels |= {
        "(b) activity precision@N": {
            f"{k} @{n_}": e[f"@{n_}"]["lift"]
            for k, e in b["models"].items()
            if k != "random"
            for n_ in b["ns"]
        },
    }
    path = out / "charts" / "lift.png"
    return [charts.lifts(panels, path, "Lift over random after the cutoff (95% CI)")]


def _skipped(result: dict[str, Any]) -> str:
    models = result["task_a"].get("models", {})
    gone = {n: m["skipped"] for n, m in models.items() if "skipped" in m}
    return "".join(f"\n\nSkipped {n}: {why}" for n, why in gone.items())


def _task_a_markdown(result: dict[str, Any]) -> str:
    """Section (a): its table and the 1% audience's, or why nothing was judged."""
    a, setup = result["task_a"], result["task_a"]["setup"]
    head = f"## (a) Product audiences, top {setup['n']}\n\n"
    if "skipped" in a:
        return head + f"Not judged: {a['skipped']}."
    repeat = setup.get("mode") == "repeat"
    candidates = (
        "all of them (repeat mode: a product's past users stay candidates)"
        if repeat
        else "minus those who already interacted with it"
    )
    relevant = "known users who interact with it after the cutoff" + (
        ", its past users included" if repeat else ""
    )
    one = setup["one_percent"]
    return (
        head + f"For each of {setup['evaluated_products']:,} products with a relevant known "
        f"user, rank the {setup['candidate_users']:,} known users {candidates}; relevant = "
        f"{relevant} ({setup['relevant_pairs']:,} pairs). "
        f"{setup['late_products_unknown_at_cutoff']:,} of the "
        f"{setup['late_products']:,} post-cutoff products are unknown at the cutoff and "
        "no history model can rank them. Mean over products [95% bootstrap CI]; lift = "
        "model / random, paired bootstrap CI; random is its exact expectation.\n\n"
        + _markdown_table(backtest_task_a(result))
        + _skipped(result)
        + _hybrid_markdown(result)
        + f"\n\n### The 1% audience (top {setup['k_1pct']:,} users)\n\n"
        f"On {one['sampling']} ({one['products']:,} products); audiences_* are "
        + str(one["audiences_*"])
        + ".\n\n"
        + _markdown_table(backtest_one_percent(result))
    )


def _hybrid_markdown(result: dict[str, Any]) -> str:
    said = backtest_hybrid(result)
    if not said:
        return ""
    term = result["task_a"]["models"]["audiences_hybrid"].get("collaborative_term", {})
    weight = term.get("weight")
    how = (
        f" The collaborative term's weight, chosen on the last 20% of the pre-cutoff "
        f"events: {weight:g}."
        if weight is not None
        else ""
    )
    return (
        "\n\n### The collaborative term (audiences_hybrid = audiences_fitted + CF)\n\n" + said + how
    )


def backtest_markdown(
    result: dict[str, Any], meta: dict[str, Any], charts: list[Path], out: Path
) -> str:
    s, b = result["split"], result["task_b"]
    images = "\n".join(f"![{c.stem}]({c.relative_to(out)})" for c in charts)
    return (
        "\n\n".join(
            [
                "# Backtest: lift over random, with 95% intervals",
                _made_by(meta, f"config: `{meta['config']}`"),
                f"Cutoff {s['cutoff']} ({s['rule']}): models see {s['early_events']:,} events "
                f"by {s['early_users']:,} users and are judged on {s['late_events']:,} events by "
                f"{s['late_users']:,} users ({s['returning_users']:,} of them known). Ceiling: "
                f"{result['ceiling']['known_users']:.1%} of post-cutoff interactions are by "
                f"users known at the cutoff ({result['ceiling']['known_pairs']:.1%} by a known "
                "user on a known product).",
                "## The favoured model\n\n" + backtest_choice(result),
                _task_a_markdown(result),
                "## (b) Activity targeting: does a top-N user interact with anything after the "
                "cutoff?\n\n"
                f"Base rate (random): {_ci_g(b['base_rate'])} of {b['candidates']:,} known "
                "users, exact binomial CI. Precision CI: bootstrap over the top N users; lift "
                "CI: independent bootstrap of the top N and of all known users. "
                + "; ".join(f"{k} skipped: {v}" for k, v in b["skipped"].items())
                + ".\n\n"
                + _markdown_table(backtest_task_b(result)),
                "## Chart\n\n" + images,
                "## Definitions\n\n"
                + "\n".join(f"- **{k}**: {v}" for k, v in result["definitions"].items()),
            ]
        )
        + "\n"
    )


def backtest_terminal(result: dict[str, Any]) -> str:
    s, a, setup = result["split"], result["task_a"], result["task_a"]["setup"]
    mode = " (repeat mode)" if setup.get("mode") == "repeat" else ""
    if "skipped" in a:
        task_a = [f"(a) product audiences{mode}: not judged: {a['skipped']}"]
    else:
        task_a = [
            f"(a) product audiences{mode}, top {setup['n']} (mean [95% CI], lift over random)",
            table(backtest_task_a(result)),
            "",
            f"    1% audience (top {setup['k_1pct']:,}, {setup['one_percent']['products']:,} "
            "sampled products)",
            table(backtest_one_percent(result)),
            *(["", backtest_hybrid(result)] if backtest_hybrid(result) else []),
        ]
    return "\n".join(
        [
            f"Backtest at cutoff {s['cutoff']}: {setup['evaluated_products']:,} products, "
            f"{setup['candidate_users']:,} candidate users; ceiling "
            f"{result['ceiling']['known_users']:.1%} of post-cutoff interactions by known users",
            "",
            *task_a,
            "",
            "(b) activity targeting: share of the top N with any post-cutoff event",
            table(backtest_task_b(result)),
            "",
            backtest_choice(result).replace("**", "").replace("`", ""),
        ]
    )
