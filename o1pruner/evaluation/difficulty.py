"""Where a method cut: the length and accuracy changes split by problem difficulty.

A shorter model can cut its easy problems (harmless) or break its hard ones (the failure
third-party re-runs of O1-Pruner report on AIME). The paper's Table 1 groups problems by
difficulty; held-out problems have no pre-samples, so their difficulty comes from the base
model's own evaluation of them:

- a problem's difficulty is the base model's accuracy on it (the mean over its
  `eval.samples_per_problem` samples; 0 or 1 with one greedy sample), ties broken by the
  base model's mean tokens on it (a problem the base answers at more length is taken as
  harder), then by problem id;
- the problems, easiest first, are split into four near-equal quartiles (Q1 easiest,
  Q4 hardest);
- in each quartile the accuracy difference (points) and the length change (% of the base's
  mean tokens) get a 95 % paired bootstrap interval, as on the whole benchmark
  (`o1pruner.evaluation.intervals`).

With one sample per problem the split is coarse (solved vs unsolved, then by length); set
`eval.samples_per_problem` to 4 or more for an accuracy-based difficulty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from o1pruner.evaluation.intervals import RESAMPLES, _differences, _per_problem, _summary
from o1pruner.evaluation.metrics import by_problem

QUARTILES = ("Q1 easiest", "Q2", "Q3", "Q4 hardest")
MIN_PROBLEMS = 8  # fewer than 2 a quartile says nothing


def difficulty_order(base: Mapping[str, tuple[float, float]]) -> list[str]:
    """Problem ids, easiest first: base accuracy descending, then base tokens, then id."""
    return sorted(base, key=lambda pid: (-base[pid][0], base[pid][1], pid))


def by_difficulty(base_records: Sequence[Mapping[str, Any]],
                  model_records: Sequence[Mapping[str, Any]],
                  resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any] | None:
    """{"basis", "quartiles": [row, ...]} for one benchmark, or None when the two share
    fewer than MIN_PROBLEMS problems. Each row: quartile, problems, the base's and the
    model's accuracy (%) and mean tokens, and the interval summary of `_summary`."""
    b, m = _per_problem(base_records), _per_problem(model_records)
    shared = {pid: b[pid] for pid in b if pid in m}
    if len(shared) < MIN_PROBLEMS:
        return None
    n_samples = max(len(group) for group in by_problem(base_records).values())
    rng = np.random.default_rng(seed)
    rows = []
    for name, ids in zip(QUARTILES, np.array_split(difficulty_order(shared), 4),
                         strict=True):
        base = np.array([b[p] for p in ids], dtype=np.float64)
        model = np.array([m[p] for p in ids], dtype=np.float64)
        idx = rng.integers(0, len(ids), size=(resamples, len(ids)))
        acc, length = _differences(base, model, idx)
        point_acc, point_len = (float(x[0]) for x in
                                _differences(base, model, np.arange(len(ids))[None, :]))
        rows.append({
            "quartile": name,
            "base_accuracy": round(100 * float(base[:, 0].mean()), 2),
            "accuracy": round(100 * float(model[:, 0].mean()), 2),
            "base_tokens": round(float(base[:, 1].mean()), 1),
            "tokens": round(float(model[:, 1].mean()), 1),
            **_summary(point_acc, point_len, acc, length, len(ids), resamples),
        })
    basis = (f"the base model's accuracy over its {n_samples} samples a problem, then its "
             "mean tokens" if n_samples > 1 else
             "the base model's one sample a problem: solved before unsolved, then by its "
             "tokens (coarse: set eval.samples_per_problem >= 4 for an accuracy-based split)")
    return {"basis": basis, "quartiles": rows}
