"""Answer grading: extraction, math-verify equivalence, time limits and the JSONL file path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from o1pruner.cli import main as cli_main
from o1pruner.errors import DataError
from o1pruner.grading import (
    GradeResult,
    extract_answer,
    grade,
    grade_file,
    grade_many,
    is_correct,
)

POWER_TOWER = r"The answer is \boxed{9^{9^{9^{9}}}}"
DEEP_BRACES = r"\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}"


# ---------------------------------------------------------------------------- extraction
def test_last_boxed_answer_wins():
    assert extract_answer(r"First \boxed{2}, on reflection \boxed{3}.") == "3"


def test_boxed_answer_keeps_nested_braces():
    assert extract_answer(r"So $x = \boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"


def test_fbox_counts_as_boxed():
    assert extract_answer(r"\fbox{7}") == "7"


@pytest.mark.parametrize("mode", ["strict", "standard"])
def test_a_finished_generation_whose_last_box_is_unclosed_has_no_answer(mode: str):
    # the model moved on from \boxed{3}; its last answer was never finished
    text = r"So \boxed{3}. Hmm, no: recounting the pens, \boxed{4"
    assert extract_answer(text) is None
    assert grade(text, "3", mode) == GradeResult(None, False)
    # an empty box (an echoed instruction) is passed over, a later #### still counts
    assert extract_answer(r"\boxed{3}, as asked: put it in \boxed{}") == "3"
    assert extract_answer("\\boxed{4 was wrong\n#### 5") == "5"


def test_a_markdown_heading_after_hashes_is_not_an_answer():
    text = "#### Step 1: count\n3 + 2 = 5 pens.\n#### Step 2: add 5\n5 + 5 = 10"
    assert extract_answer(text) is None
    assert not is_correct(text, "Step 2: add 5")
    assert extract_answer(text + "\n#### 10") == "10"
    assert extract_answer("##### Step 3\nSo 10.") is None  # a deeper heading


def test_gsm8k_hashes_answer():
    assert extract_answer("She pays 1000 + 234 = 1234 dollars.\n#### 1,234") == "1,234"


@pytest.mark.parametrize("text", [
    "The final answer is $5$. I hope it is correct.",
    "9 * 2 = <<9*2=18>>18 dollars\nA: 18",
    " 42 ",
    "so the answer is 12.",
])
def test_strict_takes_nothing_but_boxes_and_hashes(text: str):
    assert extract_answer(text) is None


def test_no_answer_gives_none():
    assert extract_answer("Let me think about the eggs step by step, then the") is None


# ------------------------------------------------------------- truncated generations
MIDWAY = ("Let me compute: 7 + 5 = 12, so the answer is 12. But wait, let me recheck the "
          "second step, since 7 + 5")


@pytest.mark.parametrize("mode", ["strict", "standard"])
def test_a_truncated_chain_that_states_an_answer_midway_is_wrong(mode: str):
    for text in (MIDWAY, MIDWAY.replace("the answer is 12", "#### 12"),
                 r"so \boxed{12}. But wait, let me recheck: \boxed{1"):
        result = grade(text, "12", mode, truncated=True)
        assert result == GradeResult(None, False), (mode, text)


@pytest.mark.parametrize("mode", ["strict", "standard"])
def test_a_truncated_generation_with_its_last_box_closed_has_that_answer(mode: str):
    assert grade(r"The sum is \boxed{12}. Let me double-check: 7 + 5", "12", mode,
                 truncated=True) == GradeResult("12", True)


def test_the_same_midway_text_is_read_by_standard_when_the_generation_ended():
    assert grade(MIDWAY.replace("But wait", "Done") + ".", "12", "standard").correct
    assert not grade(MIDWAY, "12", "strict").correct


# ------------------------------------------------------------------ standard mode
@pytest.mark.parametrize(("completion", "gold"), [
    ("The final answer is $\\frac{1}{2}$.", "0.5"),
    ("Therefore $x \\geq 5$.", r"x \geq 5"),
    ("Thus, the answer is \\(\\dfrac{3}{4}\\).", r"\frac{3}{4}"),
    ("9 * 2 = <<9*2=18>>18 dollars\nA: 18", "18"),
    (r"First \boxed{2}, on reflection \boxed{3}.", "3"),
])
def test_standard_reads_unboxed_latex_and_plain_final_answers(completion: str, gold: str):
    assert grade(completion, gold, "standard").correct
    if "boxed" not in completion:
        assert not grade(completion, gold, "strict").correct


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="grading mode 'lenient'"):
        grade_many([r"\boxed{1}"], ["1"], mode="lenient")


@pytest.mark.timeout(60)  # a hang guard (a backtracking extractor never returns)
def test_ten_thousand_nested_braces_extract():
    extracted = extract_answer(DEEP_BRACES)
    assert extracted is not None and extracted.startswith("{{{")


# --------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        (r"\boxed{0.5}", r"\frac{1}{2}"),
        (r"\boxed{1,000}", "1000"),
        ("#### 1,234", "1234"),
        (r"\boxed{\$18}", "18"),
        (r"\boxed{18 \text{ dollars}}", "18"),
        (r"\boxed{(-\infty,2]}", r"$(-\infty, 2]$"),  # gaokao-style gold, $-wrapped
        (r"\boxed{(3, \frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)"),  # MATH-500
        (r"\boxed{\dfrac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
        (r"\boxed{3\sqrt{13}}", r"3\sqrt{13}"),
    ],
)
def test_equivalent_answers_are_correct(completion: str, gold: str):
    assert is_correct(completion, gold)
    assert is_correct(completion, gold, "standard")


@pytest.mark.parametrize(
    ("completion", "gold"),
    [(r"\boxed{3}", "4"), (r"\boxed{(-\infty,2)}", r"$(-\infty, 2]$"), ("#### 1,250", "125")],
)
def test_different_answers_are_wrong(completion: str, gold: str):
    assert not is_correct(completion, gold)
    assert not is_correct(completion, gold, "standard")


@pytest.mark.parametrize(("answer", "gold"), [("5 or more", "5"), ("2 pi", "2"),
                                            ("3 million", "3")])
def test_words_that_change_a_number_are_not_stripped_as_units(answer: str, gold: str):
    assert not is_correct(rf"\boxed{{{answer}}}", gold)
    assert not is_correct(rf"\boxed{{{answer}}}", gold, "standard")
    assert not is_correct(f"#### {answer}", gold)
    assert is_correct(r"\boxed{18 dollars}", "18")  # a unit still is one


@pytest.mark.parametrize("completion", [
    r"\cos(x)=\frac{42}{59}",
    r"Answer: so \cos(x) = \frac{42}{59}",
    "cos(x) = 42/59",
])
def test_an_equation_answer_is_compared_whole_not_by_its_right_hand_side(completion: str):
    """Standard mode: math-verify's extraction keeps only the value after the `=` of an
    undelimited equation, and compares a value with a gold equation's right-hand side."""
    gold = r"\sin(x)=\frac{42}{59}"
    result = grade(completion, gold, "standard")
    assert not result.correct and "cos(x) = " in result.extracted
    if "\\" in completion:  # the same equation is right
        assert grade(completion.replace(r"\cos", r"\sin"), gold, "standard").correct
    assert grade(r"\frac{42}{59}", gold, "standard").correct  # a bare value: its rhs


