"""The merchant front end (Gradio): find a product, see who to contact and why, plan the test.

Four tabs over the same in-memory `Index` the API serves (passed in as `get_index`, so an
atomic swap in the server shows here at once), the campaign store and the files under
`results/`:

- Audience:  search the catalog, show a product's top-N users with the strategy and the
             reasons, name similar products for a new one, download the list as CSV;
- Campaign:  sample size with a power curve, significance of a finished test, and the
             treatment / holdout split of the audience shown with its expected ROI;
- Campaigns: the stored campaigns; create one from the audience shown, launch it, and
             judge it from the event log after the launch (`serving.campaigns`);
- Insights:  the analysis and backtest charts, and the model's version and age.

Nothing is computed here that a library module already computes: the handlers call
`Index`, `abtest`, `campaign` and `campaigns` and turn their answers, and every failure,
into plain words. `import audience` never imports this module (it pulls in gradio).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import gradio as gr
import polars as pl
from matplotlib.figure import Figure

from audience.data.ingest import CATALOG_FILE, load_events
from audience.data.schema import CATEGORY, PRODUCT, PRODUCT_NAME, USER
from audience.errors import AudienceError, ConfigError
from audience.experiments import abtest, campaign
from audience.experiments.judge import SCOPES, CampaignReport, report_markdown, write_report
from audience.serving import campaigns
from audience.serving.index import Index
from audience.serving.segment import Filters, Segment, segment, size_of
from audience.settings import Settings
from audience.store.store import LAUNCHED, Campaign, Fatigue, Store

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)
T = TypeVar("T")

IndexGetter = Callable[[], "Index | None"]

NOT_READY = (
    "**The audience service is not ready yet**: no trained model is loaded. "
    "Please try again in a minute; if this persists, ask your administrator to run "
    "`audience train`."
)
UNEXPECTED = (
    "**Something went wrong on our side** and this request could not be completed. "
    "Please try again; if it keeps happening, tell your administrator the time it happened."
)
STRATEGY_TEXT = {
    "personalized": "built from this product's own interactions: related products, its "
    "category and each shopper's engagement",
    "lookalike": "this product has no history yet, so these are the best shoppers for the "
    "similar products you named",
    "category": "this product has no history yet, so these are the most engaged shoppers "
    "in its category",
    "cold_start": "nothing is known about this product or its category, so these are the "
    "most engaged shoppers overall",
}
AUDIENCE_COLUMNS = ["rank", USER, "score", "reasons"]
#: Rows of a segment (and of a campaign's groups) shown on the page; downloads have all.
SHOWN_ROWS = 100
GROUP_COLUMNS = [USER, "group", "rank"]
CAMPAIGN_COLUMNS = {
    "id": pl.String,
    "name": pl.String,
    "product": pl.String,
    "state": pl.String,
    "treatment": pl.Int64,
    "holdout": pl.Int64,
    "created": pl.String,
    "launched": pl.String,
    "result": pl.String,
}
SEARCH_LIMIT = 20
#: Charts shown on the Insights tab: (file under results/charts, caption, how to make it).
CHARTS = (
    ("activity.png", "Events per user", "audience analyze"),
    ("retention.png", "Retention: users active again within N days", "audience analyze"),
    ("cf_baselines.png", "Collaborative filtering against baselines", "audience analyze"),
    ("lift.png", "Backtest: lift over random, with 95% intervals", "audience evaluate"),
)


class _MessageError(Exception):
    """Raised inside a handler to end it with a message for the merchant."""


def _index(get_index: IndexGetter) -> Index:
    try:
        index = get_index()
    except AudienceError:
        index = None
    if index is None:
        raise _MessageError(NOT_READY)
    return index


def _guard(action: Callable[[], T], failed: Callable[[str], T]) -> T:
    """Run a handler body; any failure becomes `failed(message)`, never a stack trace."""
    try:
        return action()
    except _MessageError as exc:
        return failed(str(exc))
    except AudienceError as exc:
        return failed(f"**That did not work:** {exc}")
    except Exception:
        log.exception("UI handler failed")
        return failed(UNEXPECTED)


# --- pure helpers (unit-tested without a browser) ----------------------------------------


def audience_frame(found: Segment) -> pl.DataFrame:
    """The segment as a table: rank, user_id, score, reasons ('; '-joined)."""
    return found.rows.select(
        "rank", USER, "score", pl.col("reasons").list.join("; ").alias("reasons")
    )


def age_text(created: datetime, now: datetime | None = None) -> str:
    seconds = max(0.0, ((now or datetime.now(UTC)) - created).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "less than a minute"


def _similar(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in re.split(r"[,\s]+", text or "") if p.strip()))


def _in_catalog(index: Index, product_id: str) -> bool:
    return (
        index.knows(product_id)
        or not index.catalog.filter(pl.col(PRODUCT) == product_id).is_empty()
    )


def audience(
    index: Index,
    product_id: str,
    n: int,
    like: str = "",
    category: str | None = None,
    share: float | None = None,
) -> tuple[Segment, str]:
    """The product's segment of n users (or a share of every known user, in %) and a
    plain-words summary; unknown products raise `_MessageError`."""
    product_id = (product_id or "").strip()
    if not product_id:
        raise _MessageError("Choose a product first: search for it by name or id above.")
    similar, category = _similar(like), category or None
    if not (similar or category or _in_catalog(index, product_id)):
        raise _MessageError(
            f"**Unknown product `{product_id}`**: it is not in the catalog. Check the id, or, "
            "for a new product, name similar products or choose its category below."
        )
    try:
        k = size_of(index, None if share else int(n), share / 100 if share else None)
    except ConfigError as error:
        raise _MessageError(f"**{error.parameter}**: {error}") from None
    found = segment(index, product_id, k, similar, category, reasons=True)
    return found, _summary(found)


def _summary(found: Segment) -> str:
    label = found.strategy.replace("_", " ")
    size = found.rows.height
    lines = [
        f"**Strategy: {label}** — {STRATEGY_TEXT[found.strategy]}.",
        f"{size:,} shoppers for product `{found.product_id}`, "
        f"{size / found.known_users:.2%} of the {found.known_users:,} known shoppers "
        f"(model version `{found.model_version}`)"
        + (
            f"; the first {SHOWN_ROWS} are shown, the download has all."
            if size > SHOWN_ROWS
            else "."
        ),
    ]
    lines += [f"Note: {note}" for note in found.notes]
    if not size:
        lines.append("No shopper qualifies for this product (everyone known already bought it).")
    return "\n\n".join(lines)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "product"


def _download_dir(base: Path, max_age: float = 3600.0) -> Path:
    """A fresh folder for one download; folders older than max_age seconds are removed."""
    base.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - max_age
    for old in base.iterdir():
        with contextlib.suppress(OSError):  # another request may be removing it too
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old)
    return Path(tempfile.mkdtemp(dir=base))


def audience_csv(found: Segment, base: Path) -> Path:
    """The whole segment as CSV: rank, user_id, score, reasons, product_id, strategy,
    model_version."""
    frame = audience_frame(found).with_columns(
        pl.lit(found.product_id).alias(PRODUCT),
        pl.lit(found.strategy).alias("strategy"),
        pl.lit(found.model_version).alias("model_version"),
    )
    name = f"audience_{_safe_name(found.product_id)}_top{frame.height}.csv"
    path = _download_dir(base) / name
    frame.write_csv(path)
    return path


def search_products(index: Index, query: str) -> pl.DataFrame:
    if not (query or "").strip():
        raise _MessageError("Type part of a product's name, or the beginning of its id.")
    hits = index.search(query, SEARCH_LIMIT)
    if hits.is_empty():
        raise _MessageError(
            f"No product matches **{query.strip()}**. Try part of the name or the id's beginning."
        )
    return hits


def sample_size_text(size: abtest.SampleSize) -> str:
    return (
        f"You need **{size.n_control:,}** users in the control group and "
        f"**{size.n_treatment:,}** in the treatment group (**{size.total:,}** in all) to detect "
        f"a change from {size.baseline:.2%} to {size.target:.2%} with power {size.power:g} "
        f"at significance level {size.alpha:g} ({size.sides})."
    )


def power_curve(size: abtest.SampleSize) -> Figure:
    """Power against users per control group, for the sized test; the chosen n is marked."""
    top = max(10, 2 * size.n_control)
    grid = sorted({max(2, round(top * i / 40)) for i in range(1, 41)} | {size.n_control})
    power = [
        abtest.achieved_power(
            size.baseline,
            size.target,
            n,
            max(1, round(n * size.ratio)),
            alpha=size.alpha,
            sides=size.sides,
            method=size.method,
        ).power
        for n in grid
    ]
    fig = Figure(figsize=(6.4, 3.4), dpi=100)
    ax = fig.add_subplot()
    ax.plot(grid, power, color="#2a9d8f")
    ax.axhline(size.power, color="#9e9e9e", linestyle="--", linewidth=1)
    ax.axvline(size.n_control, color="#e76f51", linestyle="--", linewidth=1)
    ax.set_xlabel("users in the control group")
    ax.set_ylabel("power")
    ax.set_ylim(0, 1)
    ax.set_title(f"{size.baseline:.2%} -> {size.target:.2%}: n = {size.n_control:,} per control")
    fig.tight_layout()
    return fig


def _pct(value: float) -> str:
    return f"{value:+.1%}"


def comparison_text(result: abtest.Comparison) -> str:
    verdict = (
        "**significant**: the difference is unlikely to be chance"
        if result.significant
        else "**not significant**: the difference could be chance"
    )
    lines = [
        f"Control converts {result.rate_a:.2%}, treatment {result.rate_b:.2%}.",
        f"Difference {_pct(result.difference.estimate)} points "
        f"[{_pct(result.difference.low)}, {_pct(result.difference.high)}].",
    ]
    if result.relative_lift is not None:
        lift = result.relative_lift
        lines.append(f"Relative lift {_pct(lift.estimate)} [{_pct(lift.low)}, {_pct(lift.high)}].")
    lines.append(f"p = {result.p_value:.4g} at significance level {result.alpha:g}: {verdict}.")
    return "\n\n".join(lines)


def plan_text(plan: campaign.CampaignPlan) -> str:
    roi = "n/a (contacting is free)" if plan.roi is None else f"{plan.roi:+.1%}"
    lines = [
        f"Contact **{plan.treatment_size:,}** shoppers (treatment) and hold out "
        f"**{plan.control_size:,}** (control) of {plan.audience_size:,}.",
        f"Expected conversions {plan.expected_conversions:,.1f}, of which "
        f"{plan.incremental_conversions:,.1f} thanks to the campaign.",
        f"Cost {plan.cost:,.2f}, incremental value {plan.incremental_value:,.2f}: "
        f"**expected ROI {roi}**.",
    ]
    if plan.power is not None:
        lines.append(f"Power of this split to see the lift: {plan.power:.2f}.")
    if plan.warning:
        lines.append(f"Warning: {plan.warning}.")
    return "\n\n".join(lines)


def model_text(index: Index) -> str:
    return (
        f"Model version `{index.version}`, trained {index.created_at:%Y-%m-%d %H:%M} UTC "
        f"(**{age_text(index.created_at)} ago**); {index.n} shoppers stored per product "
        "(any number on demand), "
        f"{index.catalog.height:,} products in the catalog. {cf_text(index.collaborative)}"
    )


def cf_text(cf: dict[str, Any]) -> str:
    """Whether the audiences use what similar shoppers buy, in a merchant's words."""
    if not cf:
        return ""
    if cf["on"] and cf.get("weight"):
        why = (
            "this shop's customers come back often enough for it"
            if cf.get("mode") == "auto"
            else "turned on when the model was trained"
        )
        return f"Audiences also count what similar shoppers buy (collaborative filtering: {why})."
    if cf["on"]:
        return (
            "Collaborative filtering was tried and left out: it did not improve the lists "
            "on the most recent fifth of the log."
        )
    return f"Audiences do not use collaborative filtering: {cf['why']}."


