"""The machine a benchmark ran on, and the report file that records it beside the figures."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import polars as pl


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024**2, 1),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "os": platform.platform(),
    }


def save(out: Path, command: str, goals: dict[str, float], steps: list[dict[str, Any]]) -> None:
    """Write a benchmark's report: the command that made it, its goals, machine and steps."""
    report = {"command": command, "goals": goals, "machine": machine(), "steps": steps}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
