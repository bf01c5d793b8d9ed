"""The length-harmonizing reward and the choice of training samples."""

from __future__ import annotations

import json
import logging
import statistics

import pytest

from o1pruner.errors import DataError, UserError
from o1pruner.jobs import run_dir_for
from o1pruner.models import load_tokenizer
from o1pruner.reward import build_training_set, length_harmonizing_reward
from tests.presample_files import make_spec, write_presample


@pytest.fixture()
def presampled(tiny_model_dir, tmp_path):
    spec = make_spec(tiny_model_dir, tmp_path)
    root = run_dir_for(spec).root
    write_presample(root, load_tokenizer(spec.model, str(tiny_model_dir)))
    return spec, root / "presample"


def test_reward_is_length_ratio_plus_weighted_accuracy_gain():
    reward, length_term, accuracy_term = length_harmonizing_reward(200, 100, 2.0, 1, 0.75)
    assert length_term == pytest.approx(1.0)
    assert accuracy_term == pytest.approx(0.5)
    assert reward == pytest.approx(1.5)
    # a long wrong sample is penalised on both terms
    reward, length_term, accuracy_term = length_harmonizing_reward(100, 400, 5.0, 0, 0.5)
    assert (length_term, accuracy_term, reward) == pytest.approx((-0.75, -2.5, -3.25))


def test_lh_selection_is_seeded_and_keeps_m_per_problem(presampled):
    spec, presample = presampled
    rows = build_training_set(spec, presample)
    assert len(rows) == 6 * 2
    assert all(sum(r["problem_id"] == f"p{i}" for r in rows) == 2 for i in range(6))
    again = build_training_set(spec, presample)
    assert [(r["problem_id"], r["sample_idx"]) for r in rows] == \
        [(r["problem_id"], r["sample_idx"]) for r in again]
    other = build_training_set(spec.model_copy(update={"run": spec.run.model_copy(
        update={"seed": 7})}), presample)
    assert [r["sample_idx"] for r in rows] != [r["sample_idx"] for r in other]
    stats = {json.loads(x)["problem_id"]: json.loads(x)
             for x in (presample / "problem_stats.jsonl").read_text().splitlines()}
    for r in rows:
        s = stats[r["problem_id"]]
        expected = length_harmonizing_reward(s["mean_length"], r["num_tokens"], 2.0,
                                             float(r["correct"]), s["mean_accuracy"])
        assert (r["reward"], r["length_term"], r["accuracy_term"]) == pytest.approx(expected)
        assert isinstance(r["truncated"], bool)


def test_clip_then_normalize(presampled, tiny_model_dir, tmp_path):
    spec, presample = presampled
    spec = make_spec(tiny_model_dir, tmp_path, reward={"reward_clip": [-0.5, 0.5],
                                                       "reward_normalize": True})
    rows = build_training_set(spec, presample)
    clipped = [min(max(r["reward_raw"], -0.5), 0.5) for r in rows]
    mean, std = statistics.fmean(clipped), statistics.pstdev(clipped)
    assert [r["reward"] for r in rows] == pytest.approx([(c - mean) / std for c in clipped])
    assert statistics.fmean(r["reward"] for r in rows) == pytest.approx(0, abs=1e-9)


def test_equal_rewards_are_centred_when_std_is_zero(presampled, tiny_model_dir, tmp_path, caplog):
    spec, presample = presampled
    spec = make_spec(tiny_model_dir, tmp_path, reward={"reward_clip": [5.0, 6.0],
                                                       "reward_normalize": True})
    rows = build_training_set(spec, presample)
    assert all(r["reward"] == 0 for r in rows)
    assert "std 0" in caplog.text


def test_sft_takes_shortest_correct_and_dpo_pairs_with_longest(presampled, tiny_model_dir,
                                                               tmp_path):
    _, presample = presampled
    samples = [json.loads(x) for x in (presample / "samples.jsonl").read_text().splitlines()]
    sft = build_training_set(make_spec(tiny_model_dir, tmp_path, train={"method": "sft"}),
                             presample)
    for pid in {r["problem_id"] for r in sft}:
        correct = sorted((s for s in samples if s["problem_id"] == pid and s["correct"]),
                         key=lambda s: s["num_tokens"])
        assert [r["sample_idx"] for r in sft if r["problem_id"] == pid] == \
            [s["sample_idx"] for s in correct[:2]]
    dpo = build_training_set(make_spec(tiny_model_dir, tmp_path, train={"method": "dpo"}),
                             presample)
    for r in dpo:
        group = [s for s in samples if s["problem_id"] == r["problem_id"]]
        assert r["rejected"]["num_tokens"] == max(s["num_tokens"] for s in group)
        assert r["correct"] and r["num_tokens"] < r["rejected"]["num_tokens"]


