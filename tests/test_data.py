"""Data layer: the registry's real files, custom files, row validation, the generator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from o1pruner.cli import main as cli_main
from o1pruner.data import (
    Problem,
    dataset_fingerprint,
    describe_datasets,
    load_problems,
    preview_dataset,
    registry,
    resolve_data_dir,
)
from o1pruner.data.answers import extract_gold, last_boxed
from o1pruner.data.arithmetic import Step, generate_arithmetic
from o1pruner.errors import DataError
from o1pruner.spec import ArithmeticOptions, DatasetRef

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = resolve_data_dir()
needs_data = pytest.mark.skipif(
    DATA_DIR is None or not (DATA_DIR / "gsm8k" / "test.jsonl").is_file(),
    reason="benchmark files not found: set $O1PRUNER_DATA_DIR or provide ../shared/data",
)

# name -> (rows in the source file per SOURCES.md, problems loaded). Loaded is lower where
# the source has rows without any answer (gaokao: lines/items 168 and 193; math_train_hard:
# items 224, 236, 276), which the registry marks skip_rows_without_gold.
BUILT_IN = {
    "gsm8k_train": (7473, 7473),
    "gsm8k_test": (1319, 1319),
    "math500": (500, 500),
    "aime24": (30, 30),
    "amc23": (40, 40),
    "gaokao2023en": (385, 383),
    "paper_math_test": (458, 458),
    "paper_gsm8k": (1319, 1319),
    "paper_gaokao": (385, 383),
    "paper_math_train_hard": (411, 408),
    "arithmetic_train": (1000, 1000),
    "arithmetic_test": (500, 500),
    "arithmetic_val": (200, 200),
    "arithmetic": (500, 500),
}


# ---------------------------------------------------------------- registry, real files
def test_registry_lists_every_built_in_entry():
    assert set(registry()) == set(BUILT_IN)


@needs_data
@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_in_entry_loads_with_expected_rows(name):
    problems = load_problems(name)
    assert len(problems) == BUILT_IN[name][1]
    assert all(p.gold.strip() and p.problem.strip() for p in problems)
    assert len({p.id for p in problems}) == len(problems)


@needs_data
def test_listing_shows_source_row_counts():
    table = describe_datasets()
    for name, (rows, _) in BUILT_IN.items():
        line = next(line for line in table.splitlines() if line.startswith(name + " "))
        assert line.split()[1] == str(rows), line


@needs_data
def test_gsm8k_gold_is_text_after_last_hashes_without_commas():
    problems = load_problems("gsm8k_test")
    assert problems[0].gold == "18"
    assert problems[0].problem.startswith("Janet")
    assert problems[2].gold == "70000"  # source: "#### 70,000"-style thousands separator


@needs_data
def test_amc23_float_answer_becomes_int_string():
    problems = load_problems("amc23")
    assert problems[0].gold == "27"
    assert all("." not in p.gold for p in problems)


@needs_data
def test_gaokao_dollar_wrapped_answer_is_unwrapped():
    problems = load_problems("gaokao2023en")
    assert problems[0].gold == r"\{x|-2\leq x < 1\}"
    assert problems[1].gold == r"-1-\sqrt{3}"


@needs_data
def test_math500_gold_and_id():
    first = load_problems("math500")[0]
    assert first.gold == r"\left( 3, \frac{\pi}{2} \right)"
    assert first.id == "test/precalculus/807.json"


@needs_data
def test_registry_entry_field_mapping_can_be_overridden_by_the_ref():
    ref = DatasetRef(name="math500", answer_field="solution", answer_format="boxed")
    assert load_problems(ref, limit=1)[0].gold == r"\left( 3, \frac{\pi}{2} \right)"


def test_missing_local_dir_file_falls_back_to_hub_and_reports_it_unreachable(tmp_path):
    code = ("from o1pruner.data import load_problems\n"
            f"load_problems('gsm8k_test', local_dir={str(tmp_path)!r})\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)
    assert done.returncode != 0
    assert "DataError" in done.stderr and "openai/gsm8k" in done.stderr
    assert "local" in done.stderr.split("DataError", 1)[1]


# ---------------------------------------------------------------------- custom files
ROWS = [{"q": "What is 1+1?", "a": "2", "key": "x1"},
        {"q": "What is 2+3?", "a": 5, "key": "x2"},
        {"q": "What is 10/4?", "a": 2.5, "key": "x3"}]


def _write_jsonl(path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(r) for r in rows]
    for number, text in (raw_lines or {}).items():
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ref(path: Path, **kw) -> DatasetRef:
    return DatasetRef(name=str(path), problem_field="q", answer_field="a", **kw)


def test_custom_jsonl_with_field_mapping(tmp_path):
    problems = load_problems(_ref(_write_jsonl(tmp_path / "mine.jsonl", ROWS), id_field="key"))
    assert problems == [Problem("x1", "What is 1+1?", "2"), Problem("x2", "What is 2+3?", "5"),
                        Problem("x3", "What is 10/4?", "2.5")]


def test_custom_json_list_defaults_ids_to_item_numbers(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    problems = load_problems(_ref(path))
    assert [p.id for p in problems] == ["1", "2", "3"]
    assert problems[1].gold == "5"


def test_custom_parquet_with_boxed_answers(tmp_path):
    import datasets

    path = tmp_path / "mine.parquet"
    datasets.Dataset.from_list([
        {"question": "Q1", "solution": r"So \boxed{\frac{1}{2}} and then \boxed{\{3\}}."},
        {"question": "Q2", "solution": r"Thus $\boxed{x^{2}}$"},
    ]).to_parquet(str(path))
    ref = DatasetRef(name=str(path), problem_field="question", answer_field="solution",
                     answer_format="boxed")
    assert [p.gold for p in load_problems(ref)] == [r"\{3\}", "x^{2}"]


def test_custom_file_without_mapping_lists_the_row_fields(tmp_path):
    path = _write_jsonl(tmp_path / "mine.jsonl", ROWS)
    with pytest.raises(DataError, match=r"problem_field and answer_field.*line 1.*q, a, key"):
        load_problems(str(path))


@pytest.mark.parametrize(("raw", "expected"), [
    ('{"q": "What is 3+3?", "a": "6"', r"mine\.jsonl line 2: invalid JSON"),
    ('["What is 3+3?", "6"]', r"mine\.jsonl line 2: expected a JSON object, got list"),
    ('{"q": "What is 3+3?", "a": "  "}', r"mine\.jsonl line 2: empty gold answer in field 'a'"),
    ('{"q": "", "a": "6"}', r"mine\.jsonl line 2: empty problem"),
    ('{"question": "What is 3+3?", "a": "6"}',
     r"mine\.jsonl line 2: no field 'q' \(the problem field\); the row has: question, a"),
    ('{"q": "What is 3+3?"}', r"mine\.jsonl line 2: no field 'a' \(the answer field\)"),
])
def test_bad_row_names_file_and_line(tmp_path, raw, expected):
    path = _write_jsonl(tmp_path / "mine.jsonl", ROWS, {2: raw})
    with pytest.raises(DataError, match=expected):
        load_problems(_ref(path))


def test_duplicate_id_names_both_lines(tmp_path):
    rows = [*ROWS, {"q": "What is 7-2?", "a": "5", "key": "x2"}]
    path = _write_jsonl(tmp_path / "mine.jsonl", rows)
    with pytest.raises(DataError, match=r"mine\.jsonl line 4: duplicate id 'x2' \(first seen "
                                        r"at line 2\)"):
        load_problems(_ref(path, id_field="key"))


def test_json_list_errors_name_the_item(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([ROWS[0], {"q": "Q", "a": None}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"mine\.json item 2: empty gold"):
        load_problems(_ref(path))


def test_gsm8k_format_without_marker_is_an_error(tmp_path):
    path = _write_jsonl(tmp_path / "mine.jsonl", [{"q": "Q", "a": "no marker here"}])
    with pytest.raises(DataError, match=r"mine\.jsonl line 1: .*'####'"):
        load_problems(_ref(path, answer_format="gsm8k"))


def test_unknown_name_lists_the_registry():
    with pytest.raises(DataError, match=r"no_such_set: unknown data set.*gsm8k_test.*arithmetic"):
        load_problems("no_such_set")


def test_missing_custom_file_is_named():
    with pytest.raises(DataError, match=r"nowhere/mine\.jsonl: file not found"):
        load_problems("nowhere/mine.jsonl")


# --------------------------------------------------------------------- limit, shuffle
def test_limit_and_shuffle_are_deterministic(tmp_path):
    rows = [{"q": f"Problem {i}", "a": str(i)} for i in range(50)]
    ref = _ref(_write_jsonl(tmp_path / "many.jsonl", rows))
    first = load_problems(ref, limit=10, shuffle_seed=7)
    assert first == load_problems(ref, limit=10, shuffle_seed=7)
    assert len(first) == 10 and first != load_problems(ref, limit=10)
    assert first != load_problems(ref, limit=10, shuffle_seed=8)
    # shuffle first, then limit: the limited list is a prefix of the full shuffled one
    assert load_problems(ref, shuffle_seed=7)[:10] == first
    assert [p.id for p in load_problems(ref, limit=3)] == ["1", "2", "3"]


def test_generator_limit_without_shuffle_is_a_prefix():
    assert load_problems("arithmetic_test", limit=20) == load_problems("arithmetic_test")[:20]


# ------------------------------------------------------------------------ fingerprint
def test_fingerprint_follows_content_and_mapping(tmp_path):
    path = _write_jsonl(tmp_path / "mine.jsonl", ROWS)
    before = dataset_fingerprint(_ref(path))
    assert before == dataset_fingerprint(_ref(path)) and len(before) == 16
    assert before != dataset_fingerprint(_ref(path, id_field="key"))
    _write_jsonl(path, ROWS[:2])
    assert dataset_fingerprint(_ref(path)) != before


def test_fingerprint_of_generator_follows_options():
    base = dataset_fingerprint("arithmetic_train")
    assert base == dataset_fingerprint("arithmetic_train")
    changed = DatasetRef(name="arithmetic_train", arithmetic=ArithmeticOptions(seed=1, n=7))
    assert dataset_fingerprint(changed) != base


# -------------------------------------------------------------------------- generator
def _recompute(start: int, steps: tuple[Step, ...]) -> int:
    """An independent evaluator over the generator's structured steps."""
    ops = {"add": lambda v, a: v + a[0], "sub": lambda v, a: v - a[0],
           "mul": lambda v, a: v * a[0], "div": lambda v, a: v // a[0],
           "add_groups": lambda v, a: v + a[0] * a[1],
           "sub_groups": lambda v, a: v - a[0] * a[1]}
    value = start
    for step in steps:
        assert step.op != "div" or value % step.operands[0] == 0, "inexact division"
        value = ops[step.op](value, step.operands)
        assert value >= 0, "negative running count"
    return value


