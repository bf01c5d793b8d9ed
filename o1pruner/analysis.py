"""Length-disharmony analysis of a run's pre-samples (`o1pruner analyze RUN_DIR`).

Reproduces the paper's Table 1 for any model and data set: for every problem with
K >= 4 samples, sort its samples by length (ties keep the sample order), split them into
4 near-equal groups (sizes differ by at most one when 4 does not divide K), and pool the
accuracy of each group over problems, shortest to longest. Also: the truncation rate, the
length histogram, per-problem accuracy-versus-length plots, and the *oracle* mean length,
reached by always picking the shortest correct sample of a problem. A problem with no
correct sample has nothing to pick, so it keeps its mean length: the oracle never makes a
problem longer or shorter than the model already does when it cannot help.

Writes `<run>/report/disharmony.json`, `disharmony.md` and PNG plots.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import atomic_write_json, atomic_write_text, read_jsonl
from o1pruner.jobs import RunDir

logger = logging.getLogger(__name__)

QUARTILES = ("Q1 (shortest)", "Q2", "Q3", "Q4 (longest)")
MIN_K = 4
MAX_PROBLEM_PLOTS = 16


# --------------------------------------------------------------------------------- data
def load_presamples(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Samples of the finished problems (those with a stats line), grouped by problem."""
    out = Path(run_dir) / "presample"
    samples_path, stats_path = out / "samples.jsonl", out / "problem_stats.jsonl"
    if not samples_path.exists() or not stats_path.exists():
        raise UserError(f"{run_dir}: no pre-samples found ({samples_path} and {stats_path}); "
                        "run `o1pruner presample SPEC.yaml` first")
    done = {s["problem_id"] for s in read_jsonl(stats_path)}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in read_jsonl(samples_path):
        if s["problem_id"] in done:
            groups[s["problem_id"]].append(s)
    if not groups:
        raise UserError(f"{run_dir}: the pre-sampling stage has not finished any problem yet")
    return dict(groups)


