"""The split of a comparison by problem difficulty (o1pruner.evaluation.difficulty)."""

from __future__ import annotations

from o1pruner.evaluation.difficulty import QUARTILES, by_difficulty
from o1pruner.evaluation.report import _difficulty_section


def records(rows: list[tuple[str, bool, int]]) -> list[dict]:
    return [{"problem_id": pid, "sample_idx": 0, "correct": ok, "num_tokens": n}
            for pid, ok, n in rows]


def test_quartiles_order_problems_by_base_correctness_then_length():
    # 16 problems: the base solves p0-p7 (tokens 100..170) and fails p8-p15 (200..270).
    base = records([(f"p{i}", i < 8, 100 + 10 * i if i < 8 else 200 + 10 * (i - 8))
                    for i in range(16)])
    # The model halves the length of the easy ones, keeps them right; it breaks p6, p7
    # (Q2) and keeps the hard ones wrong at their length.
    model = records([(f"p{i}", i < 6, (100 + 10 * i) // 2 if i < 8 else 200 + 10 * (i - 8))
                     for i in range(16)])
    split = by_difficulty(base, model)
    rows = split["quartiles"]
    assert [r["quartile"] for r in rows] == list(QUARTILES)
    assert [r["problems"] for r in rows] == [4, 4, 4, 4]
    assert [r["base_accuracy"] for r in rows] == [100.0, 100.0, 0.0, 0.0]
    assert [r["accuracy"] for r in rows] == [100.0, 50.0, 0.0, 0.0]
    assert rows[0]["base_tokens"] == 115.0 and rows[0]["tokens"] == 57.5  # 50, 55, 60, 65
    assert rows[0]["length_pct"] < -40 and rows[3]["length_pct"] == 0.0
    assert rows[1]["accuracy_points"] == -50.0
    assert rows[3]["accuracy_points_ci"] == [0.0, 0.0]
    assert "one sample a problem" in split["basis"]


def test_accuracy_over_samples_is_the_difficulty_when_there_are_several():
    base, model = [], []
    for i in range(8):  # problem i: the base is right on i of its 8 samples
        for j in range(8):
            base.append({"problem_id": f"p{i}", "sample_idx": j, "correct": j < i,
                         "num_tokens": 100})
            model.append({"problem_id": f"p{i}", "sample_idx": j, "correct": j < i,
                          "num_tokens": 80})
    rows = by_difficulty(base, model)["quartiles"]
    # Easiest first: p7, p6 in Q1 (7/8, 6/8 right), p1, p0 in Q4.
    assert rows[0]["base_accuracy"] == 100 * (7 + 6) / 16
    assert rows[3]["base_accuracy"] == 100 * (1 + 0) / 16
    assert all(r["length_pct"] == -20.0 for r in rows)
    assert "8 samples a problem" in by_difficulty(base, model)["basis"]


def test_too_few_shared_problems_give_no_split_and_no_report_section():
    base = records([(f"p{i}", True, 100) for i in range(7)])
    assert by_difficulty(base, base) is None
    results = {"comparison": {"trained": {"b": {"d_len": 0.0}, "AVG": {}}}}
    assert _difficulty_section(results) == []


def test_report_section_names_each_quartile_with_its_intervals():
    base = records([(f"p{i}", i % 2 == 0, 100 + i) for i in range(12)])
    model = records([(f"p{i}", True, 50) for i in range(12)])
    results = {"comparison": {"trained": {"arith": {"difficulty": by_difficulty(base, model)},
                                          "AVG": {}}}}
    text = "\n".join(_difficulty_section(results))
    assert "## By difficulty" in text and "**trained on arith**" in text
    for name in QUARTILES:
        assert f"| {name} | 3 |" in text
    assert "0.0 -> 100.0" in text  # the hard quartiles: unsolved before, solved after
