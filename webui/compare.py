"""Runs side by side: accuracy against mean tokens and the training curves in one figure.

Each run contributes what it has: a point per evaluated model (its base and its trained
model, from eval/results.json, joined by an arrow) and its training curves (the `metrics`
events of events.jsonl). A run stopped before its evaluation still shows its curves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import read_json
from o1pruner.jobs import RunDir

logger = logging.getLogger(__name__)

# training curves drawn per run: panel title -> metric key of the train `metrics` events
CURVE_KEYS = {"loss": "loss", "reward mean": "reward/mean",
              "mean sample length": "completion_length"}
COLORS = ("#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04",
          "#db2777")


@dataclass
class RunPoints:
    """What one run contributes to the comparison."""

    label: str
    points: dict[str, tuple[float, float]] = field(default_factory=dict)  # method -> (tokens, acc %)
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # key -> (step, v)
    presample_length: float | None = None  # mean pre-sample length: the reference line
    note: str = ""


def run_points(run: RunDir, label: str) -> RunPoints:
    """The evaluated models' (mean tokens, accuracy %) and the training curves of `run`."""
    out = RunPoints(label)
    results = read_json(run.results_path)
    averages = results.get("averages") if isinstance(results, dict) else None
    for method, avg in (averages or {}).items():
        try:
            out.points[method] = (float(avg["mean_tokens"]), 100.0 * float(avg["accuracy"]))
        except (KeyError, TypeError, ValueError):
            continue
    try:
        events = list(run.events())
    except (OSError, ValueError) as err:
        logger.info("%s: events unreadable: %s", run.root, err)
        events = []
    for event in events:
        if event.get("kind") == "metrics" and event.get("stage") == "presample":
            length = event.get("mean_length")
            out.presample_length = float(length) if isinstance(length, (int, float)) else None
        if event.get("kind") != "metrics" or event.get("stage") != "train":
            continue
        for key in CURVE_KEYS.values():
            value = event.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.curves.setdefault(key, []).append((event.get("step", 0), float(value)))
    if not out.points:
        out.note = "no evaluation results yet; " + (
            "its training curves are drawn" if out.curves else "no training metrics yet" + (
                " (its mean pre-sample length is drawn)" if out.presample_length else ""))
    return out


def compare_figure(runs: list[RunPoints]) -> Any:
    """One figure: accuracy vs mean tokens (an arrow from each run's base to its trained
    model), then one panel per training curve; None when no run has anything to draw."""
    if not any(r.points or r.curves or r.presample_length for r in runs):
        return None
    from matplotlib.figure import Figure  # no pyplot: no global figure registry

    panels = 1 + len(CURVE_KEYS)
    fig = Figure(figsize=(3.6 * panels, 3.2), layout="constrained")
    axes = fig.subplots(1, panels)
    scatter = axes[0]
    scatter.set_title("accuracy vs mean tokens", fontsize=10)
    scatter.set_xlabel("mean tokens per answer", fontsize=8)
    scatter.set_ylabel("accuracy (%)", fontsize=8)
    from matplotlib.lines import Line2D

    handles = []
    for i, run in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        for method, (tokens, acc) in run.points.items():
            scatter.scatter([tokens], [acc], s=46, color=color, zorder=3, linewidths=1.6,
                            facecolors="white" if method == "base" else color,
                            marker="o" if method in ("base", "trained") else "s")
        if "base" in run.points and "trained" in run.points:
            (x0, y0), (x1, y1) = run.points["base"], run.points["trained"]
            scatter.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=2,
                             arrowprops={"arrowstyle": "->", "color": color, "lw": 1.2})
        if run.points:
            handles.append(Line2D([], [], color=color, marker="o", linestyle="",
                                  label=run.label))
    if not handles:
        scatter.text(0.5, 0.5, "no evaluation results yet", ha="center", va="center",
                     transform=scatter.transAxes, color="gray", fontsize=9)
    else:  # colour: the run; hollow: its base model, filled: its trained model
        handles += [Line2D([], [], color="gray", marker="o", markerfacecolor=face,
                           linestyle="", label=name)
                    for name, face in (("base", "white"), ("trained", "gray"))]
        scatter.legend(handles=handles, fontsize=7, loc="best")
    for ax, (title, key) in zip(axes[1:], CURVE_KEYS.items(), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        drawn = False
        for i, run in enumerate(runs):
            rows = run.curves.get(key) or []
            if rows:
                xs, ys = zip(*rows, strict=True)
                ax.plot(xs, ys, color=COLORS[i % len(COLORS)], linewidth=1.5,
                        marker="o" if len(rows) < 30 else None, markersize=3, label=run.label)
                drawn = True
            if key == "completion_length" and run.presample_length is not None:
                ax.axhline(run.presample_length, color=COLORS[i % len(COLORS)], linewidth=1,
                           linestyle="--", label=f"{run.label} pre-samples")
                drawn = True
        if drawn:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no training metrics", ha="center", va="center",
                    transform=ax.transAxes, color="gray", fontsize=9)
    for ax in axes:
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return fig


def compare_markdown(runs: list[tuple[str, RunDir]], drawn: list[RunPoints]) -> str:
    """`o1pruner compare`'s table over the runs that have evaluation results, and a line
    for each run that has none yet."""
    from o1pruner.evaluation import run_compare

    evaluated = [run.root for (_, run), pts in zip(runs, drawn, strict=True) if pts.points]
    parts = []
    if evaluated:
        try:
            parts.append(run_compare(evaluated))
        except UserError as err:
            parts.append(f"Error: {err}")
        except (KeyError, TypeError, ValueError) as err:  # a results.json of another version
            logger.info("compare table of %s: %r", evaluated, err)
            parts.append(f"(no table: a results.json lacks {err})")
    parts += [f"- `{pts.label}`: {pts.note}" for pts in drawn if pts.note]
    return "\n".join(parts)