def test_generator_is_deterministic_and_unique():
    options = ArithmeticOptions(n=300, seed=5, min_steps=1, max_steps=4)
    first = generate_arithmetic(options)
    assert first == generate_arithmetic(options)
    assert len({p.text for p in first}) == 300
    assert [p.id for p in first[:2]] == ["arith-s5-0", "arith-s5-1"]
    assert first != generate_arithmetic(options.model_copy(update={"seed": 6}))


@pytest.mark.parametrize(("min_steps", "max_steps", "max_operand"),
                         [(1, 1, 2), (2, 3, 20), (4, 6, 1000)])
def test_generator_respects_step_and_operand_knobs(min_steps, max_steps, max_operand):
    options = ArithmeticOptions(n=200, seed=3, min_steps=min_steps, max_steps=max_steps,
                                max_operand=max_operand)
    for problem in generate_arithmetic(options):
        assert min_steps <= len(problem.steps) <= max_steps
        assert 1 <= problem.start <= max_operand
        assert all(1 <= x <= max_operand for s in problem.steps for x in s.operands)
        assert problem.answer == _recompute(problem.start, problem.steps) >= 0
        assert problem.text.startswith(problem.text.split(" has ")[0] + f" has {problem.start} ")
        assert problem.text.endswith("have now?")


