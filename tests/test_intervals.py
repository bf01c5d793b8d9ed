"""Sampled evaluation metrics (avg@n, pass@k) and paired bootstrap intervals."""

from __future__ import annotations

from math import comb

import pytest

from o1pruner.evaluation.intervals import describe, paired_bootstrap
from o1pruner.evaluation.metrics import benchmark_metrics, pass_at_k, pass_ks


def records(correct: list[list[bool]], tokens: list[list[int]]) -> list[dict]:
    return [{"problem_id": f"p{i}", "sample_idx": j, "correct": c, "num_tokens": t,
             "finish_reason": "stop", "extracted": "1" if c else None,
             "thinking_tokens": t // 2}
            for i, (cs, ts) in enumerate(zip(correct, tokens, strict=True))
            for j, (c, t) in enumerate(zip(cs, ts, strict=True))]


@pytest.mark.parametrize("n,c,k", [(16, 3, 1), (16, 3, 4), (16, 0, 8), (16, 16, 1), (10, 5, 6)])
def test_pass_at_k_is_the_unbiased_estimator(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_avg_at_n_pass_at_k_and_tokens_over_all_samples() -> None:
    recs = records([[True, False, False, False], [True, True, True, True]],
                   [[10, 20, 30, 40], [100, 100, 100, 100]])
    m = benchmark_metrics(recs)
    assert m["n"] == 2 and m["n_samples"] == 8 and m["samples_per_problem"] == 4
    assert m["accuracy"] == pytest.approx((0.25 + 1.0) / 2)  # avg@4
    assert m["mean_tokens"] == pytest.approx(500 / 8)
    assert m["mean_thinking_tokens"] == pytest.approx(250 / 8)
    assert m["mean_answer_tokens"] == pytest.approx(250 / 8)
    assert pass_ks(4) == [1, 2, 4]
    assert m["pass_at_k"]["1"] == pytest.approx(m["accuracy"])  # pass@1 = avg@n
    assert m["pass_at_k"]["4"] == 1.0
    assert m["pass_at_k"]["2"] == pytest.approx((0.5 + 1.0) / 2)


def test_one_sample_per_problem_has_no_pass_at_k() -> None:
    m = benchmark_metrics(records([[True], [False]], [[5], [7]]))
    assert m["accuracy"] == 0.5 and "pass_at_k" not in m


def test_interval_of_a_clear_change_excludes_zero_and_a_null_change_contains_it() -> None:
    n = 200
    base = records([[True]] * n, [[100]] * n)
    model = records([[i % 10 != 0] for i in range(n)], [[80]] * n)  # -10 points, -20 %
    out = paired_bootstrap({"b": base}, {"b": model}, seed=1)
    s = out["b"]
    assert s["accuracy_points"] == pytest.approx(-10.0)
    lo, hi = s["accuracy_points_ci"]
    assert lo < -10.0 < hi and hi < 0  # about +-4 points wide at n = 200
    assert s["length_pct"] == -20.0 and s["length_pct_ci"] == [-20.0, -20.0]
    assert s["accuracy_significant"] and s["length_significant"]
    same = paired_bootstrap({"b": base}, {"b": base}, seed=1)["b"]
    assert same["accuracy_points_ci"] == [0.0, 0.0] and same["accuracy_significant"] is False
    assert "(not significant)" in describe(same)


def test_the_bootstrap_is_paired_problem_by_problem() -> None:
    """Hard problems are wrong for both models: a paired bootstrap sees no noise in the
    difference where an unpaired one would."""
    n = 100
    correct = [[i % 2 == 0] for i in range(n)]  # half of the problems solved, by both
    a = records(correct, [[100 + i] for i in range(n)])
    b = records(correct, [[90 + 0.9 * i] for i in range(n)])
    s = paired_bootstrap({"x": a}, {"x": b}, seed=0)["x"]
    assert s["accuracy_points_ci"] == [0.0, 0.0]
    assert -10.5 < s["length_pct_ci"][0] <= s["length_pct_ci"][1] < -9.5


def test_avg_interval_averages_benchmarks_within_each_resample() -> None:
    base = records([[True]] * 50, [[100]] * 50)
    shorter = records([[True]] * 50, [[50]] * 50)
    out = paired_bootstrap({"a": base, "b": base}, {"a": shorter, "b": base}, seed=0)
    assert out["a"]["length_pct"] == -50.0 and out["b"]["length_pct"] == 0.0
    assert out["AVG"]["length_pct"] == -25.0 and out["AVG"]["length_pct_ci"] == [-25.0, -25.0]
    assert out["AVG"]["problems"] == 100
