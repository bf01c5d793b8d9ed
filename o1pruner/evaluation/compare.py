"""`o1pruner compare RUN_DIR ...`: one markdown table over several evaluated runs (a lambda
sweep, SFT vs DPO vs LH), showing the spec fields in which the runs differ."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.evaluation.intervals import describe
from o1pruner.evaluation.report import fmt_aes, markdown_table, metrics_cell
from o1pruner.files import read_json
from o1pruner.jobs import RunDir
from o1pruner.safeyaml import YamlError, load_yaml_file

logger = logging.getLogger(__name__)

#: Spec fields that always differ between runs and say nothing about the method.
IGNORED_FIELDS = ("run.name",)
ABSENT = "(absent)"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {dotted.path: leaf value}; lists are leaves."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def spec_differences(specs: list[dict[str, Any]]) -> list[str]:
    """Dotted paths whose values are not the same in every spec, in spec order."""
    flat = [flatten(s) for s in specs]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    return [k for k in keys if k not in IGNORED_FIELDS
            and len({json.dumps(f.get(k, ABSENT), sort_keys=True) for f in flat}) > 1]


def _show(value: Any) -> str:
    """A spec value as a cell: a whole float as an integer (epochs 2, not 2.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def _load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if not run_dir.is_dir():
        raise UserError(f"compare: {run_dir} is not a directory (expected a run directory, "
                        "e.g. runs/<name>)")
    path = RunDir(run_dir).results_path
    results = read_json(path)
    if results is None:
        raise UserError(f"compare: {run_dir} has no evaluation results "
                        f"({path} is missing or unreadable); "
                        f"run `o1pruner eval {run_dir / 'spec.yaml'}` first")
    spec_path = run_dir / "spec.yaml"
    try:
        spec = load_yaml_file(spec_path) or {}
    except FileNotFoundError:
        logger.warning("%s has no spec.yaml; its spec differences are shown as absent", run_dir)
        spec = {}
    except (YamlError, OSError, UnicodeDecodeError) as err:
        raise UserError(f"compare: {spec_path} cannot be read: {err}") from None
    return results, spec if isinstance(spec, dict) else {}


def _split(avg: dict[str, Any]) -> str:
    """"<thinking> / <answer>" mean tokens (the answer is all of it for a model that does
    not think)."""
    thinking = avg.get("mean_thinking_tokens")
    answer = avg.get("mean_answer_tokens", avg.get("mean_tokens"))
    if thinking is None or answer is None:
        return "-"
    return f"{thinking:.0f} / {answer:.0f}"


def _label(run_dir: Path) -> str:
    """A run's name; an ad-hoc evaluation (<run>/eval/adhoc/<name>) as <run>/<name>."""
    if RunDir(run_dir.resolve()).is_adhoc:
        return f"{run_dir.resolve().parents[2].name}/{run_dir.name}"
    return run_dir.name


def run_compare(run_dirs: list[Path]) -> str:
    """A markdown table comparing the evaluated model of each run (its trained model, or
    its base when it has none) per benchmark and on average, against each run's base,
    with one column per spec field that differs among the runs."""
    if not run_dirs:
        raise UserError("compare: give at least one run directory")
    loaded = [(Path(d), *_load_run(Path(d))) for d in run_dirs]
    benches: list[str] = []
    for _, results, _ in loaded:
        benches += [b for b in results["benchmarks"] if b not in benches]
    diffs = spec_differences([spec for _, _, spec in loaded])
    flats = [flatten(spec) for _, _, spec in loaded]

    header = ["run", *diffs, "method", *benches, "AVG", "AVG AES",
              "AVG vs base, 95% CI (points; % tokens)", "AVG thinking / answer tokens"]
    rows: list[list[str]] = []
    seen_bases: dict[str, str] = {}
    for (run_dir, results, _), flat in zip(loaded, flats, strict=True):
        values = [_show(flat.get(k, ABSENT)) for k in diffs]
        base_id = json.dumps([results["models"]["base"]["fingerprint"],
                              results["metrics"]["base"]], sort_keys=True)
        labels = [m for m in results["methods"] if m != "base"] or ["base"]
        if labels != ["base"] and base_id not in seen_bases:
            labels = ["base", *labels]
        seen_bases.setdefault(base_id, _label(run_dir))
        for label in labels:
            metrics = results["metrics"][label]
            comps = results["comparison"].get(label)
            cells = [metrics_cell(metrics[b], comps[b] if comps else None) if b in metrics else "-"
                     for b in benches]
            avg = comps["AVG"] if comps else None
            rows.append([_label(run_dir), *values, label, *cells,
                         metrics_cell(results["averages"][label], avg),
                         fmt_aes(avg["aes"]) if avg else "-",
                         describe(avg.get("interval")) if avg else "-",
                         _split(results["averages"][label])])
    lines = [
        "Cells: accuracy % / mean tokens / AES against the run's base model; AVG is the mean "
        "over the run's benchmarks. A base row is shown once per distinct base evaluation.",
        "",
        markdown_table(header, rows),
    ]
    if not diffs:
        lines += ["", "The runs' specs do not differ (apart from run.name)."]
    else:
        lines += ["", "Spec differences: " + ", ".join(f"`{d}`" for d in diffs)]
    return "\n".join(lines) + "\n"
