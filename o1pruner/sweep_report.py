"""The report of a sweep (`<sweep>/report/`): one row per grid point with the mean and the
95 % interval over seeds of accuracy, mean tokens and AES per benchmark and on average,
the base model (and the Fast-Solving Prompt) for reference, and an accuracy-vs-tokens
plot with error bars and the Pareto front marked, and where each point cut: its changes
against the base by quartile of problem difficulty, over seeds.

Intervals over seeds are Student-t intervals of the per-seed values (n seeds, n - 1
degrees of freedom); with one seed a row carries no interval (each run's own paired
bootstrap intervals are in its report).
"""

from __future__ import annotations

import json
import math
import statistics
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from o1pruner.files import atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:  # the report reads a sweep; o1pruner.sweep imports this module
    from o1pruner.sweep import Sweep

#: Two-sided 95 % Student-t quantiles t(0.975, df), df = 1..30 (normal beyond).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
#: Row names of the paper's Table 2 (the "paper-table" preset).
PAPER_NAMES = {"base": "Base", "fast_solving": "Fast-Solving Prompt", "sft": "SFT",
               "dpo": "DPO", "lh": "O1-Pruner"}


def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean, 95 % t-interval (None below 2 values), n and the values."""
    n = len(values)
    if n == 0:
        return {"mean": None, "ci": None, "n": 0, "values": []}
    mean = statistics.fmean(values)
    ci = None
    if n >= 2:
        half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * statistics.stdev(values) \
            / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"mean": mean, "ci": ci, "n": n, "values": values}


def _point_values(results: dict[str, Any], label: str) -> dict[str, dict[str, Any]]:
    """{benchmark or AVG: {accuracy %, tokens, aes, acc_points, len_pct}} of one method;
    acc_points / len_pct are the paired differences against the base (accuracy points,
    % tokens), with the run's own paired bootstrap interval under `_ci` keys."""
    out: dict[str, dict[str, Any]] = {}
    for bench in [*results["benchmarks"], "AVG"]:
        m = results["averages"][label] if bench == "AVG" else results["metrics"][label][bench]
        c = results.get("comparison", {}).get(label, {}).get(bench, {})
        interval = c.get("interval") or {}
        out[bench] = {"accuracy": 100 * m["accuracy"], "tokens": m["mean_tokens"],
                      "aes": c.get("aes") if label != "base" else 0.0,
                      "acc_points": interval.get("accuracy_points"),
                      "len_pct": interval.get("length_pct"),
                      "_ci": {"acc_points": interval.get("accuracy_points_ci"),
                              "len_pct": interval.get("length_pct_ci")},
                      "_difficulty": (c.get("difficulty") or {}).get("quartiles") or []}
    return out


