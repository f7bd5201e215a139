"""Human-readable renderings of command results (the `--json` form is the result itself)."""

from __future__ import annotations

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


def stats(s: dict[str, Any]) -> str:
    """The summary statistics of a log (audience.stats.log_stats)."""
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
