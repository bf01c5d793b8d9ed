"""Load a data set (registry name, local file, hub id or generator) as validated Problems.

Every row is checked at the boundary: a row that is not an object, a missing or empty
problem, a missing gold or a duplicate id stops the load with a DataError that names the
file and the 1-based line (item, row), so a user can fix the file instead of reading a
traceback from deep inside pre-sampling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

from o1pruner.data.answers import AnswerFormatError, extract_gold, scalar_to_text
from o1pruner.data.arithmetic import GENERATOR_VERSION, generate_arithmetic
from o1pruner.data.readers import RawRow, file_format, file_sha256, read_hub_rows, read_rows
from o1pruner.data.registry import RegistryEntry, registry, resolve_data_dir
from o1pruner.errors import DataError
from o1pruner.spec import ArithmeticOptions, DatasetRef

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class Problem:
    """A problem with its gold answer: the unit every stage works on."""

    id: str  # unique within the data set
    problem: str
    gold: str  # normalised gold answer, never empty


@dataclass(frozen=True)
class Source:
    """A data set resolved to where its rows come from and how to read them."""

    name: str
    kind: str  # file | hub | generator
    label: str  # names the source in messages (file path, hub id, generator)
    path: Path | None = None
    file_format: str | None = None
    hub: str | None = None
    config: str | None = None
    split: str | None = None
    problem_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    answer_format: str = "plain"
    skip_rows_without_gold: bool = False
    options: ArithmeticOptions | None = None
    partition: str | None = None


def _as_ref(ref: DatasetRef | str) -> DatasetRef:
    return DatasetRef(name=ref) if isinstance(ref, str) else ref


def _with_ref_mapping(source: Source, ref: DatasetRef) -> Source:
    """The ref's field mapping, answer format, config and split override the source's."""
    changes = {key: getattr(ref, key) for key in
               ("problem_field", "answer_field", "id_field", "answer_format", "config", "split")
               if getattr(ref, key) is not None}
    return replace(source, **changes)


def _entry_mapping(entry: RegistryEntry) -> Source:
    """A file entry's source settings, before deciding between local file and hub."""
    return Source(
        name=entry.name, kind="file", label=entry.name, file_format=entry.format,
        hub=entry.hub, config=entry.config, split=entry.split,
        problem_field=entry.problem_field, answer_field=entry.answer_field,
        id_field=entry.id_field, answer_format=entry.answer_format,
        skip_rows_without_gold=entry.skip_rows_without_gold,
    )


def _from_entry(entry: RegistryEntry, ref: DatasetRef, data_dir: Path | None) -> Source:
    if entry.is_generator:
        overrides = ({k: getattr(ref.arithmetic, k) for k in ref.arithmetic.model_fields_set}
                     if ref.arithmetic is not None else {})
        try:
            options = ArithmeticOptions(**{**entry.arithmetic, **overrides})
        except ValueError as err:
            raise DataError(f"{entry.name}: arithmetic options: {err}") from None
        return Source(name=entry.name, kind="generator", label=f"{entry.name} (generator)",
                      options=options, partition=entry.partition)
    source = _with_ref_mapping(_entry_mapping(entry), ref)
    local = entry.local_file(data_dir)
    if local is not None:
        return replace(source, path=local, label=str(local))
    if entry.hub:
        logger.info("%s: no local copy of %s in %s; loading %s from the hub", entry.name,
                    entry.path, data_dir, entry.hub)
        return replace(source, kind="hub", label=entry.hub, file_format=None,
                       split=source.split or "test")
    where = f"in {data_dir}" if data_dir else "(no data directory found)"
    raise DataError(f"{entry.name}: local file {entry.path} not found {where} and the entry "
                    "has no hub id; set data.local_dir (or --local-dir, $O1PRUNER_DATA_DIR) "
                    f"to a folder holding {entry.path}")


def resolve_source(ref: DatasetRef | str, local_dir: str | None = None) -> Source:
    """Where a DatasetRef's rows come from: registry entry, local file, or hub id."""
    ref = _as_ref(ref)
    entries = registry()
    data_dir = resolve_data_dir(local_dir)
    entry = entries.get(ref.name)
    if ref.arithmetic is not None and (entry is None or not entry.is_generator):
        generators = ", ".join(n for n, e in entries.items() if e.is_generator)
        raise DataError(f"{ref.name}: arithmetic options only apply to a generated set "
                        f"({generators})")
    if entry is not None:
        return _from_entry(entry, ref, data_dir)
    fmt = file_format(ref.name)
    if fmt is not None:
        path = Path(ref.name).expanduser()
        if not path.is_file() and data_dir is not None and (data_dir / ref.name).is_file():
            path = data_dir / ref.name
        if not path.is_file():
            raise DataError(f"{ref.name}: file not found (looked in the current folder"
                            + (f" and {data_dir}" if data_dir else "") + ")")
        return _with_ref_mapping(Source(name=ref.name, kind="file", label=str(path),
                                        path=path, file_format=fmt), ref)
    if _HUB_ID.fullmatch(ref.name):
        known = next((e for e in entries.values() if e.hub == ref.name
                      and (ref.config is None or e.config == ref.config)), None)
        source = Source(name=ref.name, kind="hub", label=ref.name)
        if known is not None:  # a registered hub id: reuse its field mapping and config
            source = _entry_mapping(known)
        source = replace(_with_ref_mapping(source, ref), name=ref.name, kind="hub",
                         label=ref.name, hub=ref.name, file_format=None)
        return replace(source, split=ref.split or "test")
    raise DataError(f"{ref.name}: unknown data set; expected a registry name "
                    f"({', '.join(entries)}), a .json/.jsonl/.parquet file, or a hub id "
                    "(org/name)")