def test_problems_without_enough_correct_samples_are_skipped(presampled, tiny_model_dir,
                                                             tmp_path, caplog):
    _, presample = presampled
    spec = make_spec(tiny_model_dir, tmp_path, train={"method": "sft"},
                     reward={"samples_per_problem": 3})
    caplog.set_level(logging.INFO, logger="o1pruner")
    rows = build_training_set(spec, presample)
    # problem i has 3 correct of 4 unless (i + j) % 3 == 0 hits two samples (i % 3 == 0)
    assert {r["problem_id"] for r in rows} == {"p1", "p2", "p4", "p5"}
    assert "2 of 6 problems skipped" in caplog.text


def _make_unsolved(presample, pids):
    """Mark every sample of these problems wrong (and their A_ref 0)."""
    for name, field, value in (("samples.jsonl", "correct", False),
                               ("problem_stats.jsonl", "mean_accuracy", 0.0)):
        rows = [json.loads(x) for x in (presample / name).read_text().splitlines()]
        for row in rows:
            if row["problem_id"] in pids:
                row[field] = value
        (presample / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_skip_unsolved_leaves_out_problems_without_a_correct_sample(presampled, tiny_model_dir,
                                                                    tmp_path, caplog):
    _, presample = presampled
    _make_unsolved(presample, {"p0", "p3"})
    every = build_training_set(make_spec(tiny_model_dir, tmp_path), presample)
    assert {r["problem_id"] for r in every} == {f"p{i}" for i in range(6)}
    # the paper's reward on an unsolved problem is the length term alone
    assert all(r["accuracy_term"] == 0 for r in every if r["problem_id"] in {"p0", "p3"})
    caplog.set_level(logging.INFO, logger="o1pruner")
    skipping = build_training_set(make_spec(tiny_model_dir, tmp_path,
                                            reward={"skip_unsolved": True}), presample)
    assert "2 of 6 problems left out" in caplog.text
    # the solved problems keep the same draws and rewards
    assert [(r["problem_id"], r["sample_idx"], r["reward"]) for r in skipping] == \
        [(r["problem_id"], r["sample_idx"], r["reward"]) for r in every
         if r["problem_id"] not in {"p0", "p3"}]
    _make_unsolved(presample, {f"p{i}" for i in range(6)})
    with pytest.raises(UserError, match="every problem is unsolved: set reward.skip_unsolved"):
        build_training_set(make_spec(tiny_model_dir, tmp_path,
                                     reward={"skip_unsolved": True}), presample)


def test_missing_presample_tells_user_to_run_presample(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="o1pruner presample"):
        build_training_set(make_spec(tiny_model_dir, tmp_path), tmp_path / "nowhere")


def test_bad_sample_row_names_file_and_line(presampled):
    spec, presample = presampled
    lines = (presample / "samples.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["num_tokens"] = "many"
    lines[2] = json.dumps(row)
    (presample / "samples.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"samples.jsonl, line 3: field 'num_tokens'"):
        build_training_set(spec, presample)


def test_all_zero_rewards_are_warned_about(presampled, caplog):
    """Samples of one length and grade per problem (all cut at the limit and wrong) give
    reward 0 everywhere: training could not change the model, and the user is told."""
    from o1pruner.files import atomic_write_text, read_jsonl

    spec, presample = presampled
    caplog.set_level(logging.WARNING, logger="o1pruner")
    build_training_set(spec, presample)
    assert "every training sample has reward 0" not in caplog.text
    samples = read_jsonl(presample / "samples.jsonl")
    stats = read_jsonl(presample / "problem_stats.jsonl")
    for s in samples:
        s.update(num_tokens=12, correct=False, finish_reason="length")
    for st in stats:
        st.update(mean_length=12.0, mean_accuracy=0.0, min_length=12, max_length=12)
    for name, rows in (("samples.jsonl", samples), ("problem_stats.jsonl", stats)):
        atomic_write_text(presample / name, "".join(json.dumps(r) + "\n" for r in rows))
    rows = build_training_set(spec, presample)
    assert {r["reward"] for r in rows} == {0.0}
    assert "every training sample has reward 0" in caplog.text