def test_generated_problems_load_with_integer_golds():
    problems = load_problems(DatasetRef(name="arithmetic", arithmetic=ArithmeticOptions(n=50)))
    assert len(problems) == 50 and all(p.gold.isdigit() for p in problems)


def test_ref_options_override_entry_defaults_field_by_field():
    ref = DatasetRef(name="arithmetic_train", arithmetic=ArithmeticOptions(max_steps=3))
    problems = load_problems(ref)
    assert len(problems) == 1000  # n and seed still come from the entry
    assert problems[0].id.startswith("arith-s1-")


def test_arithmetic_train_and_test_share_no_problem_text():
    train = {p.problem for p in load_problems("arithmetic_train")}
    test = {p.problem for p in load_problems("arithmetic_test")}
    assert len(train) == 1000 and len(test) == 500 and not train & test
    # also when both are made larger and given the same seed
    big_train = DatasetRef(name="arithmetic_train",
                           arithmetic=ArithmeticOptions(n=3000, seed=9, max_steps=1))
    big_test = DatasetRef(name="arithmetic_test",
                          arithmetic=ArithmeticOptions(n=3000, seed=9, max_steps=1))
    assert not {p.problem for p in load_problems(big_train)} & {
        p.problem for p in load_problems(big_test)}


def test_validation_problems_are_in_neither_the_training_nor_the_test_set():
    # recipes are chosen on arithmetic_val, never on the held-out arithmetic_test
    val = {p.problem for p in load_problems("arithmetic_val")}
    train = {p.problem for p in load_problems("arithmetic_train")}
    test = {p.problem for p in load_problems("arithmetic_test")}
    assert len(val) == 200 and not val & train and not val & test


