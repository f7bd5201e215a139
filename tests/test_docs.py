"""The commands that README.md and docs/ show run as written.

Every `audience ...` line in a shell block parses with the real command line, every
benchmark or load script's flags exist, every console example prints what the page
says, and the README's analyst path runs from start to end on a log in the columns it
names (a small generated log, written as the file the README points at).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from audience.data.generate import generate
from audience_cli.main import parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deployment/README.md"]
BLOCK = re.compile(r"```(bash|console)\n(.*?)```", re.S)
BIN = Path(sys.executable).parent


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _blocks(page: Path, kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(page.read_text()) if lang == kind]


def _joined(lines: list[str]) -> list[str]:
    """Whole commands: backslash continuations and quotes that span lines joined."""
    out: list[str] = []
    open_ = False  # the last command goes on: a continuation or an unclosed quote
    for line in lines:
        if open_:
            out[-1] = out[-1].removesuffix("\\") + ("" if out[-1].endswith("\\") else "\n") + line
        else:
            out.append(line)
        open_ = out[-1].endswith("\\") or not _parses(out[-1])
    return out


def _parses(line: str) -> bool:
    try:
        shlex.split(line, comments=True)
    except ValueError:
        return False
    return True


def _argv(line: str) -> list[str]:
    """The words of a command, comments and leading VAR=value assignments dropped."""
    words = shlex.split(line, comments=True)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)
    return words


def _examples() -> list[tuple[str, list[str], str]]:
    """(page, argv, the output shown) for each `$ audience` line of a console block."""
    found = []
    for page in PAGES:
        for body in _blocks(page, "console"):
            for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
                command, _, output = chunk.partition("\n")
                found.append((_rel(page), _argv(command)[1:], output.strip()))
    return found


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for body in _blocks(page, "bash"):
            found += [(_rel(page), _argv(line)) for line in _joined(body.splitlines())]
    found += [(page, ["audience", *argv]) for page, argv, _ in _examples()]
    return [(name, argv) for name, argv in found if argv]


COMMANDS = _commands()
AUDIENCE = [(n, a[1:]) for n, a in COMMANDS if Path(a[0]).name == "audience"]
#: `python SCRIPT ...` lines (not `python -c` nor `python -m`)
SCRIPTS = [
    (n, a[1:]) for n, a in COMMANDS if Path(a[0]).name == "python" and a[1] not in ("-c", "-m")
]


def _id(case: tuple[str, list[str]]) -> str:
    return f"{case[0]}: {' '.join(case[1])[:60]}"


@pytest.mark.parametrize("case", AUDIENCE, ids=_id)
def test_every_audience_command_shown_parses(case: tuple[str, list[str]]) -> None:
    page, argv = case
    try:
        parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{page}: `audience {' '.join(argv)}` does not parse ({exc})")


@pytest.mark.parametrize("case", SCRIPTS, ids=_id)
def test_every_script_shown_exists_with_its_flags(case: tuple[str, list[str]]) -> None:
    page, argv = case
    script = ROOT / argv[0]
    assert script.is_file(), f"{page}: {argv[0]} does not exist"
    shown = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    for flag in (w.split("=")[0] for w in argv[1:] if w.startswith("--")):
        assert flag in shown.stdout, f"{page}: {argv[0]} has no flag {flag}"


@pytest.mark.parametrize("example", _examples(), ids=lambda e: f"{e[0]}: {' '.join(e[1])[:50]}")
def test_every_console_example_prints_what_the_page_shows(
    example: tuple[str, list[str], str],
) -> None:
    page, argv, shown = example
    done = subprocess.run(
        [sys.executable, "-m", "audience_cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == shown, f"{page}: `audience {' '.join(argv)}` prints otherwise"


def test_the_readme_analyst_path_runs_as_written(tmp_path: Path) -> None:
    """Regression guard for the README: its own-log commands, on a log in its columns."""
    events, _ = generate(preset="loyal", scale=0.05)
    names = {"search_keyword": "view", "cart": "addtocart", "purchased": "transaction"}
    (tmp_path / "exports").mkdir()
    events.select(
        pl.col("user_id").alias("visitorid"),
        pl.col("product_id").alias("itemid"),
        pl.col("event_type").cast(pl.String).replace(names).alias("event"),
        pl.col("event_time").dt.epoch("ms").alias("timestamp"),
    ).write_csv(tmp_path / "exports" / "events.csv")
    scripts = [b for b in _blocks(ROOT / "README.md", "bash") if "exports/" in b]
    assert len(scripts) == 2, "the README's analyst path: analyze, then ingest/train/evaluate"
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for script in scripts:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"README block failed:\n{script}\n{done.stderr[-3000:]}"
    for made in (
        "results/mine/analysis.md",
        "artifacts/mine/current",
        "results/mine/model_metrics.md",
    ):
        assert (tmp_path / made).is_file(), made


def test_the_pages_commands_are_found() -> None:
    """Guards the extraction itself: an empty list would pass every test above."""
    readme = {argv[0] for page, argv in AUDIENCE if page == "README.md"}
    assert {"analyze", "ingest", "train", "evaluate", "abtest"} <= readme
    assert {page for page, _ in AUDIENCE} >= {"README.md", "docs/analysis.md", "docs/data.md"}
    assert SCRIPTS and _examples()


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", BLOCK.sub("", page.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_link_between_pages_resolves(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{_rel(page)}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(linked), f"{_rel(page)}: no heading #{anchor} in {path}"
