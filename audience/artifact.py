"""Versioned, verified model artifacts: write a version folder, then switch `current`.

Layout under an artifact root::

    ROOT/current                  the name of the version being served (one line)
    ROOT/versions/<version>/      one trained model: Parquet tables, model.json, manifest.json

A version is written under a hidden temporary name and renamed into
`versions/` only once complete; then `current` is replaced atomically. A train
that fails or is killed leaves at most a `.tmp-*` folder behind (removed by the
next publish), or a `.train-*` workspace (removed by the next `workspace`), and the
previous `current` untouched. Loading checks the manifest
(schema version, every file's size, SHA-256 and row count) and refuses anything
else with an `ArtifactError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import polars as pl

from audience import atomic
from audience.errors import ArtifactError

#: 2: a product whose audience is its category's is not copied; 3: segment evidence;
#: 4: the collaborative term's factors.
SCHEMA_VERSION = 4
CURRENT = "current"
VERSIONS = "versions"
MANIFEST = "manifest.json"
MODEL = "model.json"
#: What ranks any product's users to any depth (`audience.model.segments`).
SEGMENT_TABLES = (
    "segment_related",
    "segment_touched",
    "segment_direct",
    "segment_category",
    "segment_codes",
    "segment_cf_users",
    "segment_cf_products",
)
#: Tables every artifact holds.
TABLES = ("audiences", "category_audiences", "user_scores", "products", *SEGMENT_TABLES)
#: LZ4 rather than Polars' default zstd: at 100x the sample, writing user_scores (42M
#: rows of mostly floats) took 13 CPU seconds more with zstd, for an artifact 30% smaller
#: (2.7 GB instead of 3.8).
COMPRESSION: Final = "lz4"
KEEP_VERSIONS = 5
#: A table to publish: computed as it is written if lazy, or a Parquet file written
#: already (moved in: a rename on the artifact root's file system).
Table = pl.DataFrame | pl.LazyFrame | Path


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: dict[str, Any]
    model: dict[str, Any]
    tables: dict[str, pl.DataFrame]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _entry(path: Path, rows: int | None) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path), "rows": rows}


def publish(
    root: Path,
    tables: dict[str, Table],
    model: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write a new version under `root` and make it current; returns its folder. A lazy
    table is computed as it is written, a part at a time; a file is moved in."""
    missing = set(TABLES) - set(tables)
    if missing:
        raise ArtifactError(root, f"cannot publish without tables {sorted(missing)}")
    created = datetime.now(UTC)
    version = created.strftime("%Y%m%dT%H%M%S%fZ")
    versions = root / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = root / f".tmp-{version}-{os.getpid()}"
    work.mkdir()

    def write(name: str, frame: Table) -> dict[str, Any]:
        path = work / f"{name}.parquet"
        if isinstance(frame, pl.DataFrame):
            # A table with a list column is one row group: Polars' writer goes over a
            # list-of-strings column's whole text buffers once per row group, which made
            # the default (~262k rows a group) quadratic: 17 s instead of 1.5 s for the
            # reasons of 20M audience rows. Other tables keep the default, which is written
            # in parallel (the product table at 100x the sample: 4.8 s instead of 8.5 s).
            listed = any(isinstance(kind, pl.List) for kind in frame.schema.values())
            size = max(frame.height, 1) if listed else None
            frame.write_parquet(path, compression=COMPRESSION, row_group_size=size)
            return _entry(path, frame.height)
        if isinstance(frame, Path):
            shutil.move(frame, path)
        else:
            frame.sink_parquet(path, compression=COMPRESSION)
        return _entry(path, pl.scan_parquet(path).select(pl.len()).collect().item())

    # Tables are written side by side: Polars and hashlib release the GIL.
    with ThreadPoolExecutor(len(tables)) as pool:
        entries = pool.map(write, tables, tables.values())
        files: dict[str, Any] = {
            f"{name}.parquet": e for name, e in zip(tables, entries, strict=True)
        }
    (work / MODEL).write_text(json.dumps(model, indent=2, default=str) + "\n")
    files[MODEL] = _entry(work / MODEL, None)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "version": version,
        "created_at": created.isoformat(),
        **meta,
        "files": files,
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    final = versions / version
    work.rename(final)
    atomic.write_text(version + "\n", root / CURRENT)
    _prune(root, version)
    return final


@contextmanager
def workspace(root: Path) -> Iterator[Path]:
    """A folder under `root` for tables written before they are published (`publish`
    moves them in), removed when done. Only a killed process leaves one behind: it is
    named for its process, and removed by the next workspace once that process is gone
    (at 100x the sample it holds a 2.8 GB user_scores table)."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".train-*"):
        owner = stale.name.split("-")[1]
        if owner.isdigit() and not _running(int(owner)):
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f".train-{os.getpid()}-", dir=root) as folder:
        yield Path(folder)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        pass
    return True


def _prune(root: Path, current: str) -> None:
    """Keep the newest KEEP_VERSIONS versions (never the current one)."""
    names = sorted(p.name for p in (root / VERSIONS).iterdir() if p.is_dir())
    for name in names[:-KEEP_VERSIONS]:
        if name != current:
            shutil.rmtree(root / VERSIONS / name, ignore_errors=True)


def current(root: Path) -> Path:
    """The folder `root/current` points at (or `root` itself if it is a version folder)."""
    if (root / MANIFEST).exists():
        return root
    pointer = root / CURRENT
    if not pointer.exists():
        raise ArtifactError(root, "no trained artifact here (run `audience train --out DIR`)")
    version = pointer.read_text().strip()
    if not version or "/" in version or version.startswith("."):
        raise ArtifactError(pointer, f"does not name a version: {version!r}")
    return root / VERSIONS / version


def load(root: Path) -> Artifact:
    """The current artifact under `root`, verified against its manifest."""
    folder = current(root)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise ArtifactError(folder, "incomplete: manifest.json is missing") from None
    except json.JSONDecodeError as error:
        raise ArtifactError(folder / MANIFEST, f"is not valid JSON ({error})") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            folder,
            f"schema version {manifest.get('schema_version')!r}, this audience reads "
            f"{SCHEMA_VERSION}: retrain with this version",
        )
    files = manifest.get("files", {})
    expected = {f"{t}.parquet" for t in TABLES} | {MODEL}
    if set(files) != expected:
        raise ArtifactError(folder, f"manifest lists {sorted(files)}, expected {sorted(expected)}")
    for name, entry in files.items():
        path = folder / name
        if not path.exists():
            raise ArtifactError(path, "incomplete: file listed in the manifest is missing")
        if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
            raise ArtifactError(path, "does not match its checksum in manifest.json (changed?)")
    tables = {t: pl.read_parquet(folder / f"{t}.parquet") for t in TABLES}
    for name, frame in tables.items():
        if frame.height != files[f"{name}.parquet"]["rows"]:
            raise ArtifactError(folder / f"{name}.parquet", "row count differs from manifest")
    model = json.loads((folder / MODEL).read_text())
    return Artifact(path=folder, manifest=manifest, model=model, tables=tables)
