"""Artifacts: published atomically, verified on load, refused when incomplete or tampered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from audience import artifact
from audience.errors import ArtifactError


def tables(rows: int = 3) -> dict[str, pl.DataFrame]:
    frame = pl.DataFrame({"x": list(range(rows))})
    return dict.fromkeys(artifact.TABLES, frame)


def publish(root: Path, rows: int = 3) -> Path:
    return artifact.publish(root, tables(rows), {"scorer": "seed"}, {"config": {"n": 1}})


def test_publish_then_load_round_trips(tmp_path: Path) -> None:
    folder = publish(tmp_path)
    assert (tmp_path / "current").read_text().strip() == folder.name
    loaded = artifact.load(tmp_path)
    assert loaded.version == folder.name
    assert loaded.model == {"scorer": "seed"}
    assert loaded.manifest["files"]["audiences.parquet"]["rows"] == 3
    assert loaded.tables["user_scores"].height == 3


def test_a_table_written_already_is_moved_in_and_verified(tmp_path: Path) -> None:
    made = tmp_path / ".train-x" / "user_scores.parquet"
    made.parent.mkdir()
    pl.DataFrame({"x": [1, 2, 3, 4]}).write_parquet(made)
    folder = artifact.publish(
        tmp_path, tables() | {"user_scores": made}, {"scorer": "seed"}, {"config": {"n": 1}}
    )
    assert not made.exists()
    loaded = artifact.load(tmp_path)
    assert loaded.path == folder
    assert loaded.manifest["files"]["user_scores.parquet"]["rows"] == 4
    assert loaded.tables["user_scores"].get_column("x").to_list() == [1, 2, 3, 4]


def test_a_workspace_left_by_a_killed_train_is_removed_by_the_next(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f".train-{gone.stdout.strip()}-abc"
    live = tmp_path / f".train-{os.getpid()}-abc"  # a train still running
    for folder in (stale, live):
        folder.mkdir()
        (folder / "user_scores.parquet").write_bytes(b"x")
    with artifact.workspace(tmp_path) as work:
        assert work.parent == tmp_path and work.is_dir()
        assert not stale.exists() and live.exists()
    assert not work.exists()


def test_a_new_version_becomes_current_and_old_ones_are_pruned(tmp_path: Path) -> None:
    names = [publish(tmp_path, rows).name for rows in range(1, artifact.KEEP_VERSIONS + 3)]
    assert artifact.load(tmp_path).version == names[-1]
    kept = sorted(p.name for p in (tmp_path / "versions").iterdir())
    assert kept == names[-artifact.KEEP_VERSIONS :]


def test_a_tampered_table_is_refused(tmp_path: Path) -> None:
    folder = publish(tmp_path)
    pl.DataFrame({"x": [9, 9, 9]}).write_parquet(folder / "audiences.parquet")
    with pytest.raises(ArtifactError, match=r"audiences\.parquet: does not match its checksum"):
        artifact.load(tmp_path)


def test_a_truncated_table_is_refused(tmp_path: Path) -> None:
    folder = publish(tmp_path)
    data = (folder / "user_scores.parquet").read_bytes()
    (folder / "user_scores.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="does not match its checksum"):
        artifact.load(tmp_path)


@pytest.mark.parametrize("missing", ["manifest.json", "products.parquet"])
def test_an_incomplete_version_is_refused(tmp_path: Path, missing: str) -> None:
    folder = publish(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        artifact.load(tmp_path)


def test_a_manifest_from_another_schema_version_is_refused(tmp_path: Path) -> None:
    folder = publish(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest | {"schema_version": 99}))
    with pytest.raises(ArtifactError, match="schema version 99"):
        artifact.load(tmp_path)


def test_no_artifact_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="audience train"):
        artifact.load(tmp_path)


def test_a_failed_publish_leaves_the_current_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = publish(tmp_path)

    def broken(self: pl.DataFrame, path: Path, **options: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        publish(tmp_path)
    monkeypatch.undo()
    assert artifact.load(tmp_path).version == good.name
    assert list(tmp_path.glob(".tmp-*"))  # the half-written version is hidden ...
    publish(tmp_path)
    assert not list(tmp_path.glob(".tmp-*"))  # ... and swept by the next publish
