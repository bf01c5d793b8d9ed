"""Length-disharmony analysis over real pre-sample files written in the stage's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from o1pruner.analysis import disharmony_table, quartile_groups, run_analyze
from o1pruner.errors import UserError
from o1pruner.sampling.presample import problem_stats

# problem -> (lengths, correct) of its samples, in sample order
PROBLEMS = {
    # K=8: the shortest two right, the rest alternates; Q1 2/2, Q2 1/2, Q3 1/2, Q4 0/2
    "a": ([80, 10, 70, 20, 60, 30, 50, 40], [0, 1, 0, 1, 1, 0, 0, 1]),
    # K=4, never right: oracle keeps its mean length (25)
    "b": ([10, 20, 30, 40], [0, 0, 0, 0]),
    # K=4, all right; the longest hit the token limit
    "c": ([5, 6, 7, 100], [1, 1, 1, 1]),
    # K=2: too few for the quartile table, still counted elsewhere
    "d": ([3, 9], [1, 0]),
}


def write_run(root: Path, problems=PROBLEMS, unfinished: tuple[str, ...] = ()) -> Path:
    out = root / "run" / "presample"
    out.mkdir(parents=True)
    samples, stats = [], []
    for pid, (lengths, correct) in problems.items():
        lines = [{"problem_id": pid, "sample_idx": i, "completion": "...", "num_tokens": n,
                  "finish_reason": "length" if n == 100 else "stop", "extracted": None,
                  "correct": bool(c)} for i, (n, c) in enumerate(zip(lengths, correct, strict=True))]
        samples += lines
        if pid not in unfinished:
            stats.append(problem_stats(pid, lines))
    (out / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (out / "problem_stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
    return root / "run"


@pytest.mark.parametrize("k", [4, 5, 6, 7, 8, 12, 16])
def test_quartile_groups_are_sorted_and_near_equal(k):
    samples = [{"sample_idx": i, "num_tokens": (7 * i) % k} for i in range(k)]
    groups = quartile_groups(samples)
    sizes = [len(g) for g in groups]
    assert sum(sizes) == k and max(sizes) - min(sizes) <= 1
    flat = [s["num_tokens"] for g in groups for s in g]
    assert flat == sorted(flat)


def test_table1_pools_quartile_accuracy_over_problems(tmp_path):
    table = disharmony_table(write_run(tmp_path))
    t = table["table1"]
    assert t["n_problems"] == 3  # d (K=2) is left out
    # Q1: a 2/2, b 0/1, c 1/1 = 3/4;  Q2: a 1/2, b 0, c 1 = 2/4;  Q3: a 1/2 (50 no, 60 yes),
    # b 0, c 1 = 2/4;  Q4: a 0/2 (70, 80), b 0, c 1 = 1/4
    assert t["accuracy"] == [0.75, 0.5, 0.5, 0.25]
    assert t["n_samples"] == [4, 4, 4, 4]
    assert t["mean_length"][0] == pytest.approx((10 + 20 + 10 + 5) / 4)
    assert table["rows"][0] == ["Q1 (shortest)", 75.0, 11.2, 4]


def test_oracle_truncation_and_totals(tmp_path):
    result = disharmony_table(write_run(tmp_path))
    # shortest correct: a 10, c 5, d 3; b unsolved keeps its mean 25
    assert result["oracle_mean_length"] == pytest.approx((10 + 25 + 5 + 3) / 4)
    assert result["oracle_accuracy"] == 0.75
    assert result["n_samples"] == 18 and result["n_problems"] == 4
    assert result["truncation_rate"] == pytest.approx(1 / 18)
    assert result["mean_length"] == pytest.approx(sum(sum(v[0]) for v in PROBLEMS.values()) / 18)
    assert result["problems_with_mixed_results"] == 2  # a and d


def test_unfinished_problems_are_left_out(tmp_path):
    result = disharmony_table(write_run(tmp_path, unfinished=("a",)))
    assert result["n_problems"] == 3 and result["table1"]["n_problems"] == 2


def test_run_analyze_writes_the_report(tmp_path):
    run = write_run(tmp_path)
    text = run_analyze(run)
    assert "| accuracy | 75.0% | 50.0% | 50.0% | 25.0% |" in text
    report = run / "report"
    assert json.loads((report / "disharmony.json").read_text())["table1"]["accuracy"] == [
        0.75, 0.5, 0.5, 0.25]
    assert "| accuracy | 75.0% |" in (report / "disharmony.md").read_text()
    for name in ("length_histogram.png", "accuracy_by_length_quartile.png",
                 "per_problem_accuracy_vs_length.png", "problem_length_vs_accuracy.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "metrics" and events[-1]["stage"] == "report"


def test_analyze_without_presamples_says_what_to_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="o1pruner presample"):
        run_analyze(tmp_path / "empty")
    with pytest.raises(UserError, match="not found"):
        run_analyze(tmp_path / "missing")
