"""Human-readable views of the registry and of one data set (`o1pruner datasets`)."""

from __future__ import annotations

import logging
import textwrap

from o1pruner.data.loading import dataset_fingerprint, load_problems, resolve_source
from o1pruner.data.readers import count_rows, read_hub_rows, read_rows
from o1pruner.data.registry import registry, registry_path, resolve_data_dir
from o1pruner.errors import DataError
from o1pruner.spec import ArithmeticOptions

logger = logging.getLogger(__name__)

_TEXT_WIDTH = 100


def _one_line(text: str, width: int) -> str:
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder=" ...")


def describe_datasets(local_dir: str | None = None) -> str:
    """The registry as a table: name, rows (local files and generators), source, description.

    Row counts are the source's rows; a load may skip rows the entry marks as unusable.
    """
    data_dir = resolve_data_dir(local_dir)
    header = ("name", "rows", "source", "description")
    table = []
    for name, entry in registry().items():
        local = entry.local_file(data_dir)
        if entry.is_generator:
            rows = str(ArithmeticOptions(**entry.arithmetic).n)
        elif local is not None:
            rows = str(count_rows(local, entry.format))
        else:
            rows = "-"
        source = entry.source() if entry.is_generator or local else (
            f"hub:{entry.hub}" if entry.hub else f"missing: {entry.path}")
        table.append((name, rows, source, entry.description))
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(3)]
    lines = [f"registry: {registry_path()}",
             f"data dir: {data_dir or '(none: hub ids are used)'}", ""]
    for row in [header, *table]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
                     + "  " + row[3])
    lines += ["", "Preview one: o1pruner datasets NAME [--rows N]; custom files: a path to a "
              ".json/.jsonl/.parquet file (see docs/datasets.md)."]
    return "\n".join(lines)


def _preview_raw(name: str, rows: int, local_dir: str | None) -> str:
    """A file or hub set without a field mapping: show its fields so a mapping can be written."""
    source = resolve_source(name, local_dir)
    raw = (read_rows(source.path, source.file_format) if source.kind == "file"
           else read_hub_rows(source.hub or name, source.config, source.split or "test"))
    lines = [f"{source.label}: {len(raw)} rows, no field mapping yet (set problem_field and "
             "answer_field in the spec)"]
    for row in raw[:rows]:
        fields = row.value.items() if isinstance(row.value, dict) else [("value", row.value)]
        lines.append(f"{row.where}:")
        lines += [f"  {key}: {_one_line(str(value), _TEXT_WIDTH)}" for key, value in fields]
    return "\n".join(lines)


def preview_dataset(name: str, rows: int = 3, local_dir: str | None = None) -> str:
    """Row count, source and the first rows (id, problem shortened, gold) of a data set."""
    source = resolve_source(name, local_dir)
    if source.kind != "generator" and not (source.problem_field and source.answer_field):
        return _preview_raw(name, rows, local_dir)
    problems = load_problems(name, local_dir=local_dir)
    if not problems:
        raise DataError(f"{source.label}: no problems")
    lines = [f"{name}: {len(problems)} problems from {source.label} "
             f"(fingerprint {dataset_fingerprint(name, local_dir)})"]
    for problem in problems[: max(rows, 0)]:
        lines.append(f"[{problem.id}] {_one_line(problem.problem, _TEXT_WIDTH)}")
        lines.append(f"    gold: {_one_line(problem.gold, _TEXT_WIDTH)}")
    return "\n".join(lines)
