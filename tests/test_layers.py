"""The package's shape: stages import only earlier stages, no web stack outside serving.

The stages, in the order of the data flow (audience/__init__.py). A module may import
the shared modules at the top and its own or an earlier stage, never a later one, and
never another stage's private (underscored) names.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("data", "model", "evidence", "experiments", "store", "serving")
#: Shared by every stage. `settings` reads the default event weights of `data.schema`
#: (the one vocabulary), the only stage module a shared one may import.
SHARED = {"errors": (), "atomic": (), "artifact": (), "settings": ("audience.data.schema",)}
WEB = ("audience/serving/api", "audience/serving/ui.py")


def _modules(folder: str) -> dict[str, Path]:
    """Dotted name -> file, for every module under ROOT/folder."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT / folder.split("/")[0]).with_suffix("").parts
        name = ".".join((folder.split("/")[0], *parts)).removesuffix(".__init__")
        found[name.replace("cli.audience_cli", "audience_cli")] = path
    return found


LIBRARY = _modules("audience")
CLI = _modules("cli/audience_cli")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every audience import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [a.name for a in node.names]
            if node.module == "audience":  # `from audience import stage_module`
                out += [(f"audience.{n}", []) for n in names if f"audience.{n}" in LIBRARY]
                out += [(node.module, [n]) for n in names if f"audience.{n}" not in LIBRARY]
            elif node.module.startswith("audience."):
                submodules = [n for n in names if f"{node.module}.{n}" in LIBRARY]
                out += [(f"{node.module}.{n}", []) for n in submodules]
                out.append((node.module, [n for n in names if n not in submodules]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("audience.")]
    return out


def _stage(module: str) -> str | None:
    """The stage a library module belongs to; None for the shared ones and the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_the_folder_listing_is_the_stages_and_the_shared_modules() -> None:
    top = {p.stem for p in (ROOT / "audience").iterdir() if p.suffix == ".py"}
    folders = {p.name for p in (ROOT / "audience").iterdir() if (p / "__init__.py").exists()}
    assert folders == set(STAGES)
    assert top == {"__init__", *SHARED}
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((ROOT / "audience" / stage / "__init__.py").read_text()))
        assert doc and len(doc.splitlines()) >= 3, f"audience/{stage}/__init__.py says what it does"


@pytest.mark.parametrize("module", sorted(LIBRARY))
def test_a_module_imports_no_later_stage(module: str) -> None:
    own = _stage(module)
    for target, _ in _imports(LIBRARY[module]):
        there = _stage(target)
        if own is None:
            short = module.removeprefix("audience.")
            assert there is None or target in SHARED.get(short, ()), f"{module} -> {target}"
        elif there is not None:
            assert STAGES.index(there) <= STAGES.index(own), f"{module} -> {target}"


@pytest.mark.parametrize("module", sorted(LIBRARY | CLI))
def test_no_module_reaches_into_another_stages_private_names(module: str) -> None:
    own = _stage(module) if module in LIBRARY else "cli"
    for target, names in _imports((LIBRARY | CLI)[module]):
        if _stage(target) != own:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{module} imports {private} from {target}"


def test_no_module_outside_the_web_layer_imports_a_web_framework() -> None:
    plain = [
        name for name, path in LIBRARY.items() if not str(path.relative_to(ROOT)).startswith(WEB)
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {plain!r} + ['audience_cli.main']: importlib.import_module(name)\n"
        "web = {m.split('.')[0] for m in sys.modules} & {'fastapi', 'gradio', 'starlette', "
        "'uvicorn'}\n"
        "assert not web, web\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert len(plain) > 30  # every stage's modules were imported, not an empty list
