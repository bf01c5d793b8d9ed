"""Benchmark metrics and the accuracy-efficiency score (AES) of METHOD.md.

Per (model, benchmark): accuracy (avg@n with n samples per problem, and pass@k), mean /
median tokens over all solutions (with their thinking and answer parts), truncation rate,
wall time (elapsed) and replica time (the replicas' generation seconds added up: with
eval.data_parallel_size N up to N times the wall time). Against the untrained base model:

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


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from n samples of which c are correct (Chen et al.
    2021): 1 - C(n - c, k) / C(n, k), computed as a product to stay exact for large n."""
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def pass_ks(n: int) -> list[int]:
    """The k reported for n samples per problem: 1, 2, 4, ... up to n, and n."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n] if n > 1 else []


def by_problem(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records grouped by problem id, in first-seen order."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(str(r["problem_id"]), []).append(r)
    return groups


def benchmark_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics of one model on one benchmark from its generation records (each with
    `problem_id`, `num_tokens`, `finish_reason`, `correct`, `extracted`, and optionally
    `sample_idx`, `thinking_tokens`, `answer_tokens`, `gen_s` and `wall_s`: the record's
    shares of its replica's seconds and of the elapsed time; records written before
    `wall_s` existed count their `gen_s` as wall time).

    With several samples per problem, accuracy is avg@n (each problem's share of correct
    samples, averaged over problems), pass@k is the unbiased estimate for k <= n, and the
    token figures are over all samples. A solution that hit the token limit (finish_reason
    `length`) is counted as truncated; without a final answer it is also wrong."""
    groups = by_problem(records)
    n = len(records)
    tokens = [int(r["num_tokens"]) for r in records]
    thinking = [int(r.get("thinking_tokens") or 0) for r in records]
    correct = sum(bool(r["correct"]) for r in records)
    truncated = sum(r.get("finish_reason") == "length" for r in records)
    truncated_no_answer = sum(r.get("finish_reason") == "length" and r.get("extracted") is None
                              for r in records)
    replica = sum(float(r.get("gen_s") or 0.0) for r in records)
    wall = sum(float(r.get("wall_s", r.get("gen_s")) or 0.0) for r in records)
    shares = [sum(bool(r["correct"]) for r in g) / len(g) for g in groups.values()]
    samples = min((len(g) for g in groups.values()), default=0)
    out = {
        "n": len(groups),
        "n_samples": n,
        "samples_per_problem": samples,
        "n_correct": correct,
        "accuracy": statistics.fmean(shares) if shares else 0.0,
        "mean_tokens": statistics.fmean(tokens) if tokens else 0.0,
        "median_tokens": float(statistics.median(tokens)) if tokens else 0.0,
        "mean_thinking_tokens": statistics.fmean(thinking) if thinking else 0.0,
        "mean_answer_tokens": statistics.fmean(t - h for t, h in zip(tokens, thinking,
                                                                      strict=True))
        if tokens else 0.0,
        "total_tokens": sum(tokens),
        "n_truncated": truncated,
        "truncation_rate": truncated / n if n else 0.0,
        "n_truncated_no_answer": truncated_no_answer,
        "n_no_answer": sum(r.get("extracted") is None for r in records),
        "wall_s": round(wall, 3),
        "replica_s": round(replica, 3),
        "tokens_per_s": round(sum(tokens) / wall, 2) if wall > 0 else None,
    }
    if samples > 1:
        out["pass_at_k"] = {str(k): statistics.fmean(
            pass_at_k(len(g), sum(bool(r["correct"]) for r in g), k) for g in groups.values())
            for k in pass_ks(samples)}
    return out


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
        "mean_thinking_tokens": _mean(r.get("mean_thinking_tokens", 0.0) for r in rows),
        "mean_answer_tokens": _mean(r.get("mean_answer_tokens", r["mean_tokens"])
                                    for r in rows),
        "wall_s": round(sum(r["wall_s"] for r in rows), 3),
        "replica_s": round(sum(r.get("replica_s", r["wall_s"]) for r in rows), 3),
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
