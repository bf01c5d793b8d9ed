"""The explorers' data (o1pruner.explore): pre-samples with rewards and the training
selection as training computes them, and evaluation answers side by side, on real files:
pre-samples written as the stage writes them and an evaluation run on scripted tiny
models whose answers are known (so regressions and gains are too)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from o1pruner import explore
from o1pruner.files import read_jsonl
from o1pruner.reward import build_training_set, length_harmonizing_reward
from o1pruner.specio import spec_from_dict
from tests.presample_files import write_presample
from tests.test_playground import build_scripted_model

BASE_TEXT = "Let me think: 12 + 7 = 19, minus 5 gives 14. Final answer \\boxed{14}"
TRAINED_TEXT = "The answer is \\boxed{7}"
GOLDS = {"q1": "14", "q2": "7", "q3": "9", "q4": "14", "q5": "7"}
# base answers 14, trained 7: q1/q4 regressions, q2/q5 gains, q3 wrong for both


@contextmanager
def working_dir(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def prepare_run(workspace: Path, name: str = "studio") -> Path:
    """A run as the stages leave it, with workspace-relative paths in its spec: pre-samples
    (6 problems x 4), a trained model in train/final, and `o1pruner eval` results for the
    base and trained models on a 5-problem benchmark file. Returns the run directory."""
    from transformers import AutoTokenizer

    from o1pruner.evaluation import run_eval

    run = workspace / "runs" / name
    build_scripted_model(workspace / "models" / "base", BASE_TEXT)
    build_scripted_model(run / "train" / "final", TRAINED_TEXT)
    (workspace / "bench.jsonl").write_text("".join(
        json.dumps({"id": pid, "question": f"Problem {pid}: how many apples are left?",
                    "answer": gold}) + "\n" for pid, gold in GOLDS.items()))
    spec = spec_from_dict({
        "model": {"name_or_path": "models/base", "prompt_template": "generic",
                  "dtype": "float32"},
        "data": {"train": "arithmetic_train", "train_limit": 6},
        "presample": {"k": 4},
        "reward": {"samples_per_problem": 2, "lambda": 2.0},
        "eval": {"benchmarks": [{"name": "bench.jsonl", "problem_field": "question",
                                 "answer_field": "answer", "id_field": "id"}],
                 "max_new_tokens": 40, "engine": "hf", "batch_size": 8},
        "run": {"name": name, "output_root": "runs"},
    })
    write_presample(run, AutoTokenizer.from_pretrained(workspace / "models" / "base"))
    with working_dir(workspace):  # the worker's folder: the workspace
        run_eval(spec)
    return run


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("workspace")
    prepare_run(ws)
    return ws


@pytest.fixture(scope="module")
def run(workspace: Path) -> Path:
    return workspace / "runs" / "studio"


@pytest.fixture(scope="module")
def spec(workspace: Path, run: Path):
    from o1pruner.specio import load_spec

    return explore.localize_spec(load_spec(run / "spec.yaml"), workspace)


# ---------------------------------------------------------------------------- paths
def test_relative_paths_of_a_spec_are_read_from_the_workspace(spec, workspace: Path) -> None:
    assert spec.model.name_or_path == str(workspace / "models" / "base")
    assert spec.eval.benchmarks[0].name == str(workspace / "bench.jsonl")
    assert spec.eval.benchmarks[0].problem_field == "question"
    assert spec.data.train.name == "arithmetic_train"  # a registry name stays
    assert spec.model.prompt_template == "generic"


def test_an_auto_template_is_the_one_the_worker_picks() -> None:
    data = {"model": {"name_or_path": "models/DeepSeek-R1-Distill-Qwen-7B"}}
    localized = explore.localize_spec(spec_from_dict(data), Path("/somewhere/qwen-tests"))
    assert localized.model.prompt_template == "deepseek-r1"


# ---------------------------------------------------------------------- pre-samples
def test_samples_are_shown_shortest_first_with_the_rewards_training_computes(spec, run: Path
                                                                              ) -> None:
    view = explore.load_presample_view(spec, run)
    stats = {r["problem_id"]: r for r in read_jsonl(run / "presample" / "problem_stats.jsonl")}
    samples = {(r["problem_id"], r["sample_idx"]): r
               for r in read_jsonl(run / "presample" / "samples.jsonl")}
    assert [p.problem_id for p in view.problems] == [f"p{i}" for i in range(6)]
    for p in view.problems:
        lengths = [s.num_tokens for s in p.samples]
        assert lengths == sorted(lengths) and len(lengths) == 4
        assert p.accuracy == stats[p.problem_id]["mean_accuracy"]
        for s in p.samples:
            raw = samples[(p.problem_id, s.sample_idx)]
            expected = length_harmonizing_reward(stats[p.problem_id]["mean_length"],
                                                 raw["num_tokens"], 2.0, float(raw["correct"]),
                                                 stats[p.problem_id]["mean_accuracy"])
            assert (s.reward_raw, s.length_term, s.accuracy_term) == pytest.approx(expected)
            assert s.correct == raw["correct"] and s.completion == raw["completion"]


def test_the_chosen_samples_are_those_training_selects(spec, run: Path) -> None:
    view = explore.load_presample_view(spec, run)
    rows = build_training_set(spec, run / "presample")
    chosen = {(p.problem_id, s.sample_idx): s.reward for p in view.problems
              for s in p.samples if s.training == "chosen"}
    assert chosen == {(r["problem_id"], r["sample_idx"]): r["reward"] for r in rows}
    assert all(p.n_chosen == 2 for p in view.problems)
    assert "computed by the training code" in view.notes[0]
    assert "uses 12 samples" in view.summary()


def test_sft_chooses_the_shortest_correct_samples(spec, run: Path) -> None:
    sft = spec.model_copy(update={"train": spec.train.model_copy(update={"method": "sft"})})
    for p in explore.load_presample_view(sft, run).problems:
        correct = [s for s in p.samples if s.correct]
        assert [s.sample_idx for s in p.samples if s.training == "chosen"] == \
            ([s.sample_idx for s in correct[:2]] if len(correct) >= 2 else [])


def test_dpo_marks_the_rejected_sample(spec, run: Path) -> None:
    dpo = spec.model_copy(update={"train": spec.train.model_copy(update={"method": "dpo"})})
    view = explore.load_presample_view(dpo, run)
    for p in view.problems:
        rejected = [s for s in p.samples if s.training == "rejected"]
        if p.n_chosen:
            assert rejected == [p.samples[-1]]  # the longest


def test_the_training_record_is_compared_with_the_selection(spec, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.model.name_or_path)
    write_presample(tmp_path, tok)
    train = tmp_path / "train"
    train.mkdir()
    rows = build_training_set(spec, tmp_path / "presample")
    (train / "dataset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "matches train/dataset.jsonl" in explore.load_presample_view(spec, tmp_path).notes[1]
    (train / "dataset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    note = explore.load_presample_view(spec, tmp_path).notes[1]
    assert note.startswith("differs from train/dataset.jsonl (1 samples)")


def test_without_thinking_counts_a_thinking_reward_shows_why_nothing_is_selected(
        spec, run: Path) -> None:
    thinking = spec.model_copy(update={"reward": spec.reward.model_copy(
        update={"length": "thinking"})})
    view = explore.load_presample_view(thinking, run)
    assert view.notes[0].startswith("no training selection: reward.length: thinking")
    assert all(s.reward_raw is None and s.training == "" for p in view.problems
               for s in p.samples)


def test_problems_are_filtered_by_accuracy_and_length_spread(spec, run: Path) -> None:
    problems = explore.load_presample_view(spec, run).problems
    accuracies = sorted({p.accuracy for p in problems})
    assert accuracies == [0.5, 0.75]  # every third sample is wrong
    assert {p.problem_id for p in explore.filter_problems(problems, 0.6, 1.0)} == \
        {p.problem_id for p in problems if p.accuracy == 0.75}
    assert explore.filter_problems(problems, 0.0, 0.4) == []
    spread = max(p.spread for p in problems)
    assert spread > 2
    assert explore.filter_problems(problems, min_spread=spread + 0.1) == []
    assert len(explore.filter_problems(problems, min_spread=1.0)) == 6
    row = explore.problem_rows(problems)[0]
    assert row["problem"] == "p0" and row["trained on"] == 2 and row["longest"] > row["shortest"]
    assert [r["tokens"] for r in explore.sample_rows(problems[0])] == \
        sorted(r["tokens"] for r in explore.sample_rows(problems[0]))


# ------------------------------------------------------------------------ evaluation
def test_evaluated_methods_are_listed_per_benchmark(run: Path) -> None:
    assert explore.eval_methods(run) == {"bench": ["base", "trained"]}


def test_answers_side_by_side_with_regressions_gains_and_length_cuts(spec, run: Path) -> None:
    problems = explore.benchmark_problems(spec, run, "bench")
    assert problems["q1"] == "Problem q1: how many apples are left?"
    pairs = explore.load_pairs(run, "bench", "base", "trained", problems)
    assert [p.problem_id for p in pairs] == list(GOLDS)
    assert {p.problem_id: p.outcome for p in pairs} == {
        "q1": "regression", "q2": "gain", "q3": "same", "q4": "regression", "q5": "gain"}
    assert explore.filter_counts(pairs) == {"all": 5, "regressions": 2, "gains": 2,
                                            "length cuts": 5}
    base = {r["problem_id"]: r for r in read_jsonl(run / "eval/base/bench/generations.jsonl")}
    trained = {r["problem_id"]: r
               for r in read_jsonl(run / "eval/trained/bench/generations.jsonl")}
    q1 = pairs[0]
    assert q1.left.texts == [BASE_TEXT] and q1.right.texts == [TRAINED_TEXT]
    assert q1.left.tokens == base["q1"]["num_tokens"] and q1.right.extracted == "7"
    assert q1.cut == base["q1"]["num_tokens"] - trained["q1"]["num_tokens"] > 0
    assert q1.problem == problems["q1"] and q1.gold == "14"
    row = explore.pair_rows([q1])[0]
    assert (row["base"], row["trained"], row["outcome"]) == ("right", "wrong", "regression")


def test_length_cuts_come_largest_first_and_only_when_shorter() -> None:
    def answer(tokens: float, accuracy: float = 1.0) -> explore.Answer:
        return explore.Answer(accuracy, tokens, None, None, "1", "stop", ["x"])

    pairs = [explore.AnswerPair("a", "", "1", answer(100), answer(90)),
             explore.AnswerPair("b", "", "1", answer(100), answer(40)),
             explore.AnswerPair("c", "", "1", answer(100), answer(120)),
             explore.AnswerPair("d", "", "1", answer(100), None)]
    assert [p.problem_id for p in explore.filter_pairs(pairs, "length cuts")] == ["b", "a"]
    assert pairs[3].outcome == "missing" and explore.filter_counts(pairs)["regressions"] == 0


def test_several_samples_per_problem_compare_their_accuracy(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    for method, grades in (("base", [True, True, False]), ("trained", [True, False, False])):
        (folder / method / "b").mkdir(parents=True)
        (folder / method / "b" / "generations.jsonl").write_text("".join(json.dumps({
            "problem_id": "1", "sample_idx": i, "prompt": "p", "completion": f"s{i}",
            "num_tokens": 10 + i, "finish_reason": "stop", "extracted": "1", "correct": ok,
            "gold": "1"}) + "\n" for i, ok in enumerate(grades)))
    (pair,) = explore.load_pairs(tmp_path, "b")
    assert pair.left.accuracy == pytest.approx(2 / 3) and pair.left.tokens == 11
    assert pair.outcome == "regression" and pair.left.texts == ["s0", "s1", "s2"]
    assert explore.pair_rows([pair])[0]["base"] == "67 %"


def test_an_adhoc_evaluation_is_explored_like_a_run(spec, run: Path, workspace: Path) -> None:
    from o1pruner.evaluation import run_eval
    from o1pruner.jobs import RunDir

    with working_dir(workspace):
        results = run_eval(spec, model=str(workspace / "models" / "base"))
    job = workspace / results["eval_dir"]  # relative to the worker's folder
    assert RunDir(job).is_adhoc
    pairs = explore.load_pairs(job, "bench", "base", "trained")
    assert explore.filter_counts(pairs)["regressions"] == 0  # the same model twice
    assert all(p.cut == 0 for p in pairs)


def test_a_missing_method_is_an_error_that_names_the_file(run: Path) -> None:
    from o1pruner.errors import UserError

    with pytest.raises(UserError, match="fast_solving/bench/generations.jsonl"):
        explore.load_pairs(run, "bench", "base", "fast_solving")