def _keys(row: object) -> str:
    return ", ".join(map(str, row)) if isinstance(row, dict) and row else "(none)"


def _field_text(row: RawRow, field: str, role: str, label: str) -> str:
    """A row's field as text, or a DataError naming the place and the row's fields."""
    if field not in row.value:
        raise DataError(f"{label} {row.where}: no field {field!r} (the {role} field); the row "
                        f"has: {_keys(row.value)}")
    try:
        text = scalar_to_text(row.value[field])
    except AnswerFormatError as err:
        raise DataError(f"{label} {row.where}: field {field!r} ({role}): {err}") from None
    return (text or "").strip()


def rows_to_problems(rows: list[RawRow], source: Source) -> list[Problem]:
    """Map and validate raw rows into Problems (see the module docstring for the checks)."""
    label = source.label
    if not source.problem_field or not source.answer_field:
        first = rows[0].value if rows else {}
        raise DataError(f"{label}: problem_field and answer_field are required for a custom "
                        f"file or hub data set; {rows[0].where if rows else 'the data'} has "
                        f"fields: {_keys(first)}")
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    skipped: list[str] = []
    for row in rows:
        if not isinstance(row.value, dict):
            raise DataError(f"{label} {row.where}: expected a JSON object, got "
                            f"{type(row.value).__name__}")
        text = _field_text(row, source.problem_field, "problem", label)
        if not text:
            raise DataError(f"{label} {row.where}: empty problem in field "
                            f"{source.problem_field!r}")
        if source.answer_field not in row.value and not source.skip_rows_without_gold:
            raise DataError(f"{label} {row.where}: no field {source.answer_field!r} (the answer "
                            f"field); the row has: {_keys(row.value)}")
        try:
            gold = extract_gold(row.value.get(source.answer_field), source.answer_format)
        except AnswerFormatError as err:
            raise DataError(f"{label} {row.where}: field {source.answer_field!r}: {err}") from None
        if not gold:
            if source.skip_rows_without_gold:
                skipped.append(row.where)
                continue
            raise DataError(f"{label} {row.where}: empty gold answer in field "
                            f"{source.answer_field!r}; every problem needs a non-empty answer")
        pid = (_field_text(row, source.id_field, "id", label) if source.id_field
               else str(row.number))
        if not pid:
            raise DataError(f"{label} {row.where}: empty id in field {source.id_field!r}")
        if pid in first_seen:
            raise DataError(f"{label} {row.where}: duplicate id {pid!r} (first seen at "
                            f"{first_seen[pid]}); ids must be unique")
        first_seen[pid] = row.where
        problems.append(Problem(id=pid, problem=text, gold=gold))
    if skipped:
        logger.warning("%s: skipped %d row(s) without a gold answer: %s", label, len(skipped),
                       ", ".join(skipped))
    return problems


def _load_source(source: Source, want: int | None = None) -> list[Problem]:
    if source.kind == "generator":
        assert source.options is not None
        generated = generate_arithmetic(source.options, source.partition, n=want)
        return [Problem(id=p.id, problem=p.text, gold=str(p.answer)) for p in generated]
    if source.kind == "hub":
        rows = read_hub_rows(source.hub or source.name, source.config, source.split or "test")
    else:
        assert source.path is not None
        rows = read_rows(source.path, source.file_format)
    return rows_to_problems(rows, source)


def load_problems(
    ref: DatasetRef | str,
    local_dir: str | None = None,
    limit: int | None = None,
    shuffle_seed: int | None = None,
) -> list[Problem]:
    """Problems of a data set: shuffled with `shuffle_seed` (if given), then the first `limit`.

    The whole source is validated even when `limit` is small, so a bad row is reported
    before a long run starts rather than in the middle of it.
    """
    source = resolve_source(ref, local_dir)
    # A generated set of n is a prefix of a larger one, so without shuffling draw only `limit`.
    want = limit if source.kind == "generator" and shuffle_seed is None else None
    problems = _load_source(source, want)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(problems)
    if limit is not None:
        problems = problems[:limit]
    logger.debug("%s: %d problems", source.label, len(problems))
    return problems


def dataset_fingerprint(ref: DatasetRef | str, local_dir: str | None = None) -> str:
    """Short stable hash of the resolved data: file content (or hub id, or generator
    options) plus the field mapping. Evaluation caches key on it, so an edited file or a
    changed option invalidates cached results. Limits and shuffling are not included."""
    source = resolve_source(ref, local_dir)
    mapping = [source.problem_field, source.answer_field, source.id_field,
               source.answer_format, source.skip_rows_without_gold]
    if source.kind == "generator":
        assert source.options is not None
        payload: list[object] = ["generator", GENERATOR_VERSION, source.options.model_dump(),
                                 source.partition]
    elif source.kind == "hub":
        payload = ["hub", source.hub, source.config, source.split, mapping]
    else:
        assert source.path is not None
        payload = ["file", file_sha256(source.path), source.file_format, mapping]
    blob = json.dumps(payload, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