def test_generator_reports_too_small_a_problem_space():
    with pytest.raises(DataError, match="distinct problems"):
        generate_arithmetic(ArithmeticOptions(n=100_000, max_steps=1, max_operand=2))


def test_last_boxed_matches_braces():
    assert last_boxed(r"a \boxed{1} b \boxed{\frac{a}{b}}") == r"\frac{a}{b}"
    assert last_boxed("no box") is None
    assert extract_gold("Work\n#### 1,234", "gsm8k") == "1234"
    assert extract_gold("$5", "plain") == "$5"  # a lone currency sign is not a delimiter


# ------------------------------------------------------------------------------- CLI
def test_cli_lists_datasets():
    done = subprocess.run([sys.executable, "-m", "o1pruner.cli", "datasets"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("gsm8k_test", "math500", "paper_gaokao", "arithmetic_train"):
        assert name in done.stdout


def test_cli_preview_of_generated_set(capsys):
    assert cli_main(["datasets", "arithmetic_test", "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "arithmetic_test: 500 problems" in out and "[arith-s2-1]" in out


def test_cli_bad_custom_file_exits_2_naming_the_line(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "broken.jsonl", ROWS, {3: "{not json"})
    assert cli_main(["datasets", str(path)]) == 2
    assert "broken.jsonl line 3: invalid JSON" in capsys.readouterr().err


def test_preview_of_unmapped_file_shows_its_fields(tmp_path):
    text = preview_dataset(str(_write_jsonl(tmp_path / "mine.jsonl", ROWS)), rows=1)
    assert "3 rows" in text and "  q: What is 1+1?" in text and "  key: x1" in text
