"""PNG charts of the analysis (matplotlib, headless). Imported only by whoever draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MODEL_COLORS = {
    "random": "#9e9e9e",
    "popularity": "#f4a261",
    "als": "#2a9d8f",
    "seed": "#e9c46a",
    "fitted": "#e76f51",
    "audiences_seed": "#8ab17d",
    "audiences_fitted": "#264653",
}


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def activity(histogram: dict[str, int], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(list(histogram), list(histogram.values()), color="#264653")
    ax.set_yscale("log")
    ax.set_xlabel("events per user")
    ax.set_ylabel("users (log scale)")
    ax.set_title(title)
    return _save(fig, path)


def retention(curve: list[dict[str, Any]], path: Path, title: str) -> Path:
    points = [(p["days"], p["share"]) for p in curve if p["share"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([d for d, _ in points], [100 * s for _, s in points], marker="o", color="#e76f51")
    ax.set_xlabel("window N (days after the first active day)")
    ax.set_ylabel("users active again within N days (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def models(
    summary: dict[str, dict[str, dict[str, float]]], metric_names: list[str], path: Path, title: str
) -> Path:
    """Grouped bars of each model's metrics with their 95% intervals."""
    fig, axes = plt.subplots(1, len(metric_names), figsize=(3.2 * len(metric_names), 3.8))
    for ax, metric in zip(axes, metric_names, strict=True):
        names = list(summary)
        means = [summary[n][metric]["mean"] for n in names]
        lower = [m - summary[n][metric]["ci95_low"] for n, m in zip(names, means, strict=True)]
        upper = [summary[n][metric]["ci95_high"] - m for n, m in zip(names, means, strict=True)]
        ax.bar(
            names,
            means,
            yerr=[lower, upper],
            capsize=4,
            color=[MODEL_COLORS.get(n, "#264653") for n in names],
        )
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    return _save(fig, path)


def lifts(panels: dict[str, dict[str, dict[str, float | None]]], path: Path, title: str) -> Path:
    """One panel per metric: each model's lift over random with its 95% interval (log scale).

    `panels` maps a panel title to {label: {"lift", "ci95_low", "ci95_high"}}, a label
    being a model name, optionally followed by a space and more; its colour is the
    model's, hatched for a `_no_affinity` variant. A label without a lift is left out;
    an unbounded interval is drawn to the panel's edge.
    """
    rows = max(len(models) for models in panels.values())
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels), 1.2 + 0.38 * rows), squeeze=False
    )
    for ax, (name, models) in zip(axes[0], panels.items(), strict=True):
        shown = {m: v for m, v in models.items() if v["lift"] is not None}
        means = [float(v["lift"] or 0.0) for v in shown.values()]
        edge = max([*means, *(float(v["ci95_high"] or 0.0) for v in shown.values()), 1.0]) * 2
        low = [m - float(v["ci95_low"] or m) for m, v in zip(means, shown.values(), strict=True)]
        high = [
            float(v["ci95_high"] or edge) - m for m, v in zip(means, shown.values(), strict=True)
        ]
        model = [label.split(" ")[0] for label in shown]
        bars = ax.barh(
            list(shown),
            means,
            xerr=[low, high],
            capsize=3,
            color=[MODEL_COLORS.get(m.removesuffix("_no_affinity"), "#264653") for m in model],
        )
        for bar, m in zip(bars, model, strict=True):
            if m.endswith("_no_affinity"):
                bar.set_hatch("//")
                bar.set_edgecolor("white")
        ax.axvline(1.0, color="#555555", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("lift over random (x, log scale; dashed: 1x)")
        ax.invert_yaxis()
        ax.set_title(name)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def arm_rates(arms: dict[str, tuple[float, float, float]], path: Path, title: str) -> Path:
    """Each arm's conversion rate as a bar with its interval: {arm: (rate, low, high)}.

    An interval's bound can miss a 0% rate by a rounding error; matplotlib refuses the
    negative error bar that would make, so the bars are clipped at the rate.
    """
    names = list(arms)
    rates = [100 * rate for rate, _, _ in arms.values()]
    lower = [max(0.0, 100 * (rate - low)) for rate, low, _ in arms.values()]
    upper = [max(0.0, 100 * (high - rate)) for rate, _, high in arms.values()]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.bar(
        names,
        rates,
        yerr=[lower, upper],
        capsize=6,
        color=[{"treatment": "#2a9d8f", "holdout": "#9e9e9e"}.get(n, "#264653") for n in names],
    )
    for x, rate in enumerate(rates):
        ax.annotate(f"{rate:.2f}%", (x, rate), xytext=(8, 4), textcoords="offset points")
    ax.set_ylabel("converted (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
