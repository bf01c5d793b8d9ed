"""Evaluation reports: report/report.md (a table shaped like the paper's Table 2, details,
plots) and the rows the web UI shows, all derived from eval/results.json."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from o1pruner.analysis import warning_text
from o1pruner.errors import UserError
from o1pruner.evaluation.intervals import describe
from o1pruner.files import atomic_write_text, read_json, read_jsonl
from o1pruner.jobs import RunDir

logger = logging.getLogger(__name__)

ACC_VS_TOKENS_PNG = "accuracy_vs_tokens.png"
MARKERS = {"base": "o", "fast_solving": "s", "trained": "^"}


# --------------------------------------------------------------------------- formatting
def fmt_pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def fmt_num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_aes(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def metrics_cell(metrics: dict[str, Any], comp: dict[str, Any] | None) -> str:
    text = f"{fmt_pct(metrics['accuracy'])} / {fmt_num(metrics['mean_tokens'])}"
    return text if comp is None else f"{text} / {fmt_aes(comp['aes'])}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- UI rows
def results_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (method, benchmark) plus an AVG row per method: what the web UI
    shows and what the final `metrics` event carries (percentages as numbers)."""
    rows = []
    for label in results["methods"]:
        per = results["metrics"][label]
        comps = results["comparison"].get(label, {})
        avg = results["averages"][label]
        for bench, m in [*per.items(), ("AVG", avg)]:
            c = comps.get(bench, {})
            ci = c.get("interval") or {}
            rows.append({
                "method": label, "benchmark": bench, "n": m["n"],
                "accuracy %": _round(m["accuracy"], 100),
                "mean tokens": _round(m["mean_tokens"]),
                "thinking tokens": _round(m.get("mean_thinking_tokens")),
                "answer tokens": _round(m.get("mean_answer_tokens", m["mean_tokens"])),
                "median tokens": _round(m["median_tokens"]),
                "truncation %": _round(m["truncation_rate"], 100),
                "wall s": _round(m["wall_s"]),
                "replica s": _round(m.get("replica_s", m["wall_s"])),
                "dLen %": _round(c.get("d_len"), 100),
                "dAcc %": _round(c.get("d_acc"), 100),
                "AES": None if c.get("aes") is None else round(c["aes"], 4),
                "acc diff (points) [95% CI]": _ci_text(ci, "accuracy_points"),
                "length change % [95% CI]": _ci_text(ci, "length_pct"),
                **({f"pass@{k} %": _round(v, 100) for k, v in m["pass_at_k"].items()}
                   if m.get("pass_at_k") else {}),
            })
    return rows


def _ci_text(summary: dict[str, Any], key: str) -> str | None:
    """"<value> [<lo>, <hi>]", signed (with "ns" when the interval contains 0), or None."""
    if not summary or summary.get(key) is None:
        return None
    ci = summary.get(f"{key}_ci")
    text = f"{summary[key]:+.1f}" + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "")
    significant = summary.get("accuracy_significant" if key == "accuracy_points"
                              else "length_significant")
    return text + (" ns" if significant is False else "")


def _round(value: float | None, scale: float = 1.0) -> float | None:
    return None if value is None else round(value * scale, 2)


def results_table(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluation table of a run directory (see `results_rows`), for the web UI."""
    path = RunDir(Path(run_dir)).results_path
    results = read_json(path)
    if results is None:
        raise UserError(f"{run_dir}: no evaluation results ({path} is missing or unreadable); "
                        "run `o1pruner eval` on this run's spec first")
    return results_rows(results)


def headline_lines(results: dict[str, Any]) -> list[str]:
    """A few lines for the end of `o1pruner run`: AVG accuracy and tokens of each method,
    and for the others their length change, accuracy change (points) and AES vs base."""
    benches = ", ".join(results["benchmarks"])
    base = results["averages"]["base"]
    warned = [f"warning: {warning_text(w)}" for w in results.get("warnings") or []]
    lines = [*warned, f"base: accuracy {fmt_pct(base['accuracy'])}%, "
             f"{fmt_num(base['mean_tokens'])} tokens (mean over {benches})"]
    for label in results["methods"]:
        if label == "base":
            continue
        avg, comp = results["averages"][label], results["comparison"][label]["AVG"]
        d_len = "n/a" if comp["d_len"] is None else f"{-100 * comp['d_len']:+.1f}%"
        points = 100 * (avg["accuracy"] - base["accuracy"])
        lines.append(f"{label}: accuracy {fmt_pct(avg['accuracy'])}% ({points:+.1f} points), "
                     f"{fmt_num(avg['mean_tokens'])} tokens ({d_len} length), AES "
                     f"{fmt_aes(comp['aes'])}" + (f" ({comp['note']})" if comp["note"] else ""))
        if comp.get("interval"):
            lines.append(f"  95% paired bootstrap intervals ({comp['interval']['problems']} "
                         f"problems): {describe(comp['interval'])}")
    return lines


# ------------------------------------------------------------------------------- plots
def _save(fig: Any, out: Path) -> None:
    """Save a figure atomically (a reader never sees half a PNG) and free it."""
    import matplotlib.pyplot as plt

    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)


def _plot_accuracy_vs_tokens(results: dict[str, Any], out: Path) -> None:
    """One point per (method, benchmark) and per method's AVG: colour = benchmark, marker =
    method; a faint line joins the methods of one benchmark (base -> trained)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7, 5))
    groups = [*results["benchmarks"], "AVG"]
    colors = {b: plt.cm.tab10(i % 10) for i, b in enumerate(groups)}
    for bench in groups:
        xs, ys = [], []
        for label in results["methods"]:
            m = results["averages"][label] if bench == "AVG" else results["metrics"][label][bench]
            xs.append(m["mean_tokens"])
            ys.append(100 * m["accuracy"])
            ax.scatter(xs[-1], ys[-1], color=colors[bench], marker=MARKERS.get(label, "D"),
                       s=90 if bench == "AVG" else 55, edgecolors="black", linewidths=0.6,
                       zorder=3)
        ax.plot(xs, ys, color=colors[bench], alpha=0.4, linewidth=1, zorder=2)
    handles = [Line2D([], [], color=colors[b], marker="o", linestyle="", label=b) for b in groups]
    handles += [Line2D([], [], color="gray", marker=MARKERS.get(label, "D"), linestyle="",
                       label=label) for label in results["methods"]]
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set_xlabel("mean tokens per solution")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs length per benchmark and method")
    ax.grid(alpha=0.3)
    _save(fig, out)


