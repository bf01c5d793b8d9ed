"""The dataset registry (`data/datasets.yaml`) and where local data files live.

A registry entry names a data set once: its local file (relative to the data directory),
its hub id for machines with internet, and how to read a row (field mapping, answer
format). Specs, the CLI and the web UI then refer to it by name.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import o1pruner
from o1pruner.data.answers import ANSWER_FORMATS
from o1pruner.data.arithmetic import PARTITIONS
from o1pruner.data.readers import FILE_FORMATS
from o1pruner.errors import DataError
from o1pruner.safeyaml import read_yaml_file
from o1pruner.spec import ArithmeticOptions

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "O1PRUNER_DATA_DIR"
GENERATORS = ("arithmetic",)
_ENTRY_KEYS = {"description", "path", "format", "hub", "config", "split", "fields",
               "answer_format", "skip_rows_without_gold", "generator", "arithmetic",
               "partition"}
_FIELD_KEYS = {"problem", "answer", "id"}


def registry_path() -> Path:
    """`data/datasets.yaml` at the repository root."""
    return Path(o1pruner.__file__).resolve().parents[1] / "data" / "datasets.yaml"


def resolve_data_dir(local_dir: str | None = None) -> Path | None:
    """Folder holding local copies of the registry's files, or None (use hub ids).

    Order: `local_dir`, then $O1PRUNER_DATA_DIR, then a `shared/data` folder beside the
    repository if it exists.
    """
    if local_dir:
        return Path(local_dir).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    beside = Path(o1pruner.__file__).resolve().parents[2] / "shared" / "data"
    return beside if beside.is_dir() else None


@dataclass(frozen=True)
class RegistryEntry:
    """One named data set: a local file (+ hub id) or a generator with default options."""

    name: str
    description: str
    format: str  # jsonl | json | parquet | generator
    path: str | None = None  # relative to the data directory
    hub: str | None = None
    config: str | None = None
    split: str | None = None
    problem_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    answer_format: str = "plain"
    skip_rows_without_gold: bool = False
    generator: str | None = None
    arithmetic: dict[str, Any] = field(default_factory=dict)
    partition: str | None = None

    @property
    def is_generator(self) -> bool:
        return self.format == "generator"

    def local_file(self, data_dir: Path | None) -> Path | None:
        """The entry's file inside `data_dir` if it exists there."""
        if data_dir is None or self.path is None:
            return None
        candidate = data_dir / self.path
        return candidate if candidate.is_file() else None

    def source(self) -> str:
        """Where the rows come from, in a few words (for listings)."""
        if self.is_generator:
            opts = " ".join(f"{k}={v}" for k, v in sorted(self.arithmetic.items()))
            if self.partition:
                opts += f" partition={self.partition}"
            return f"generator:{self.generator} {opts}".strip()
        hub = f" | hub:{self.hub}" + (f" ({self.config})" if self.config else "") if self.hub else ""
        return f"{self.path}{hub}"


def _entry(name: str, raw: Any, where: str) -> RegistryEntry:
    """Validate one YAML entry; errors name the registry file and the entry."""
    here = f"{where}: dataset {name!r}"
    if not isinstance(raw, dict):
        raise DataError(f"{here}: expected a mapping of settings, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise DataError(f"{here}: unknown key(s) {', '.join(unknown)}; allowed: "
                        f"{', '.join(sorted(_ENTRY_KEYS))}")
    fields = raw.get("fields") or {}
    if not isinstance(fields, dict) or set(fields) - _FIELD_KEYS:
        raise DataError(f"{here}: fields must map problem/answer/id to column names")
    fmt = raw.get("format") or ("generator" if raw.get("generator") else None)
    if fmt is None and raw.get("path"):
        fmt = FILE_FORMATS.get(Path(raw["path"]).suffix.lower())
    if fmt not in (*FILE_FORMATS.values(), "generator"):
        raise DataError(f"{here}: format {fmt!r} is not one of jsonl, json, parquet, generator")
    answer_format = raw.get("answer_format", "plain")
    if answer_format not in ANSWER_FORMATS:
        raise DataError(f"{here}: answer_format {answer_format!r} is not one of "
                        f"{', '.join(ANSWER_FORMATS)}")
    if fmt == "generator":
        if raw.get("generator") not in GENERATORS:
            raise DataError(f"{here}: generator must be one of {', '.join(GENERATORS)}")
        if raw.get("partition") not in (None, *PARTITIONS):
            raise DataError(f"{here}: partition must be one of {', '.join(PARTITIONS)}")
        try:
            ArithmeticOptions(**(raw.get("arithmetic") or {}))
        except ValueError as err:
            raise DataError(f"{here}: arithmetic: {err}") from None
    elif not raw.get("path") or not fields.get("problem") or not fields.get("answer"):
        raise DataError(f"{here}: a file entry needs path and fields.problem / fields.answer")
    return RegistryEntry(
        name=name, description=str(raw.get("description", "")), format=fmt,
        path=raw.get("path"), hub=raw.get("hub"), config=raw.get("config"),
        split=raw.get("split"), problem_field=fields.get("problem"),
        answer_field=fields.get("answer"), id_field=fields.get("id"),
        answer_format=answer_format,
        skip_rows_without_gold=bool(raw.get("skip_rows_without_gold", False)),
        generator=raw.get("generator"), arithmetic=dict(raw.get("arithmetic") or {}),
        partition=raw.get("partition"),
    )


def registry(path: Path | None = None) -> dict[str, RegistryEntry]:
    """All registry entries by name, parsed and checked from `data/datasets.yaml`."""
    path = path or registry_path()
    document = read_yaml_file(path, "dataset registry", DataError)
    datasets = (document or {}).get("datasets") if isinstance(document, dict) else None
    if not isinstance(datasets, dict):
        raise DataError(f"{path}: expected a top-level `datasets:` mapping of name -> entry")
    return {str(name): _entry(str(name), raw, str(path)) for name, raw in datasets.items()}