def backtest_text(results_dir: Path) -> str:
    """The backtest's headline (favoured model) from results/model_metrics.json."""
    try:
        data = json.loads((results_dir / "model_metrics.json").read_text())
        best = data["favoured"]["overall"]
        top = best["order"][0]
        return (
            f"Backtest (`{data['command']}`): the best audiences come from "
            f"**{top['model']}** ({best['metric']} {top['mean']:.4g}); the lift chart above "
            "shows each model against random, with 95% intervals."
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return "No backtest results yet (run `audience evaluate`)."


def _report(results_dir: Path) -> str:
    try:
        return (results_dir / "model_metrics.md").read_text()
    except OSError:
        return ""


def _verdict(results_dir: Path) -> str:
    try:
        verdict = json.loads((results_dir / "cf_metrics.json").read_text())["verdict"]
        return f"Analysis verdict: {verdict['summary']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "No analysis results yet (run `audience analyze`)."


def _when(seconds: float | None) -> str:
    return "" if seconds is None else f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%d %H:%M} UTC"


def campaigns_frame(found: list[Campaign]) -> pl.DataFrame:
    """The campaigns as a table, one row each, with the verdict of a stored report."""
    rows = [
        (
            c.id,
            c.name,
            c.product_id,
            c.state,
            c.treatment,
            c.holdout,
            _when(c.created_at),
            _when(c.launched_at),
            (c.report or {}).get("verdict", ""),
        )
        for c in found
    ]
    return pl.DataFrame(rows, schema=CAMPAIGN_COLUMNS, orient="row")