def _plot_histogram(eval_dir: Path, results: dict[str, Any], bench: str, out: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for label in results["methods"]:
        records = read_jsonl(eval_dir / label / bench / "generations.jsonl")
        if records:
            series[label] = [r["num_tokens"] for r in records]
    if not series:
        return False
    top = max(max(v) for v in series.values())
    bins = list(range(0, top + max(1, top // 30) + 1, max(1, top // 30)))
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, tokens in series.items():
        ax.hist(tokens, bins=bins, alpha=0.5, label=f"{label} (mean {sum(tokens)/len(tokens):.0f})")
    ax.set_xlabel("tokens per solution")
    ax.set_ylabel("solutions")
    ax.set_title(f"Token counts on {bench}")
    ax.legend()
    _save(fig, out)
    return True


# ------------------------------------------------------------------------------ report
def render_report(results: dict[str, Any], images: list[tuple[str, str]]) -> str:
    """report.md text: Table 2 layout, per-benchmark details, notes, plots, command."""
    benches = list(results["benchmarks"])
    methods = results["methods"]
    s = results["settings"]
    lines = ["# Evaluation report", "",
             f"Run: `{results['run']}`  ", f"Command: `{results['command']}`  ",
             f"Decoding: {s['decoding']}, max {s['max_new_tokens']} new tokens, engine "
             f"{s['engine']}; AES alpha={s['aes_alpha']}, beta={s['aes_beta']}, "
             f"gamma={s['aes_gamma']}  ",
             f"Precision: {s.get('precision', 'not recorded')}", "", "## Models", ""]
    for label in methods:
        m = results["models"][label]
        extra = " + Fast-Solving suffix" if m["prompt_suffix"] else ""
        if label == "trained" and results.get("rounds", 1) > 1:
            extra += f" (round {results['rounds']}, the last)"
        lines.append(f"- **{label}**: `{m['ref']}`{extra}")
    lines += [f"\n**Warning: {warning_text(w)}**" for w in results.get("warnings") or []]
    lines += ["", "## Results (accuracy % / mean tokens / AES)", "",
              "As in the paper's Table 2; AES is against the base model, AVG is the mean of "
              "the per-benchmark values.", ""]
    rows = []
    for label in methods:
        comps = results["comparison"].get(label)
        cells = [metrics_cell(results["metrics"][label][b], comps[b] if comps else None)
                 for b in benches]
        cells.append(metrics_cell(results["averages"][label], comps["AVG"] if comps else None))
        rows.append([label, *cells])
    lines += [markdown_table(["model, method", *benches, "AVG"], rows), ""]
    lines += _interval_section(results)
    lines += _difficulty_section(results)
    lines += ["## Details", "",
              "wall s: elapsed seconds of generation and grading; replica s: the replicas' "
              "generation seconds added up (with eval.data_parallel_size N, up to N times "
              "wall s).", ""]
    header = ["method", "benchmark", "n", "acc %", "mean tok", "thinking tok", "answer tok",
              "median tok", "trunc %", "wall s", "replica s", "dLen %", "dAcc %", "AES"]
    detail = []
    for r in results_rows(results):
        cells = [fmt_num(r[k], 1) for k in ("accuracy %", "mean tokens", "thinking tokens",
                                            "answer tokens", "median tokens", "truncation %",
                                            "wall s", "replica s")]
        against = [fmt_num(r["dLen %"], 1), fmt_num(r["dAcc %"], 1), fmt_aes(r["AES"])]
        detail.append([str(r["method"]), str(r["benchmark"]), str(r["n"]), *cells,
                       *(["-"] * 3 if r["method"] == "base" else against)])
    lines += [markdown_table(header, detail), ""]
    passes = [r for r in results_rows(results) if any(k.startswith("pass@") for k in r)]
    if passes:
        ks = [k for k in passes[0] if k.startswith("pass@")]
        lines += [f"Accuracy is avg@{results['settings'].get('samples_per_problem')} (the mean "
                  "over all samples); pass@k is the unbiased estimate.", "",
                  markdown_table(["method", "benchmark", *ks],
                                 [[str(r["method"]), str(r["benchmark"]),
                                   *[fmt_num(r.get(k), 1) for k in ks]] for r in passes]), ""]
    notes = sorted({f"{label} on {b}: {c['note']}" for label, comps in
                    results["comparison"].items() for b, c in comps.items() if c.get("note")})
    if notes:
        lines += ["Notes (n/a cells):", "", *[f"- {n}" for n in notes], ""]
    reused = [k for k, v in results.get("cache", {}).items() if v["reused"]]
    if reused:
        lines += [f"Reused cached baseline results: {', '.join(reused)}.", ""]
    lines += ["## Plots", ""]
    lines += [f"![{title}]({name})" for title, name in images]
    return "\n".join(lines) + "\n"


def _interval_section(results: dict[str, Any]) -> list[str]:
    """The differences against the base with their 95% paired bootstrap intervals."""
    rows, flat = [], []
    for label, comps in results["comparison"].items():
        for bench, c in comps.items():
            ci = c.get("interval")
            if not ci:
                continue
            rows.append([label, bench, str(ci["problems"]),
                         _ci_text(ci, "accuracy_points") or "n/a",
                         _ci_text(ci, "length_pct") or "n/a"])
            flat += [f"{label} on {bench}: the {what} change is not significant (its interval "
                     "contains 0)" for what, key in (("accuracy", "accuracy_significant"),
                                                    ("length", "length_significant"))
                     if ci.get(key) is False]
    if not rows:
        return []
    first = next(c["interval"] for comps in results["comparison"].values()
                 for c in comps.values() if c.get("interval"))
    out = ["## Differences against the base, with 95% intervals", "",
           f"Paired bootstrap over problems ({first['resamples']} resamples, the same "
           "problems for both models); accuracy in points, length as the % change of mean "
           "tokens; `ns`: the interval contains 0 (not significant).", "",
           markdown_table(["method", "benchmark", "problems", "accuracy (points) [95% CI]",
                           "length (%) [95% CI]"], rows), ""]
    if flat:
        out += [*[f"- {line}" for line in flat], ""]
    return out


def _difficulty_section(results: dict[str, Any]) -> list[str]:
    """The length and accuracy changes by difficulty quartile (o1pruner.evaluation.difficulty):
    did a method cut easy problems or break hard ones?"""
    out, basis = [], None
    for label, comps in results["comparison"].items():
        for bench, c in comps.items():
            split = c.get("difficulty")
            if not split:
                continue
            basis = split["basis"]
            rows = [[q["quartile"], str(q["problems"]),
                     f"{fmt_num(q['base_accuracy'], 1)} -> {fmt_num(q['accuracy'], 1)}",
                     _ci_text(q, "accuracy_points") or "n/a",
                     f"{fmt_num(q['base_tokens'])} -> {fmt_num(q['tokens'])}",
                     _ci_text(q, "length_pct") or "n/a"] for q in split["quartiles"]]
            out += [f"**{label} on {bench}**", "",
                    markdown_table(["difficulty", "problems", "accuracy % (base -> model)",
                                    "accuracy (points) [95% CI]", "mean tokens (base -> model)",
                                    "length (%) [95% CI]"], rows), ""]
    if not out:
        return []
    return ["## By difficulty", "",
            f"The held-out problems in four quartiles of difficulty, Q1 the easiest, by {basis}; "
            "each row's intervals are a paired bootstrap over its problems. A cut that "
            "comes from Q1 with Q4's accuracy kept is the harmless kind. The quartiles are "
            "ranked by the base's own answers, so part of a change is regression to the "
            "mean (the easy quartiles can mostly lose, the hard ones gain): compare methods "
            "quartile by quartile rather than read one sign.", "", *out]


def write_report(eval_dir: Path, out: Path, results: dict[str, Any]) -> Path:
    """Write `out`/report.md and its PNG plots from an evaluation folder; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    images = []
    _plot_accuracy_vs_tokens(results, out / ACC_VS_TOKENS_PNG)
    images.append(("accuracy vs mean tokens", ACC_VS_TOKENS_PNG))
    for bench in results["benchmarks"]:
        name = f"tokens_{bench}.png"
        if _plot_histogram(eval_dir, results, bench, out / name):
            images.append((f"token counts on {bench}", name))
    path = out / "report.md"
    atomic_write_text(path, render_report(results, images))
    logger.info("report written to %s", path)
    return path