def test_grade_reports_the_extracted_answer():
    assert grade(r"so \boxed{\frac{1}{2}}", "0.5") == GradeResult(r"\frac{1}{2}", True)
    assert grade("no final answer in this long rambling text", "3") == GradeResult(None, False)


# ------------------------------------------------------------------------- time limits
@pytest.mark.timeout(120)  # a hang guard: without the per-item limit the tower never ends
def test_pathological_items_are_wrong_and_do_not_stall_the_batch():
    normal = [(rf"\boxed{{{i}}}", str(i)) for i in range(20)]
    items = normal[:10] + [(POWER_TOWER, "1"), (DEEP_BRACES, "1")] + normal[10:]
    results = grade_many([c for c, _ in items], [g for _, g in items], workers=2, timeout=2.0)
    assert [r.correct for r in results] == [True] * 10 + [False, False] + [True] * 10
    assert results[10].extracted == "9^{9^{9^{9}}}"  # extracted is kept for a timed-out item
    assert results[10].timed_out


@pytest.mark.timeout(120)  # a hang guard, as above
def test_small_batches_are_time_bounded_too():
    results = grade_many([POWER_TOWER, r"\boxed{2}"], ["1", "2"], timeout=1.0)
    assert [r.correct for r in results] == [False, True] and results[0].timed_out