def _estimates(values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The point estimates of _point_values, without the run's bootstrap intervals (their
    draws follow the run's seed: one cached evaluation gives other intervals per run)."""
    return {bench: {k: v for k, v in m.items() if not k.startswith("_")}
            for bench, m in values.items()}


def _aggregate(samples: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per benchmark and metric: mean and 95 % interval over seeds; with one seed, the
    differences against the base keep that run's paired bootstrap interval."""
    out: dict[str, Any] = {}
    for bench in samples[0] if samples else []:
        out[bench] = {}
        for key in (k for k in samples[0][bench] if not k.startswith("_")):
            out[bench][key] = _over_seeds([s[bench][key] for s in samples],
                                          samples[0][bench]["_ci"].get(key))
        quartiles = [s[bench].get("_difficulty") or [] for s in samples]
        if quartiles and all(len(q) == len(quartiles[0]) for q in quartiles) and quartiles[0]:
            out[bench]["difficulty"] = [_quartile(i, [q[i] for q in quartiles])
                                        for i in range(len(quartiles[0]))]
    return out


def _quartile(i: int, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """One difficulty quartile over seeds: the accuracy (points) and length (%) changes
    against the base, each its mean and 95 % t-interval over seeds (with one seed, the
    run's paired bootstrap over the quartile's problems). The quartiles rank the held-out
    problems by the base model's own answers, the same in every seed."""
    out: dict[str, Any] = {"quartile": seeds[0].get("quartile", f"Q{i + 1}"),
                           "problems": seeds[0].get("problems")}
    for key in ("accuracy_points", "length_pct"):
        out[key] = _over_seeds([q.get(key) for q in seeds], seeds[0].get(f"{key}_ci"))
    return out


def _over_seeds(values: list[float | None], boot: list[float] | None) -> dict[str, Any]:
    """mean_ci of the values given; with one, the run's own paired bootstrap interval
    `boot` where it has one."""
    stat = mean_ci([v for v in values if v is not None])
    if stat["n"] == 1 and boot:
        stat.update(ci=boot, interval="paired bootstrap of the run")
    return stat


def sweep_rows(sweep: Sweep, states: list[tuple[str, str | None]]) -> dict[str, Any]:
    """The report's data: points with their state (`states`: each point's (state, why),
    in order, from `o1pruner.sweep.point_status`), and rows (reference rows first)."""
    paper = sweep.preset == "paper-table"
    points, groups, reference = [], {}, {"base": [], "fast_solving": []}
    benchmarks: list[str] = []
    for p, (state, why) in zip(sweep.points, states, strict=True):
        run = sweep.run_dir(p)
        results = read_json(run.results_path) if state == "done" else None
        points.append({"name": p.name, "label": p.label(), "seed": p.seed, "state": state,
                       "values": p.values, "reason": why})
        if not isinstance(results, dict) or "trained" not in results.get("methods", []):
            continue
        benchmarks = benchmarks or list(results["benchmarks"])
        # the earlier rounds of a run.rounds > 1 point are rows of their own
        rounds = [m for m in results["methods"] if m.startswith("round-")]
        for method in [*rounds, "trained"]:
            key = json.dumps([p.values, method], sort_keys=True)
            name = f"round-{results.get('rounds')}" if method == "trained" else method
            label = f"{p.label()} · {name}" if rounds else p.label()
            groups.setdefault(key, {"values": p.values, "label": label, "samples": []})
            groups[key]["samples"].append(_point_values(results, method))
        for label in reference:  # the same cached evaluation in every run counts once
            if label not in results["methods"]:
                continue
            values = _point_values(results, label)
            if all(_estimates(known) != _estimates(values) for known in reference[label]):
                reference[label].append(values)
    rows = []
    for label, samples in reference.items():
        if samples:
            rows.append({"label": PAPER_NAMES[label] if paper else label, "kind": label,
                         "values": {}, "seeds": len(samples), "metrics": _aggregate(samples)})
    for group in groups.values():
        label = group["label"]
        if paper and "train.method" in group["values"]:
            method = PAPER_NAMES.get(group["values"]["train.method"], label)
            preset = ("train.method", "reward.samples_per_problem")  # the preset's own
            rest = {k: v for k, v in group["values"].items() if k not in preset}
            extra = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in rest.items())
            label = f"{method} ({extra})" if extra else method
        rows.append({"label": label, "kind": "trained", "values": group["values"],
                     "seeds": len(group["samples"]), "metrics": _aggregate(group["samples"])})
    _mark_pareto(rows)
    return {"name": sweep.name, "preset": sweep.preset, "grid": sweep.grid,
            "seeds": sweep.seeds, "benchmarks": benchmarks, "points": points, "rows": rows}


def _mark_pareto(rows: list[dict[str, Any]]) -> None:
    """A row is on the Pareto front when no other row has both fewer mean tokens and at
    least the accuracy (or the same tokens and more accuracy), on average over benchmarks."""
    def xy(r: dict[str, Any]) -> tuple[float, float]:
        avg = r["metrics"]["AVG"]
        return avg["tokens"]["mean"], avg["accuracy"]["mean"]

    for r in rows:
        x, y = xy(r)
        r["pareto"] = not any((ox <= x and oy >= y) and (ox < x or oy > y)
                              for o in rows if o is not r for ox, oy in [xy(o)])


def _cell(stat: dict[str, Any], digits: int = 1) -> str:
    if stat["mean"] is None:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" [{stat['ci'][0]:.{digits}f}, {stat['ci'][1]:.{digits}f}]"
                   if stat["ci"] else "")


def table_markdown(data: dict[str, Any]) -> str:
    """The sweep table: per benchmark and AVG, accuracy %, mean tokens and AES, each the
    mean over seeds with its 95 % interval; * marks the Pareto front."""
    benches = [*data["benchmarks"], "AVG"] if len(data["benchmarks"]) > 1 else \
        list(data["benchmarks"])
    head = ["method" if data["preset"] == "paper-table" else "point", "seeds"]
    for b in benches:
        head += [f"{b} acc %", f"{b} tokens", f"{b} acc vs base (points)",
                 f"{b} tokens vs base %", f"{b} AES"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in data["rows"]:
        cells = [("* " if r["pareto"] else "") + r["label"], str(r["seeds"])]
        for b in benches:
            m = r["metrics"][b]
            cells += [_cell(m["accuracy"]), _cell(m["tokens"], 0),
                      _cell(m["acc_points"]) if r["kind"] != "base" else "",
                      _cell(m["len_pct"]) if r["kind"] != "base" else "", _cell(m["aes"], 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def difficulty_markdown(data: dict[str, Any]) -> str:
    """Where each point cut: per benchmark, its accuracy (points) and length (%) changes
    against the base in each quartile of difficulty, mean over seeds [95 % interval]."""
    parts = []
    for bench in data["benchmarks"]:
        rows = [r for r in data["rows"] if r["kind"] != "base"
                and r["metrics"].get(bench, {}).get("difficulty")]
        if not rows:
            continue
        names = [q["quartile"] for q in rows[0]["metrics"][bench]["difficulty"]]
        head = ["point", "seeds", *(f"{n}: acc (points) / length (%)" for n in names)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r["label"], str(r["seeds"])]
            cells += [f"{_cell(q['accuracy_points'])} / {_cell(q['length_pct'])}"
                      for q in r["metrics"][bench]["difficulty"]]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append(f"**{bench}**\n\n" + "\n".join(lines) + "\n")
    if not parts:
        return ""
    return ("\n## By difficulty\n\nThe held-out problems in four quartiles of difficulty "
            "(Q1 the easiest), ranked by the base model's own answers (docs/evaluation.md), "
            "the same in every seed; each cell is the change against the base, mean over "
            "seeds [95 % t-interval] (one seed: the run's paired bootstrap). Part of any "
            "change by quartile is regression to the mean: compare points quartile by "
            "quartile.\n\n" + "\n".join(parts))


def unfinished_markdown(points: list[dict[str, Any]]) -> str:
    """The runs that failed or were stopped, each with why: what its run recorded (the
    stage and its error). The reasons are text written by runs (they may quote a file), so
    they stand in an indented code block, shown as they are wherever the table is rendered."""
    ended = [p for p in points if p["state"] in ("failed", "stopped")]
    if not ended:
        return ""
    lines = []
    for p in ended:
        text = f"{p['name']} ({p['label']}, seed {p['seed']}): {p['state']}: " \
               f"{p.get('reason') or 'no reason recorded'}"
        for line in text.splitlines() or [""]:  # wrapped to read without scrolling
            lines += ["    " + part for part in textwrap.wrap(
                line, 96, subsequent_indent="  ", break_long_words=True,
                break_on_hyphens=False) or [""]]
    return ("\n## Runs that did not finish\n\nWhy each ended, as its run recorded it "
            "(its folder's logs/ has the rest); starting the sweep again retries them.\n\n"
            + "\n".join(lines) + "\n")


def plot_sweep(data: dict[str, Any], out: Path) -> None:
    """Accuracy vs mean tokens (AVG over benchmarks), error bars = 95 % intervals over
    seeds, the reference rows as stars, the Pareto front joined and ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from o1pruner.evaluation.report import _save

    fig, ax = plt.subplots(figsize=(8.5, 6.4))
    front = []
    for i, r in enumerate(data["rows"]):
        acc, tok = r["metrics"]["AVG"]["accuracy"], r["metrics"]["AVG"]["tokens"]
        x, y = tok["mean"], acc["mean"]
        # an interval past what accuracy can be (few seeds) is drawn to 0 / 100 %
        lo, hi = (max(acc["ci"][0], 0.0), min(acc["ci"][1], 100.0)) if acc["ci"] else (y, y)
        xerr = [[x - max(tok["ci"][0], 0.0)], [tok["ci"][1] - x]] if tok["ci"] else None
        yerr = [[y - lo], [hi - y]] if acc["ci"] else None
        color, fmt, size = {"base": ("black", "*", 13), "fast_solving": ("dimgray", "D", 8)
                            }.get(r["kind"], (plt.cm.tab10(i % 10), "o", 7))
        label = textwrap.shorten(f"{r['label']} ({r['seeds']} seed{'s' * (r['seeds'] > 1)})",
                                 70, placeholder="...")
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=fmt, color=color, markersize=size,
                    capsize=3, label=label, zorder=3)
        if r["seeds"] > 1:  # each seed's own result, small
            ax.scatter(tok["values"], acc["values"], s=14, color=color, alpha=0.55, zorder=3)
        if r["pareto"]:
            front.append((x, y))
            ax.scatter([x], [y], s=260, facecolors="none", edgecolors="crimson",
                       linewidths=1.4, zorder=4)
    if front:
        xs, ys = zip(*sorted(front), strict=True)
        ax.plot(xs, ys, color="crimson", alpha=0.5, linestyle="--", zorder=2,
                label="Pareto front")
    ax.set_xlabel("mean tokens per solution (average over benchmarks)")
    ax.set_ylabel("accuracy % (average over benchmarks)")
    ax.set_ylim(-3, 103)
    ax.set_xlim(left=0)
    done = max((r["seeds"] for r in data["rows"] if r["kind"] == "trained"), default=0)
    ax.set_title(f"Sweep {data['name']}: up to {done} of {len(data['seeds'])} seed(s) done; "
                 "mean, 95 % interval over seeds, each seed's dot", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    _save(fig, out)


def write_sweep_report(sweep: Sweep, states: list[tuple[str, str | None]]) -> dict[str, Any]:
    """report/sweep.json, report/table.md and report/accuracy_vs_tokens.png (`states` as
    for `sweep_rows`; `o1pruner.sweep.write_report` gives them)."""
    data = sweep_rows(sweep, states)
    out = sweep.root / "report"
    out.mkdir(exist_ok=True)
    atomic_write_json(out / "sweep.json", data)
    done = sum(p["state"] == "done" for p in data["points"])
    header = (f"# Sweep {data['name']}\n\n{done} of {len(data['points'])} runs done; "
              + (f"preset {data['preset']}; " if data["preset"] else "")
              + f"grid: {', '.join(f'{f} = {v}' for f, v in data['grid']) or '-'}; "
              f"seeds: {', '.join(map(str, data['seeds']))}. Cells: mean over seeds "
              "[95 % t-interval]; * marks the Pareto front (fewest tokens for the "
              "accuracy). AVG: the mean over benchmarks. The differences against "
              "the base are paired per problem; with one seed their interval is the run's "
              "own paired bootstrap (the variation of the problems, not of seeds).\n\n")
    atomic_write_text(out / "table.md", header + (table_markdown(data) if data["rows"]
                                                  else "No finished runs yet.\n")
                      + difficulty_markdown(data) + unfinished_markdown(data["points"]))
    if data["rows"]:
        plot_sweep(data, out / "accuracy_vs_tokens.png")
    return data