def source_text(state: dict[str, Any] | None) -> str:
    """What a new campaign is made from: the audience shown on the Audience tab."""
    if not state:
        return "Show an audience on the Audience tab first: a campaign is made from it."
    return (
        f"From the audience shown: product `{state['product_id']}`, "
        f"**{state['size']:,} shoppers** (strategy {state['strategy'].replace('_', ' ')}). "
        "Shoppers opted out or contacted too often lately are left out, and as many "
        "after them are taken."
    )


def create_campaign(
    index: Index,
    store: Store,
    settings: Settings,
    state: dict[str, Any] | None,
    plan: campaigns.Plan,
) -> Campaign:
    """The campaign of the audience shown: its product, size, strategy and inputs, with
    the opt-outs and the default contact rules applied."""
    if not state:
        raise _MessageError(source_text(None))
    served = index.excluding(store.optouts())
    plan = dataclasses.replace(
        plan,
        name=plan.name.strip() or f"campaign-{state['product_id']}",
        like=tuple(state["like"]),
        category=state["category"],
    )
    rules = Fatigue.of(settings)
    return campaigns.create(
        served, store, settings, state["product_id"], state["size"], plan, Filters(), rules
    )


def created_text(made: Campaign) -> str:
    notes = "".join(f"\n\nNote: {note}" for note in made.spec.get("notes", []))
    return (
        f"Created campaign **{made.id}** ({made.name}): **{made.treatment:,}** shoppers to "
        f"contact (treatment) and **{made.holdout:,}** held out. Launch it when the "
        f"treatment list is sent.{notes}"
    )