def test_grade_many_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 completions but 1 gold"):
        grade_many(["1", "2"], ["1"])


# ------------------------------------------------------------------------------ files
def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_grade_file_round_trip(tmp_path: Path):
    rows = [
        {"id": "a", "pred": r"so \boxed{\frac{1}{2}}", "gold": "0.5"},
        {"id": "b", "pred": "#### 1,000", "gold": 1000},  # numeric gold is str()-ed
        {"id": "c", "pred": "I am not sure.", "gold": "3"},
        {"id": "d", "pred": MIDWAY, "gold": "12", "finish_reason": "length"},
    ]
    out = tmp_path / "out" / "graded.jsonl"
    summary = grade_file(_write_jsonl(tmp_path / "in.jsonl", rows), out)
    graded = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [g["id"] for g in graded] == ["a", "b", "c", "d"]
    assert [g["correct"] for g in graded] == [True, True, False, False]
    assert [g["extracted"] for g in graded] == [r"\frac{1}{2}", "1,000", None, None]
    assert graded[1]["gold"] == 1000  # input fields are kept as they were
    assert (summary.n, summary.n_correct, summary.n_no_answer) == (4, 2, 2)
    assert summary.describe().startswith("graded 4 items: 2 correct (50.0%)")
    assert not list(out.parent.glob(".graded.jsonl.*"))  # no temporary file left behind


def test_cli_grade_mode_standard(tmp_path: Path, capsys: pytest.CaptureFixture):
    src = _write_jsonl(tmp_path / "in.jsonl", [
        {"pred": "The final answer is $\\frac{1}{2}$.", "gold": "0.5"},
        {"pred": MIDWAY, "gold": "12", "truncated": True}])
    out = tmp_path / "out.jsonl"
    assert cli_main(["grade", "--input", str(src), "--output", str(out),
                     "--mode", "standard"]) == 0
    graded = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [g["correct"] for g in graded] == [True, False]
    assert "graded 2 items: 1 correct" in capsys.readouterr().out


def test_malformed_line_names_file_and_line(tmp_path: Path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"pred": "1", "gold": "1"}\n{"pred": "2", "gold": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"in\.jsonl:2: not valid JSON"):
        grade_file(src, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_missing_gold_names_the_line_and_field(tmp_path: Path):
    src = _write_jsonl(tmp_path / "in.jsonl", [{"pred": "1", "gold": "1"}, {"pred": "2"}])
    with pytest.raises(DataError, match=r"in\.jsonl:2: `gold` is missing"):
        grade_file(src, tmp_path / "out.jsonl")


def test_cli_grade_exits_2_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture):
    src = tmp_path / "in.jsonl"
    src.write_text("not json\n", encoding="utf-8")
    code = cli_main(["grade", "--input", str(src), "--output", str(tmp_path / "o.jsonl")])
    assert code == 2
    assert "in.jsonl:1" in capsys.readouterr().err


# -------------------------------------------------------------------------- real data
@pytest.mark.parametrize("mode", ["strict", "standard"])
def test_agrees_with_gsm8k_labels(data_dir: Path, mode: str):
    from benchmarks.grade_gsm8k import FINAL_A, as_hashes

    path = data_dir / "gsm8k" / "example_model_solutions.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found (set O1PRUNER_DATA_DIR)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:200]]
    golds = [FINAL_A.findall(r["ground_truth"])[-1] for r in rows]
    preds = [r["175b_verification"]["solution"] for r in rows]
    preds = [as_hashes(p) for p in preds] if mode == "strict" else preds
    labels = [r["175b_verification"]["is_correct"] for r in rows]
    results = grade_many(preds, golds, workers=2, mode=mode)
    agreement = sum(r.correct == lab for r, lab in zip(results, labels, strict=True)) / len(rows)
    assert agreement >= 0.98


def test_math500_reference_solutions_grade_correct(data_dir: Path):
    path = data_dir / "math500" / "test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found (set O1PRUNER_DATA_DIR)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:100]]
    for mode in ("strict", "standard"):
        results = grade_many([r["solution"] for r in rows], [r["answer"] for r in rows],
                             workers=2, mode=mode)
        assert sum(r.correct for r in results) >= 98, mode
