"""Draws quickstart_attempts.png from the attempt table in docs/results.md (numbers copied
from each run's eval/results.json): `.venv/bin/python docs/results/plot_attempts.py`."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASE = (223.3, 46.5)
ATTEMPTS = {  # label: (mean tokens, accuracy %)
    "1": (187.0, 55.5), "2": (184.4, 54.5), "3": (179.0, 50.0), "4": (212.3, 35.5),
    "5": (166.2, 49.0), "6": (175.1, 42.5), "7": (202.4, 55.0), "8": (191.3, 46.5),
    "9": (170.7, 53.0), "10 (template)": (197.5, 52.0),
    "11": (183.5, 38.5),
}

fig, ax = plt.subplots(figsize=(7, 4.5))
ax.axhline(BASE[1] - 1, color="#16a34a", linestyle=":", linewidth=1)
ax.axvline(BASE[0] * 0.7, color="#16a34a", linestyle=":", linewidth=1)
ax.fill_between([0, BASE[0] * 0.7], BASE[1] - 1, 60, color="#16a34a", alpha=0.15,
                label="target: >= 30 % shorter, <= 1 point less accurate")
ax.scatter(*BASE, s=90, color="black", zorder=3, label="base model")
for label, (tokens, acc) in ATTEMPTS.items():
    ax.scatter(tokens, acc, s=60, color="#f97316", zorder=3)
    ax.annotate(label, (tokens, acc), textcoords="offset points", xytext=(6, 4), fontsize=9)
ax.set_xlim(140, 230)
ax.set_ylim(33, 58)
ax.set_xlabel("mean tokens per answer (200 held-out problems, greedy)")
ax.set_ylabel("accuracy (%)")
ax.set_title("Quickstart attempts: trained models against the base model")
ax.legend(loc="lower left", fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(Path(__file__).with_name("quickstart_attempts.png"), dpi=110)