def launched_text(made: Campaign) -> str:
    return (
        f"Launched **{made.id}** at {_when(made.launched_at)}: its {made.treatment:,} "
        f"treatment shoppers are recorded as contacted; the {made.holdout:,} held out are "
        "not. Judge it from the event log once the window has passed."
    )


def report_page(report: CampaignReport, base: Path) -> tuple[str, str]:
    """The report's page (without its image link) and its chart, drawn in a fresh folder."""
    chart = write_report(report, _download_dir(base))["chart"]
    lines = report_markdown(report).splitlines()
    return "\n".join(line for line in lines if not line.startswith("![")), str(chart)


def stored_report(found: Campaign, base: Path) -> tuple[str, str | None]:
    """The campaign's stored report, or what to do to get one."""
    if found.state != LAUNCHED:
        return f"**{found.id}** is not launched yet: launch it first, then judge it.", None
    if found.report is None:
        return (
            f"**{found.id}** has no report yet: type the path of the event log after the "
            "launch below and run the report.",
            None,
        )
    return report_page(CampaignReport.from_dict(found.report), base)


def read_log(text: str) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The events of an ingest output folder or canonical events file, and the catalog
    (products.parquet) beside them when there is one."""
    if not (text or "").strip():
        raise _MessageError(
            "Type the path of the event log after the launch: an `audience ingest` output "
            "folder or its events.parquet."
        )
    path = Path(text.strip()).expanduser()
    try:
        events = load_events(path)
    except pl.exceptions.PolarsError:
        raise _MessageError(f"**{path}** is not a Parquet event table.") from None
    catalog = (path if path.is_dir() else path.parent) / CATALOG_FILE
    return events, pl.read_parquet(catalog) if catalog.is_file() else None


# --- layout and wiring -------------------------------------------------------------------


def build_ui(
    get_index: IndexGetter, results_dir: Path, store: Store, settings: Settings
) -> gr.Blocks:
    """The merchant app; `get_index` is called on every request (None: not ready yet);
    campaigns are kept in `store`."""
    downloads = Path(tempfile.gettempdir()) / "audience-ui"
    ui = gr.Blocks(title="Audience", analytics_enabled=False, delete_cache=(3600, 3600))
    with ui:
        gr.Markdown("# Audience: who to contact about your product")
        header = gr.Markdown(elem_id="model-header")
        with gr.Tabs():
            with gr.Tab("Audience", id="audience"):
                shown = _audience_tab(ui, get_index, downloads)
            with gr.Tab("Campaign", id="campaign"):
                _campaign_tab(shown, downloads)
            with gr.Tab("Campaigns", id="campaigns") as tab:
                _campaigns_tab(tab, shown, get_index, store, settings, downloads)
            with gr.Tab("Insights", id="insights"):
                insights = _insights_tab(get_index, results_dir)

        def refresh_header() -> str:
            return _guard(lambda: model_text(_index(get_index)), lambda m: m)

        ui.load(refresh_header, outputs=header)
        ui.load(insights[0], outputs=insights[1])
    return ui


def _audience_tab(ui: gr.Blocks, get_index: IndexGetter, downloads: Path) -> gr.State:
    with gr.Row():
        query = gr.Textbox(
            label="Find a product (name or id)",
            placeholder="e.g. speaker, P2296",
            scale=4,
            elem_id="search-query",
        )
        search_button = gr.Button("Search", variant="primary", scale=1, elem_id="search-button")
    matches = gr.Dataframe(
        label="Matching products", interactive=False, max_height=280, elem_id="matches"
    )
    with gr.Row():
        product = gr.Dropdown(
            label="Product",
            choices=[],
            value=None,
            allow_custom_value=True,
            scale=3,
            elem_id="product",
        )
        size = gr.Number(10, label="How many shoppers (N)", precision=0, minimum=1, elem_id="n")
        share = gr.Number(
            None, label="or a share of all known shoppers (%)", minimum=0, elem_id="share"
        )
    with gr.Accordion(
        "New product without history? Name similar products or a category", open=False
    ):
        like = gr.Textbox(label="Similar products (ids, comma-separated)", elem_id="like")
        category = gr.Dropdown(label="Category", choices=[], value=None, elem_id="category")
    show = gr.Button("Show audience", variant="primary", elem_id="show-audience")
    status = gr.Markdown(elem_id="audience-status")
    table = gr.Dataframe(
        headers=AUDIENCE_COLUMNS,
        label="Audience",
        interactive=False,
        wrap=True,
        elem_id="audience-table",
    )
    download = gr.DownloadButton(
        "Download audience (CSV)", interactive=False, elem_id="download-audience"
    )
    shown = gr.State(None)
    audience_out = [status, table, download, shown]

    def on_show(
        pid: str, n: float, part: float | None, similar: str, cat: str | None
    ) -> tuple[Any, ...]:
        return _guard(
            lambda: _show(_index(get_index), pid, n, part, similar, cat, downloads), _no_audience
        )

    def on_search(
        text: str, n: float, part: float | None, similar: str, cat: str | None
    ) -> tuple[Any, ...]:
        def run() -> tuple[Any, ...]:
            index = _index(get_index)
            hits = search_products(index, text)
            pid = hits.item(0, PRODUCT)
            found = f"{hits.height} matching product{'s' if hits.height != 1 else ''}" + (
                f" (the {SEARCH_LIMIT} most active)" if hits.height == SEARCH_LIMIT else ""
            )
            summary, *rest = _guard(
                lambda: _show(index, pid, n, part, similar, cat, downloads), _no_audience
            )
            picker = gr.Dropdown(choices=_choices(hits), value=pid)
            return (f"{found}; showing `{pid}`.\n\n{summary}", *rest, hits, picker)

        def failed(message: str) -> tuple[Any, ...]:
            return (*_no_audience(message), _EMPTY_MATCHES, gr.Dropdown())

        return _guard(run, failed)

    inputs = [product, size, share, like, category]
    for trigger in (query.submit, search_button.click):
        trigger(on_search, [query, *inputs[1:]], [*audience_out, matches, product])
    for event in (product.input, size.submit, size.blur, share.submit, share.blur):
        event(on_show, inputs, audience_out)
    for event in (like.submit, show.click):
        event(on_show, inputs, audience_out)
    ui.load(
        lambda: _guard(lambda: _categories(_index(get_index)), lambda _: gr.Dropdown()),
        None,
        category,
    )
    return shown


_EMPTY_MATCHES = pl.DataFrame(schema={PRODUCT: pl.String, PRODUCT_NAME: pl.String})


def _choices(hits: pl.DataFrame) -> list[tuple[str, str]]:
    return [
        (f"{pid} — {name or '(no name)'} ({cat or 'no category'})", pid)
        for pid, name, cat in hits.select(PRODUCT, PRODUCT_NAME, CATEGORY).iter_rows()
    ]


def _show(
    index: Index,
    pid: str,
    n: float,
    part: float | None,
    similar: str,
    cat: str | None,
    downloads: Path,
) -> tuple[Any, ...]:
    """Status, the first rows, the whole segment's download, and the campaign state."""
    found, summary = audience(index, pid, int(n or 0), similar, cat, part or None)
    path = audience_csv(found, downloads)
    users = found.rows.get_column(USER).to_list()
    state = None
    if users:  # what the Campaign and Campaigns tabs plan on
        state = {
            "product_id": found.product_id,
            "users": users,
            "size": len(users),
            "strategy": found.strategy,
            "like": list(_similar(similar)),
            "category": cat or None,
        }
    table = audience_frame(found).head(SHOWN_ROWS).with_columns(pl.col("score").round(4))
    return summary, table, gr.DownloadButton(value=str(path), interactive=bool(users)), state


