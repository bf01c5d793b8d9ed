"""Paired bootstrap intervals for base-vs-model differences.

On 200 problems one accuracy figure has a standard error of about 3.5 points, so every
comparison carries its noise. The problems are resampled with replacement (the same
resample for both models: a paired bootstrap), and for each resample

    accuracy difference (points) = 100 * (acc_model - acc_base)
    length change (%)            = 100 * (mean tokens_model / mean tokens_base - 1)

where a problem's accuracy and tokens are the means over its samples (avg@n). The 95%
interval is the 2.5th to 97.5th percentile over `resamples`. On the AVG row each resample
draws every benchmark's problems and averages the per-benchmark differences, as the AVG
row averages them. An interval that contains 0 means the change is not significant.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from o1pruner.evaluation.metrics import by_problem

logger = logging.getLogger(__name__)

RESAMPLES = 2000
LEVEL = 0.95


def _per_problem(records: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """problem id -> (accuracy, mean tokens) over its samples."""
    return {pid: (float(np.mean([bool(r["correct"]) for r in group])),
                  float(np.mean([int(r["num_tokens"]) for r in group])))
            for pid, group in by_problem(records).items()}


def _paired(base: Sequence[Mapping[str, Any]],
            model: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """[problems, 2] arrays (accuracy, tokens) of the problems both were evaluated on."""
    b, m = _per_problem(base), _per_problem(model)
    shared = [pid for pid in b if pid in m]
    if not shared:
        return None
    return (np.array([b[p] for p in shared], dtype=np.float64),
            np.array([m[p] for p in shared], dtype=np.float64))


def _differences(base: np.ndarray, model: np.ndarray, idx: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per resample (rows of idx): accuracy difference in points, length change in %."""
    acc = 100.0 * (model[idx, 0].mean(1) - base[idx, 0].mean(1))
    base_len = base[idx, 1].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        length = np.where(base_len > 0, 100.0 * (model[idx, 1].mean(1) / base_len - 1.0),
                          np.nan)
    return acc, length


def _summary(point_acc: float, point_len: float, acc: np.ndarray, length: np.ndarray,
             n_problems: int, resamples: int) -> dict[str, Any]:
    tail = 100 * (1 - LEVEL) / 2

    def interval(values: np.ndarray) -> list[float] | None:
        values = values[np.isfinite(values)]
        if not values.size:
            return None
        lo, hi = np.percentile(values, [tail, 100 - tail])
        return [round(float(lo), 2), round(float(hi), 2)]

    acc_ci, len_ci = interval(acc), interval(length)

    def significant(ci: list[float] | None) -> bool | None:
        return None if ci is None else not (ci[0] <= 0.0 <= ci[1])

    return {
        "accuracy_points": round(point_acc, 2),
        "accuracy_points_ci": acc_ci,
        "accuracy_significant": significant(acc_ci),
        "length_pct": None if not np.isfinite(point_len) else round(point_len, 2),
        "length_pct_ci": len_ci,
        "length_significant": significant(len_ci),
        "problems": n_problems,
        "resamples": resamples,
        "level": LEVEL,
    }


def paired_bootstrap(base: Mapping[str, Sequence[Mapping[str, Any]]],
                     model: Mapping[str, Sequence[Mapping[str, Any]]],
                     resamples: int = RESAMPLES, seed: int = 0) -> dict[str, dict[str, Any]]:
    """{benchmark: interval summary, ..., "AVG": ...} for the model against the base, from
    their generation records per benchmark. Benchmarks without shared problems are left
    out (and so is AVG if any is)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    draws: list[tuple[np.ndarray, np.ndarray]] = []
    points: list[tuple[float, float]] = []
    for bench in base:
        pair = _paired(base[bench], model.get(bench, []))
        if pair is None:
            continue
        b, m = pair
        idx = rng.integers(0, len(b), size=(resamples, len(b)))
        acc, length = _differences(b, m, idx)
        whole = np.arange(len(b))[None, :]
        point_acc, point_len = (float(x[0]) for x in _differences(b, m, whole))
        out[bench] = _summary(point_acc, point_len, acc, length, len(b), resamples)
        draws.append((acc, length))
        points.append((point_acc, point_len))
    if draws and len(draws) == len(base):
        acc = np.mean([d[0] for d in draws], axis=0)
        length = np.mean([d[1] for d in draws], axis=0)
        out["AVG"] = _summary(float(np.mean([p[0] for p in points])),
                              float(np.mean([p[1] for p in points])), acc, length,
                              sum(v["problems"] for v in out.values()), resamples)
    return out


def describe(summary: Mapping[str, Any] | None) -> str:
    """"<diff> points [<lo>, <hi>]; <change> % tokens [<lo>, <hi>]", signed, one decimal,
    with "(not significant)" after an interval that contains 0."""
    if not summary:
        return ""

    def part(value: float | None, ci: list[float] | None, unit: str,
             significant: bool | None) -> str:
        if value is None:
            return f"n/a {unit}"
        text = f"{value:+.1f} {unit}"
        if ci:
            text += f" [{ci[0]:+.1f}, {ci[1]:+.1f}]"
        return text + (" (not significant)" if significant is False else "")

    return "; ".join([
        part(summary["accuracy_points"], summary["accuracy_points_ci"], "points",
             summary["accuracy_significant"]),
        part(summary["length_pct"], summary["length_pct_ci"], "% tokens",
             summary["length_significant"])])