def quartile_groups(samples: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """A problem's samples sorted by length and split into 4 near-equal groups."""
    ordered = sorted(samples, key=lambda s: (s["num_tokens"], s["sample_idx"]))
    k = len(ordered)
    bounds = [round(i * k / 4) for i in range(5)]
    return [ordered[bounds[i]:bounds[i + 1]] for i in range(4)]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def analyze(groups: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Every number of the report, from the samples grouped by problem."""
    all_samples = [s for g in groups.values() for s in g]
    per_quartile: list[list[dict[str, Any]]] = [[], [], [], []]
    eligible = 0
    for samples in groups.values():
        if len(samples) >= MIN_K:
            eligible += 1
            for i, group in enumerate(quartile_groups(samples)):
                per_quartile[i].extend(group)
    oracle_lengths, mean_lengths, solved = [], [], 0
    for samples in groups.values():
        mean_len = _mean([s["num_tokens"] for s in samples])
        correct = [s["num_tokens"] for s in samples if s["correct"]]
        mean_lengths.append(mean_len)
        oracle_lengths.append(min(correct) if correct else mean_len)
        solved += bool(correct)
    mean_length = _mean([s["num_tokens"] for s in all_samples])
    oracle = _mean(oracle_lengths)
    return {
        "n_problems": len(groups),
        "n_samples": len(all_samples),
        "k": sorted({len(g) for g in groups.values()}),
        "table1": {
            "quartiles": list(QUARTILES),
            "n_problems": eligible,
            "accuracy": [_mean([float(s["correct"]) for s in q]) for q in per_quartile],
            "mean_length": [_mean([s["num_tokens"] for s in q]) for q in per_quartile],
            "n_samples": [len(q) for q in per_quartile],
        },
        "mean_accuracy": _mean([float(s["correct"]) for s in all_samples]),
        "mean_length": mean_length,
        "truncation_rate": _mean([float(s["finish_reason"] == "length") for s in all_samples]),
        "oracle_mean_length": oracle,
        "oracle_length_reduction": (1 - oracle / mean_length) if mean_length else None,
        "oracle_accuracy": solved / len(groups),
        "problems_with_mixed_results": sum(
            0 < sum(s["correct"] for s in g) < len(g) for g in groups.values()),
    }


def disharmony_table(run_dir: Path) -> dict[str, Any]:
    """The accuracy-by-length-quartile table as data (for the web UI): `columns`, `rows`
    (one per quartile: name, accuracy %, mean tokens, samples) and the summary numbers."""
    result = analyze(load_presamples(Path(run_dir)))
    rows = [list(row.values()) for row in quartile_rows(result["table1"])]
    return {"columns": list(QUARTILE_COLUMNS), "rows": rows, **result}


QUARTILE_COLUMNS = ("length quartile", "accuracy %", "mean tokens", "samples")


def quartile_rows(table1: dict[str, Any]) -> list[dict[str, Any]]:
    """Table 1 (`analyze(...)["table1"]`) as one row per quartile, accuracy in %."""
    return [dict(zip(QUARTILE_COLUMNS, (name, _pct(acc), _round(length), n), strict=True))
            for name, acc, length, n in zip(table1["quartiles"], table1["accuracy"],
                                            table1["mean_length"], table1["n_samples"],
                                            strict=True)]


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 1)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


# ----------------------------------------------------------------------- learning signal
def learning_warning(samples: dict[str, list[dict[str, Any]]], rewards: list[float],
                     method: str, max_new_tokens: int) -> dict[str, str] | None:
    """Why training on these pre-samples cannot change the model, or cannot make it more
    accurate, as {code, message, fix}; None when it can learn. `samples`: the pre-samples by
    problem; `rewards`: the rewards training uses (after clip and normalize).

    - every reward 0 (method lh): within each problem the K samples share one length and
      one grade, so L_ref/L - 1 and A - A_ref vanish and the loss has no gradient. The
      cause named is the first that holds: every sample hit max_new_tokens (all cut at one
      length), no sample is correct, or no problem has both right and wrong samples;
    - no correct sample at all: the length term alone trains, shortening wrong answers.
    """
    flat = [s for group in samples.values() for s in group]
    if not flat:
        return None
    n = len(flat)
    correct = sum(bool(s["correct"]) for s in flat)
    cut = sum(s.get("finish_reason") == "length" for s in flat)
    limit = f"max_new_tokens {max_new_tokens}"
    if method == "lh" and rewards and all(r == 0 for r in rewards):
        if cut == n:
            cause, fix = (f"every pre-sample ({n}) hit {limit}",
                          f"raise presample.max_new_tokens (now {max_new_tokens})")
        elif correct == 0:
            cause, fix = (f"no pre-sample is correct (0 of {n}) and within each problem all "
                          "have one length", "use easier problems or a stronger model")
        else:
            cause, fix = ("within each problem all samples have one length and one grade (no "
                          "problem has both right and wrong samples)",
                          "raise presample.k or presample.temperature, or use other problems")
        return {"code": "no_learning_signal",
                "message": f"training cannot change the model: every reward is 0, {cause}",
                "fix": fix}
    if correct == 0:
        most_cut = cut * 2 > n
        return {"code": "no_correct_sample",
                "message": f"training can only shorten answers, not make them right: no "
                           f"pre-sample is correct (0 of {n}"
                           + (f"; {cut} hit {limit})" if cut else ")"),
                "fix": (f"raise presample.max_new_tokens (now {max_new_tokens})" if most_cut
                        else "use easier problems or a stronger model")}
    return None


def warning_text(warning: dict[str, Any]) -> str:
    """A warning of `learning_warning` as one line: what, then what to do."""
    return f"{warning.get('message', '')}: {warning.get('fix', '')}".strip(": ")


# -------------------------------------------------------------------------------- plots
def _plots(groups: dict[str, list[dict[str, Any]]], result: dict[str, Any],
           report: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    lengths_ok = [s["num_tokens"] for g in groups.values() for s in g if s["correct"]]
    lengths_bad = [s["num_tokens"] for g in groups.values() for s in g if not s["correct"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist([lengths_ok, lengths_bad], bins=30, stacked=True, label=["correct", "wrong"],
            color=["tab:green", "tab:red"])
    ax.set(xlabel="tokens per sample", ylabel="samples",
           title=f"Pre-sample lengths ({result['n_samples']} samples)")
    ax.legend()
    files.append(_save(fig, report / "length_histogram.png"))

    t = result["table1"]
    fig, ax = plt.subplots(figsize=(6, 4))
    acc = [0.0 if a is None else 100 * a for a in t["accuracy"]]
    ax.bar(range(4), acc, color="tab:blue")
    ax.set_xticks(range(4), t["quartiles"])
    ax.set(ylabel="accuracy %", ylim=(0, 100),
           title=f"Accuracy by within-problem length quartile ({t['n_problems']} problems)")
    for i, a in enumerate(acc):
        ax.text(i, a + 1, f"{a:.1f}", ha="center")
    files.append(_save(fig, report / "accuracy_by_length_quartile.png"))

    # per-problem: the problems whose samples disagree say most about length vs accuracy
    chosen = sorted(groups, key=lambda p: (-_spread(groups[p]), p))[:MAX_PROBLEM_PLOTS]
    cols = 4
    rows = max(1, math.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, pid in zip(axes.flat, chosen, strict=False):
        samples = sorted(groups[pid], key=lambda s: s["num_tokens"])
        ax.scatter([s["num_tokens"] for s in samples], [int(s["correct"]) for s in samples],
                   c=["tab:green" if s["correct"] else "tab:red" for s in samples], s=18)
        ax.set_yticks([0, 1], ["wrong", "correct"])
        ax.set_ylim(-0.3, 1.3)
        ax.set_title(str(pid)[:28], fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    fig.suptitle("Per-problem correctness versus sample length (tokens)")
    files.append(_save(fig, report / "per_problem_accuracy_vs_length.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([_mean([s["num_tokens"] for s in g]) for g in groups.values()],
               [100 * _mean([float(s["correct"]) for s in g]) for g in groups.values()], s=12)
    ax.set(xlabel="mean tokens (L_ref)", ylabel="accuracy % (A_ref)",
           title="Problems: mean length versus accuracy")
    files.append(_save(fig, report / "problem_length_vs_accuracy.png"))
    return files


def _spread(samples: list[dict[str, Any]]) -> float:
    acc = _mean([float(s["correct"]) for s in samples]) or 0.0
    return acc * (1 - acc)


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path.name


# ------------------------------------------------------------------------------- report
def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.1f}"


def format_report(result: dict[str, Any], run_dir: Path, plots: list[str] = ()) -> str:
    """The report as Markdown (also what `o1pruner analyze` prints)."""
    t = result["table1"]
    lines = [f"# Length disharmony: {Path(run_dir).name}", "",
             f"{result['n_problems']} problems, {result['n_samples']} samples "
             f"(K = {', '.join(map(str, result['k']))}).", "",
             f"## Accuracy by within-problem length quartile ({t['n_problems']} problems "
             f"with K >= {MIN_K})", "",
             "| | " + " | ".join(t["quartiles"]) + " |",
             "|---|" + "---|" * 4,
             "| accuracy | " + " | ".join(_fmt(a, pct=True) for a in t["accuracy"]) + " |",
             "| mean tokens | " + " | ".join(_fmt(x) for x in t["mean_length"]) + " |",
             "| samples | " + " | ".join(str(n) for n in t["n_samples"]) + " |", "",
             "## Summary", "",
             f"- mean accuracy: {_fmt(result['mean_accuracy'], pct=True)}",
             f"- mean length: {_fmt(result['mean_length'])} tokens",
             f"- truncation rate (hit max_new_tokens): "
             f"{_fmt(result['truncation_rate'], pct=True)}",
             f"- oracle mean length (shortest correct sample; unsolved problems keep their "
             f"mean): {_fmt(result['oracle_mean_length'])} tokens "
             f"({_fmt(result['oracle_length_reduction'], pct=True)} shorter), at oracle "
             f"accuracy {_fmt(result['oracle_accuracy'], pct=True)}",
             f"- problems with both correct and wrong samples: "
             f"{result['problems_with_mixed_results']}"]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def run_analyze(run_dir: Path) -> str:
    """Stage entry (`o1pruner analyze RUN_DIR`): write the disharmony report into
    <run>/report/ and return it as text."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    groups = load_presamples(run_dir)
    result = analyze(groups)
    report = RunDir(run_dir).stage_dir("report")
    plots = _plots(groups, result, report)
    text = format_report(result, run_dir, plots)
    atomic_write_json(report / "disharmony.json", {**result, "plots": plots})
    atomic_write_text(report / "disharmony.md", text)
    RunDir(run_dir).emit("metrics", "report", name="disharmony",
                         quartile_accuracy=result["table1"]["accuracy"],
                         oracle_mean_length=result["oracle_mean_length"],
                         truncation_rate=result["truncation_rate"])
    logger.info("disharmony report written to %s", report)
    return text + f"\nWritten: {report / 'disharmony.md'}, {report / 'disharmony.json'}, " \
                  f"{', '.join(plots)}\n"