def _no_audience(message: str) -> tuple[Any, ...]:
    empty = pl.DataFrame(schema=dict.fromkeys(AUDIENCE_COLUMNS, pl.String))
    return message, empty, gr.DownloadButton(value=None, interactive=False), None


def _categories(index: Index) -> Any:
    names = index.catalog.get_column(CATEGORY).drop_nulls().unique().sort().to_list()
    return gr.Dropdown(choices=[("(from the catalog)", "")] + [(c, c) for c in names], value="")


def _campaign_tab(shown: gr.State, downloads: Path) -> None:
    gr.Markdown("## How big a test do you need?")
    with gr.Row():
        baseline = gr.Number(
            2.0, label="Conversion rate without the campaign (%)", elem_id="baseline"
        )
        lift = gr.Number(10.0, label="Lift to detect (relative %, e.g. 10 = +10%)", elem_id="lift")
        alpha = gr.Number(0.05, label="Significance level (alpha)", elem_id="alpha")
        power = gr.Number(0.8, label="Power", elem_id="power")
    size_button = gr.Button("Calculate sample size", variant="primary", elem_id="size-button")
    size_out = gr.Markdown(elem_id="size-result")
    curve = gr.Plot(label="Power curve", format="png", elem_id="power-curve")

    def on_size(base: float, rel: float, a: float, p: float) -> tuple[Any, ...]:
        def run() -> tuple[Any, ...]:
            rate = float(base) / 100
            needed = abtest.sample_size(
                rate, abtest.target_rate(rate, float(rel) / 100), alpha=float(a), power=float(p)
            )
            return sample_size_text(needed), power_curve(needed)

        return _guard(run, lambda m: (m, None))

    size_button.click(on_size, [baseline, lift, alpha, power], [size_out, curve])

    gr.Markdown("## Did the test work?")
    with gr.Row():
        conv_a = gr.Number(48, label="Control: conversions", precision=0, elem_id="conv-a")
        exp_a = gr.Number(2400, label="Control: users", precision=0, elem_id="exp-a")
        conv_b = gr.Number(70, label="Treatment: conversions", precision=0, elem_id="conv-b")
        exp_b = gr.Number(2400, label="Treatment: users", precision=0, elem_id="exp-b")
    test_button = gr.Button("Check the result", variant="primary", elem_id="test-button")
    test_out = gr.Markdown(elem_id="test-result")

    def on_test(ca: float, ea: float, cb: float, eb: float, a: float) -> str:
        def run() -> str:
            result = abtest.compare(int(ca), int(ea), int(cb), int(eb), alpha=float(a))
            return comparison_text(result)

        return _guard(run, lambda m: m)

    test_button.click(on_test, [conv_a, exp_a, conv_b, exp_b, alpha], test_out)
    _planner(shown, baseline, lift, alpha, power, downloads)


