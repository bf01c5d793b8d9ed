"""Benchmark metrics and the accuracy-efficiency score (AES) of METHOD.md.

Per (model, benchmark): accuracy, mean / median tokens over all solutions, truncation
rate, wall time. Against the untrained base model:

    dLen = (Len_base - Len_model) / Len_base
    dAcc = (Acc_model - Acc_base) / Acc_base
    AES  = alpha * dLen + beta * |dAcc|    if dAcc >= 0
    AES  = alpha * dLen - gamma * |dAcc|   if dAcc <  0

The AVG row of a table is the mean of the per-benchmark accuracy, length and AES.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: Why dAcc/AES can be missing; shown in reports next to the n/a cell.
UNDEFINED_BASE_ACC = "base accuracy is 0, so the relative accuracy change dAcc is undefined"
UNDEFINED_BASE_LEN = "base mean length is 0, so the relative length change dLen is undefined"


def aes(acc_model: float, len_model: float, acc_base: float, len_base: float,
        alpha: float = 1.0, beta: float = 3.0, gamma: float = 5.0) -> float:
    """The accuracy-efficiency score of a model against its base, exactly as METHOD.md
    states it (accuracies on any common scale, lengths in tokens). An accuracy gain is
    rewarded with beta, a drop penalised with gamma. Raises ZeroDivisionError when the
    base accuracy or length is 0 (the relative changes are then undefined)."""
    d_len = (len_base - len_model) / len_base
    d_acc = (acc_model - acc_base) / acc_base
    if d_acc >= 0:
        return alpha * d_len + beta * abs(d_acc)
    return alpha * d_len - gamma * abs(d_acc)


@dataclass(frozen=True)
class Comparison:
    """One model against the base on one benchmark; None where undefined (see `note`)."""

    d_len: float | None
    d_acc: float | None
    aes: float | None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(model: Mapping[str, Any], base: Mapping[str, Any], alpha: float = 1.0,
            beta: float = 3.0, gamma: float = 5.0) -> Comparison:
    """dLen, dAcc and AES of `model` metrics against `base` metrics (dicts with
    `accuracy` and `mean_tokens`), with None and an explanation where a base figure is 0."""
    acc_m, len_m = model["accuracy"], model["mean_tokens"]
    acc_b, len_b = base["accuracy"], base["mean_tokens"]
    d_len = (len_b - len_m) / len_b if len_b else None
    d_acc = (acc_m - acc_b) / acc_b if acc_b else None
    notes = [n for n, bad in ((UNDEFINED_BASE_ACC, d_acc is None),
                              (UNDEFINED_BASE_LEN, d_len is None)) if bad]
    score = None if notes else aes(acc_m, len_m, acc_b, len_b, alpha, beta, gamma)
    return Comparison(d_len, d_acc, score, "; ".join(notes) or None)


def benchmark_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics of one model on one benchmark from its generation records (each with
    `num_tokens`, `finish_reason`, `correct`, `extracted`, optional `gen_s`).

    A solution that hit the token limit (finish_reason `length`) is counted as truncated;
    if it has no final answer it is also wrong (its `correct` is already False)."""
    n = len(records)
    tokens = [int(r["num_tokens"]) for r in records]
    correct = sum(bool(r["correct"]) for r in records)
    truncated = sum(r.get("finish_reason") == "length" for r in records)
    truncated_no_answer = sum(r.get("finish_reason") == "length" and r.get("extracted") is None
                              for r in records)
    wall = sum(float(r.get("gen_s") or 0.0) for r in records)
    return {
        "n": n,
        "n_correct": correct,
        "accuracy": correct / n if n else 0.0,
        "mean_tokens": statistics.fmean(tokens) if tokens else 0.0,
        "median_tokens": float(statistics.median(tokens)) if tokens else 0.0,
        "total_tokens": sum(tokens),
        "n_truncated": truncated,
        "truncation_rate": truncated / n if n else 0.0,
        "n_truncated_no_answer": truncated_no_answer,
        "n_no_answer": sum(r.get("extracted") is None for r in records),
        "wall_s": round(wall, 3),
        "tokens_per_s": round(sum(tokens) / wall, 2) if wall > 0 else None,
    }


def _mean(values: Iterable[float | None]) -> float | None:
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return statistics.fmean(vals)  # type: ignore[arg-type]


def average_row(per_benchmark: Mapping[str, Mapping[str, Any]],
                comparisons: Mapping[str, Comparison] | None = None) -> dict[str, Any]:
    """The AVG row: mean over benchmarks of accuracy, mean tokens, truncation rate and
    (when given) dLen, dAcc and AES. A mean with an undefined member is None, with a note."""
    rows = list(per_benchmark.values())
    avg: dict[str, Any] = {
        "n": sum(r["n"] for r in rows),
        "accuracy": _mean(r["accuracy"] for r in rows),
        "mean_tokens": _mean(r["mean_tokens"] for r in rows),
        "median_tokens": _mean(r["median_tokens"] for r in rows),
        "truncation_rate": _mean(r["truncation_rate"] for r in rows),
        "wall_s": round(sum(r["wall_s"] for r in rows), 3),
    }
    if comparisons is not None:
        comps = list(comparisons.values())
        avg_cmp = Comparison(
            _mean(c.d_len for c in comps), _mean(c.d_acc for c in comps),
            _mean(c.aes for c in comps),
            "undefined on " + ", ".join(b for b, c in comparisons.items() if c.aes is None)
            if any(c.aes is None for c in comps) else None,
        )
        avg.update(avg_cmp.to_dict())
    return avg
