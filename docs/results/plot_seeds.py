"""Draws a results figure from the seed runs' eval/results.json: each seed's trained model on
the held-out problems, and the mean over seeds with its 95 % t-interval, one series per recipe.

    .venv/bin/python docs/results/plot_seeds.py OUT.png \
        "lambda 1=runs/quickstart-seeds-00-base-s*" \
        "lambda 2=runs/quickstart-lambda-00-lambda2-s*,runs/quickstart-more-00-base-s*@2"

Each series is LABEL=GLOB[,GLOB...][@R] (the globs match run directories, one per seed, or
results files: a copy of a run's eval/results.json kept before the run was raised to more
rounds).
Without @R each run's last round (`trained`) is drawn; with @R round R's model (`round-R`,
or `trained` in a run of R rounds), so runs raised to more rounds can still show an
earlier one."""

import json
import sys
from glob import glob
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from o1pruner.sweep_report import mean_ci  # noqa: E402

BENCH, METHOD = "arithmetic_test", "trained"
COLORS = ["#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#db2777", "#ca8a04",
          "#4b5563"]


def _points(patterns: str) -> list[tuple[float, float, float, float]]:
    """(base tokens, base accuracy %, tokens, accuracy %) of every run matching `patterns`."""
    patterns, _, round_text = patterns.partition("@")
    if round_text and not round_text.isdigit():
        sys.exit(f"{patterns}@{round_text}: the part after @ must be a round number, e.g. @2")
    round_ = int(round_text) if round_text else None
    out = []
    for run in sorted({r for pattern in patterns.split(",") for r in glob(pattern)}):
        results = Path(run) if Path(run).is_file() else Path(run) / "eval" / "results.json"
        method = METHOD
        try:
            data = json.loads(results.read_text())
            if round_ is not None and round_ != data.get("rounds", 1):
                method = f"round-{round_}"
            base, trained = data["metrics"]["base"][BENCH], data["metrics"][method][BENCH]
        except (OSError, ValueError, KeyError) as exc:
            sys.exit(f"{results}: no {method} and base results on {BENCH} ({exc!r}); "
                     "finish the run's eval stage first")
        out.append((base["mean_tokens"], 100 * base["accuracy"],
                    trained["mean_tokens"], 100 * trained["accuracy"]))
    if len(out) < 2:
        sys.exit(f"{patterns}: {len(out)} run directories match; a mean over seeds needs 2 or more")
    return out


def main(out: str, series: list[str]) -> None:
    fig, ax = plt.subplots(figsize=(7, 6.5))
    base_tokens = base_acc = None
    for i, item in enumerate(series):
        color = COLORS[i % len(COLORS)]
        label, pattern = item.split("=", 1)
        pts = _points(pattern)
        base_tokens, base_acc = pts[0][0], pts[0][1]
        tokens, accs = [p[2] for p in pts], [p[3] for p in pts]
        ax.scatter(tokens, accs, s=30, color=color, alpha=0.5)
        mt, ma = mean_ci(tokens), mean_ci(accs)
        ax.errorbar(mt["mean"], ma["mean"], color=color, marker="o", markersize=8, capsize=4,
                    xerr=[[mt["mean"] - mt["ci"][0]], [mt["ci"][1] - mt["mean"]]],
                    yerr=[[ma["mean"] - ma["ci"][0]], [ma["ci"][1] - ma["mean"]]],
                    label=f"{label}: mean of {len(pts)} seeds, 95 % t-interval (dots: seeds)")
    ax.axhline(base_acc - 1, color="#16a34a", linestyle=":", linewidth=1)
    ax.axvline(base_tokens * 0.7, color="#16a34a", linestyle=":", linewidth=1)
    ax.fill_between([0, base_tokens * 0.7], base_acc - 1, 100, color="#16a34a", alpha=0.12,
                    label="target: >= 30 % shorter, <= 1 point less accurate")
    ax.scatter(base_tokens, base_acc, s=90, color="black", zorder=3, label="base model")
    ax.set_xlim(80, base_tokens + 30)
    ax.set_ylim(20, 80)
    ax.set_xlabel(f"mean tokens per answer ({BENCH}, greedy)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Quickstart: the trained model against the base model")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