def _planner(
    shown: gr.State,
    baseline: gr.Number,
    lift: gr.Number,
    alpha: gr.Number,
    power: gr.Number,
    downloads: Path,
) -> None:
    gr.Markdown(
        "## Plan the campaign\nSplits the audience shown on the Audience tab into a treatment "
        "group (contacted) and a random holdout (not contacted), and prices it."
    )
    with gr.Row():
        experiment = gr.Textbox(
            label="Experiment name", placeholder="e.g. spring-speakers", elem_id="experiment"
        )
        holdout = gr.Number(10.0, label="Holdout (%)", elem_id="holdout")
        cost = gr.Number(0.10, label="Cost per contact", elem_id="cost")
        value = gr.Number(40.0, label="Value per conversion", elem_id="value")
    plan_button = gr.Button("Plan campaign", variant="primary", elem_id="plan-button")
    plan_out = gr.Markdown(elem_id="plan-result")
    groups_table = gr.Dataframe(
        headers=GROUP_COLUMNS, label="Groups", interactive=False, elem_id="groups"
    )
    groups_file = gr.DownloadButton(
        "Download both groups (CSV)", interactive=False, elem_id="download-groups"
    )

    def on_plan(state: dict[str, Any] | None, name: str, *numbers: float) -> tuple[Any, ...]:
        def run() -> tuple[Any, ...]:
            if not state:
                raise _MessageError("Open a product's audience on the Audience tab first.")
            hold, base, rel, a, p, c, v = (float(x) for x in numbers)
            plan, groups = campaign.plan_campaign(
                state["users"],
                (name or "").strip() or f"campaign-{state['product_id']}",
                holdout_share=hold / 100,
                baseline_rate=base / 100,
                lift=rel / 100,
                cost_per_contact=c,
                value_per_conversion=v,
                alpha=a,
                power=p,
            )
            path = _download_dir(downloads) / f"groups_{_safe_name(plan.experiment_id)}.csv"
            campaign.write_groups(groups, path)
            shown = groups.head(SHOWN_ROWS)
            return plan_text(plan), shown, gr.DownloadButton(value=str(path), interactive=True)

        def failed(message: str) -> tuple[Any, ...]:
            return message, None, gr.DownloadButton(value=None, interactive=False)

        return _guard(run, failed)

    plan_button.click(
        on_plan,
        [shown, experiment, holdout, baseline, lift, alpha, power, cost, value],
        [plan_out, groups_table, groups_file],
    )


