"""Open raw event files (CSV, Parquet, or a glob of either) as lazy frames, safely.

Everything that can be wrong with a file before its rows are read is found here
and reported as one `InputError` naming the file: missing, empty, a directory,
a format we do not read, another text encoding, a header without rows. Each file
is scanned lazily (nothing is loaded until a sink runs), with every column read
as text and two provenance columns added so a rejected row can be traced back.
"""

from __future__ import annotations

import codecs
import csv
import glob
from pathlib import Path

import polars as pl

from audience.errors import InputError

SOURCE_FILE = "source_file"
SOURCE_ROW = "source_row"

_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_SNIFF_BYTES = 1 << 16
_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


def resolve(source: str | Path) -> list[Path]:
    """The files a path or glob names, sorted; an error if there are none."""
    text = str(source)
    if glob.has_magic(text):
        paths = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())  # noqa: PTH207
        if not paths:
            raise InputError(text, "no files match this pattern")
        return paths
    path = Path(text)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory; pass a file or a glob such as 'DIR/*.csv'")
    return [path]


def _is_parquet(path: Path, head: bytes) -> bool:
    suffix = path.suffix.lower()
    if head.startswith(b"PAR1"):
        return True
    if suffix in _PARQUET_SUFFIXES:
        raise InputError(path, "has a .parquet name but is not a Parquet file")
    if suffix not in _CSV_SUFFIXES:
        raise InputError(
            path, f"unsupported file type '{suffix or '(none)'}': expected .csv or .parquet"
        )
    return False


def _check_text(path: Path, head: bytes) -> None:
    for bom, name in _BOMS.items():
        if head.startswith(bom):
            raise InputError(
                path, f"is {name}-encoded; convert it to UTF-8 (iconv -f {name} -t UTF-8)"
            )
    if b"\x00" in head:
        raise InputError(path, "contains binary data (NUL bytes); it is not a CSV text file")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise InputError(path, _where_not_utf8(path) or "is not UTF-8") from exc


def _where_not_utf8(path: Path) -> str | None:
    """The first line with invalid UTF-8, as a message (only run on the error path)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return (
                    f"is not UTF-8: line {number} has byte 0x{line[exc.start]:02x}; "
                    "convert the file, e.g. iconv -f latin1 -t UTF-8"
                )
    return None


def _separator(path: Path, head: bytes) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    header = head.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return max([",", ";", "\t", "|"], key=header.count)


def scan(path: Path) -> pl.LazyFrame:
    """One file as a lazy frame plus SOURCE_FILE and SOURCE_ROW (1-based, header excluded).

    CSV columns are all read as text; Parquet columns keep their types.
    """
    if path.stat().st_size == 0:
        raise InputError(path, "is empty")
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if _is_parquet(path, head):
        try:
            frame = pl.scan_parquet(path, row_index_name=SOURCE_ROW, row_index_offset=1)
            frame.collect_schema()
        except pl.exceptions.PolarsError as exc:
            raise InputError(path, f"cannot be read as Parquet: {exc}") from exc
    else:
        _check_text(path, head)
        frame = pl.scan_csv(
            path,
            separator=_separator(path, head),
            infer_schema=False,
            row_index_name=SOURCE_ROW,
            row_index_offset=1,
        )
    try:
        empty = frame.head(1).collect().height == 0
    except pl.exceptions.PolarsError as exc:
        raise explain_read_error([path], exc) from exc
    if empty:
        raise InputError(path, "has a header but no data rows")
    return frame.with_columns(pl.lit(str(path)).alias(SOURCE_FILE))


def scan_all(paths: list[Path]) -> pl.LazyFrame:
    """All files as one lazy frame; columns missing from some files are null there."""
    frames = [scan(path) for path in paths]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal")


def explain_read_error(paths: list[Path], exc: pl.exceptions.PolarsError) -> InputError:
    """Turn an error raised while streaming rows into one line naming the file and row."""
    message = str(exc).split("\n", 1)[0]
    for path in paths:
        if path.suffix.lower() in _PARQUET_SUFFIXES:
            continue
        if "utf-8" in message.lower():
            where = _where_not_utf8(path)
        elif "more fields" in message:
            where = _where_ragged(path)
        else:
            where = None
        if where:
            return InputError(path, where)
    label = paths[0] if len(paths) == 1 else f"{paths[0].parent}/ ({len(paths)} files)"
    return InputError(label, f"cannot be read: {message}")


def _where_ragged(path: Path) -> str | None:
    with path.open("rb") as handle:
        separator = _separator(path, handle.read(_SNIFF_BYTES))
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=separator)
        width = len(next(reader))
        for number, row in enumerate(reader, start=1):
            if len(row) > width:
                return f"data row {number} has {len(row)} fields but the header has {width}"
    return None
