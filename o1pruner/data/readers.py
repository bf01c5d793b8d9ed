"""Raw rows from a .jsonl, .json (list of objects) or .parquet file, or a hub data set.

Every row comes with where it was found ("line 12", "item 3", "row 7") so that errors name
the place a user can open in an editor.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from o1pruner.errors import DataError

logger = logging.getLogger(__name__)

FILE_FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class RawRow:
    """One source row before field mapping: `where` is e.g. "line 12" (1-based)."""

    where: str
    number: int
    value: Any


def file_format(path: Path | str) -> str | None:
    """jsonl / json / parquet from a file name, or None for anything else."""
    return FILE_FORMATS.get(Path(path).suffix.lower())


def read_rows(path: Path, fmt: str | None = None) -> list[RawRow]:
    """All rows of a local file; DataError names the file and line for unreadable input."""
    fmt = fmt or file_format(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if fmt == "jsonl":
        return list(_read_jsonl(path))
    if fmt == "json":
        return _read_json(path)
    if fmt == "parquet":
        return _read_parquet(path)
    raise DataError(f"{path}: unknown format {fmt!r}; expected a .json, .jsonl or .parquet file")


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise DataError(f"{path} line {number}: not UTF-8 text ({err.reason})") from None
            if not line:
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {number}: invalid JSON ({err.msg} at column "
                                f"{err.colno}); expected one JSON object per line") from None
            yield RawRow(f"line {number}", number, value)


def _read_json(path: Path) -> list[RawRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno}: invalid JSON ({err.msg} at column "
                        f"{err.colno}); expected a JSON list of objects") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, got a "
                        f"{type(data).__name__} (for one object per line, use .jsonl)")
    return [RawRow(f"item {i}", i, value) for i, value in enumerate(data, start=1)]


def _read_parquet(path: Path) -> list[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read as parquet ({err})") from None
    return [RawRow(f"row {i}", i, value) for i, value in enumerate(table.to_pylist(), start=1)]


def count_rows(path: Path, fmt: str | None = None) -> int:
    """Rows in a local file, cheaply where the format allows (for listings)."""
    fmt = fmt or file_format(path)
    if fmt == "jsonl":
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return len(read_rows(path, fmt))


def read_hub_rows(hub_id: str, config: str | None, split: str) -> list[RawRow]:
    """Rows of a Hugging Face hub data set through `datasets.load_dataset`."""
    import datasets

    try:
        dataset = datasets.load_dataset(hub_id, config, split=split)
    except (ConnectionError, OSError) as err:
        raise DataError(
            f"{hub_id}: the Hugging Face hub is unreachable or has no such data set "
            f"(config {config}, split {split}): {err}. Without internet, download the data "
            "set elsewhere and use a local .jsonl/.json/.parquet file, or set "
            "data.local_dir / $O1PRUNER_DATA_DIR to a folder with the registry's files."
        ) from None
    except ValueError as err:  # unknown config or split
        raise DataError(f"{hub_id}: {err}") from None
    return [RawRow(f"row {i}", i, dict(value)) for i, value in enumerate(dataset, start=1)]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's content, remembered per (path, size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