def _campaigns_tab(
    tab: gr.Tab,
    shown: gr.State,
    get_index: IndexGetter,
    store: Store,
    settings: Settings,
    downloads: Path,
) -> None:
    gr.Markdown(
        "## Campaigns\nFreeze the audience shown into a campaign with a random holdout, "
        "launch it when the treatment list is sent, then judge it from the event log."
    )
    source = gr.Markdown(source_text(None), elem_id="campaign-source")
    with gr.Row():
        name = gr.Textbox(
            label="Campaign name", placeholder="e.g. spring-speakers", elem_id="campaign-name"
        )
        holdout = gr.Number(
            0.5, label="Holdout share (0 to 1)", minimum=0, maximum=1, elem_id="campaign-holdout"
        )
        types = sorted(settings.event_types)
        conversion = gr.Dropdown(
            types,
            value="purchased" if "purchased" in types else types[0],
            label="Conversion event",
            elem_id="campaign-conversion",
        )
        scope = gr.Dropdown(
            list(SCOPES), value="product", label="Counts on", elem_id="campaign-scope"
        )
    with gr.Row():
        window = gr.Number(14, label="Window (days)", minimum=0, elem_id="campaign-window")
        cost = gr.Number(0.0, label="Cost per contact", minimum=0, elem_id="campaign-cost")
        value = gr.Number(0.0, label="Value per conversion", minimum=0, elem_id="campaign-value")
    create = gr.Button("Create campaign", variant="primary", elem_id="create-campaign")
    status = gr.Markdown(elem_id="campaigns-status")
    table = gr.Dataframe(
        headers=list(CAMPAIGN_COLUMNS),
        label="Campaigns (newest first)",
        interactive=False,
        wrap=True,
        elem_id="campaigns-table",
    )
    with gr.Row():
        pick = gr.Dropdown(
            label="Campaign", choices=[], value=None, scale=3, elem_id="campaign-pick"
        )
        refresh = gr.Button("Refresh", scale=1, elem_id="refresh-campaigns")
        launch_button = gr.Button("Launch", scale=1, elem_id="launch-campaign")
        show_button = gr.Button("Show report", scale=1, elem_id="show-report")
    with gr.Row():
        log_path = gr.Textbox(
            label="Event log after the launch (ingest output folder or events.parquet)",
            scale=4,
            elem_id="campaign-log",
        )
        run_button = gr.Button("Run report", variant="primary", scale=1, elem_id="run-report")
    report = gr.Markdown(elem_id="campaign-report")
    chart = gr.Image(
        label="Conversion rate per arm",
        type="filepath",
        interactive=False,
        buttons=["download"],
        elem_id="campaign-chart",
    )
    listed = [status, table, pick]

    def listing(message: str, selected: str | None) -> tuple[Any, ...]:
        """The message, the campaigns and the picker (on `selected`, else the newest)."""
        found = store.campaigns()
        ids = [c.id for c in found]
        choices = [(f"{c.id} — {c.name} ({c.state})", c.id) for c in found]
        chosen = selected if selected in ids else next(iter(ids), None)
        return message, campaigns_frame(found), gr.Dropdown(choices=choices, value=chosen)

    def unchanged(message: str) -> tuple[Any, ...]:
        return message, gr.skip(), gr.skip()

    def on_refresh(selected: str | None) -> tuple[Any, ...]:
        return _guard(lambda: listing("", selected), unchanged)

    def on_create(
        state: dict[str, Any] | None,
        title: str | None,
        share: float | None,
        kind: str | None,
        counts_on: str | None,
        *money: float | None,
    ) -> tuple[Any, ...]:
        def run() -> tuple[Any, ...]:
            days, each, worth = (float(x or 0) for x in money)
            plan = campaigns.Plan(
                name=title or "",
                holdout_share=float(share or 0),
                conversion=kind or "",
                scope=counts_on or "",
                window_days=days,
                cost_per_contact=each,
                value_per_conversion=worth,
            )
            made = create_campaign(_index(get_index), store, settings, state, plan)
            return listing(created_text(made), made.id)

        return _guard(run, unchanged)

    def on_launch(selected: str | None) -> tuple[Any, ...]:
        def run() -> tuple[Any, ...]:
            return listing(launched_text(campaigns.launch(store, _chosen(selected))), selected)

        return _guard(run, unchanged)

    def on_show(selected: str | None) -> tuple[Any, ...]:
        return _guard(
            lambda: stored_report(store.campaign(_chosen(selected)), downloads),
            lambda m: (m, None),
        )

    def on_run(selected: str | None, text: str) -> tuple[Any, ...]:
        def run() -> tuple[Any, ...]:
            chosen = _chosen(selected)
            judged, _ = campaigns.report(store, chosen, *read_log(text), settings)
            return (*report_page(judged, downloads), *listing("", chosen)[1:])

        return _guard(run, lambda m: (m, None, gr.skip(), gr.skip()))

    shown.change(source_text, shown, source)
    for event in (tab.select, refresh.click):
        event(on_refresh, pick, listed)
    create.click(on_create, [shown, name, holdout, conversion, scope, window, cost, value], listed)
    launch_button.click(on_launch, pick, listed)
    for event in (pick.input, show_button.click):
        event(on_show, pick, [report, chart])
    for event in (log_path.submit, run_button.click):
        event(on_run, [pick, log_path], [report, chart, table, pick])


def _chosen(selected: str | None) -> str:
    if not selected:
        raise _MessageError("Choose a campaign in the list first (create one above).")
    return selected


def _insights_tab(
    get_index: IndexGetter, results_dir: Path
) -> tuple[Callable[[], tuple[Any, ...]], list[Any]]:
    model = gr.Markdown(elem_id="insights-model")
    verdict = gr.Markdown(elem_id="insights-verdict")
    images: list[Any] = []
    for name, caption, _ in CHARTS:
        images.append(
            gr.Image(
                label=caption,
                type="filepath",
                interactive=False,
                buttons=["download"],
                elem_id=f"chart-{Path(name).stem}",
            )
        )
        images.append(gr.Markdown())
    backtest = gr.Markdown(elem_id="insights-backtest")
    with gr.Accordion("Full backtest report (results/model_metrics.md)", open=False):
        report = gr.Markdown()
    refresh = gr.Button("Refresh")

    def load() -> tuple[Any, ...]:
        header = _guard(lambda: model_text(_index(get_index)), lambda m: m)
        charts: list[Any] = []
        for name, _, command in CHARTS:
            path = results_dir / "charts" / name
            found = path.is_file()
            charts.append(gr.Image(value=str(path) if found else None, visible=found))
            charts.append("" if found else f"*{name} is not there yet: run {command} to make it.*")
        return (
            header,
            _verdict(results_dir),
            *charts,
            backtest_text(results_dir),
            _report(results_dir),
        )

    outputs = [model, verdict, *images, backtest, report]
    refresh.click(load, outputs=outputs)
    return load, outputs


def mount(
    app: FastAPI,
    get_index: IndexGetter,
    results_dir: Path,
    store: Store,
    settings: Settings,
    path: str = "/ui",
) -> FastAPI:
    """Serve the merchant UI under `path` of the API's FastAPI app (one process, one port).

    Gradio makes (and never closes) a new event loop for each lock it creates outside a
    running loop; building inside a short-lived running loop avoids those leaks, which
    would otherwise surface as ResourceWarnings wherever the app is built (tests).
    """

    def build() -> None:
        gr.mount_gradio_app(
            app,
            build_ui(get_index, results_dir, store, settings),
            path=path,
            footer_links=[],
            allowed_paths=[str(results_dir.resolve())],
            show_error=False,
        )

    async def build_in_loop() -> None:
        build()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(build_in_loop())
    else:
        build()  # already inside a loop (e.g. an app factory called by uvicorn)
    return app


def launch(
    get_index: IndexGetter,
    results_dir: Path,
    store: Store,
    settings: Settings,
    host: str,
    port: int,
) -> None:
    """Serve the UI alone (`audience ui`); blocks until interrupted."""
    build_ui(get_index, results_dir, store, settings).launch(
        server_name=host,
        server_port=port,
        footer_links=[],
        allowed_paths=[str(results_dir.resolve())],
        show_error=False,
        quiet=True,
    )
