"""`o1pruner run`: every stage for real on a tiny model, artifacts present and consistent,
and a re-run that finds everything done."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from o1pruner.files import read_json, read_jsonl
from o1pruner.reward import length_harmonizing_reward

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, K, M, N_EVAL = 4, 4, 2, 4

pytestmark = pytest.mark.slow


def write_spec(tmp_path: Path, model_dir: Path) -> Path:
    spec = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": "arithmetic_train", "train_limit": N_TRAIN, "eval_limit": N_EVAL},
        "presample": {"k": K, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 12,
                      "engine": "hf", "batch_size": 4},
        "reward": {"lambda": 2.0, "samples_per_problem": M},
        "train": {"learning_rate": 1e-4, "batch_size": 2, "gradient_accumulation_steps": 1,
                  "max_length": 128, "gradient_checkpointing": False, "precision": "fp32"},
        "eval": {"benchmarks": ["arithmetic_test"], "max_new_tokens": 12, "engine": "hf"},
        "run": {"name": "e2e", "output_root": str(tmp_path / "runs")},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_cli(spec: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "o1pruner.cli", "run", str(spec)],
                          capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    # a model that stops with probability 0.2 per token: pre-samples of varied lengths, so
    # the rewards are not all 0 and training changes the model (the random tiny model
    # rarely stops within 12 tokens: all its samples have the same length)
    from tests.tiny_model import build_stopping_model

    tmp = tmp_path_factory.mktemp("pipeline")
    spec = write_spec(tmp, build_stopping_model(tmp / "model"))
    result = run_cli(spec, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return spec, tmp / "runs" / "e2e", result


def test_headline_names_tokens_accuracy_aes_and_report(finished_run):
    _, run, result = finished_run
    out = result.stdout
    assert "base: accuracy" in out and "trained: accuracy" in out and "AES" in out
    assert f"report: {run / 'report' / 'report.md'}" in out
    assert "wall time:" in out


def test_presample_has_k_unique_samples_per_problem_and_matching_stats(finished_run):
    _, run, _ = finished_run
    samples = read_jsonl(run / "presample" / "samples.jsonl")
    pairs = {(s["problem_id"], s["sample_idx"]) for s in samples}
    assert len(samples) == len(pairs) == N_TRAIN * K
    stats = {s["problem_id"]: s for s in read_jsonl(run / "presample" / "problem_stats.jsonl")}
    assert len(stats) == N_TRAIN
    for pid, stat in stats.items():
        mine = [s for s in samples if s["problem_id"] == pid]
        assert stat["mean_length"] == pytest.approx(sum(s["num_tokens"] for s in mine) / K)
        assert stat["mean_accuracy"] == pytest.approx(sum(s["correct"] for s in mine) / K)


def test_training_set_rewards_follow_the_formula(finished_run):
    _, run, _ = finished_run
    stats = {s["problem_id"]: s for s in read_jsonl(run / "presample" / "problem_stats.jsonl")}
    rows = read_jsonl(run / "train" / "dataset.jsonl")
    assert len(rows) == N_TRAIN * M
    for row in rows:
        st = stats[row["problem_id"]]
        expected, _, _ = length_harmonizing_reward(st["mean_length"], row["num_tokens"], 2.0,
                                                   float(row["correct"]), st["mean_accuracy"])
        assert row["reward"] == pytest.approx(expected)


def test_trained_model_loads_and_differs_from_the_base(finished_run):
    import torch
    from transformers import AutoModelForCausalLM

    spec, run, _ = finished_run
    tiny_model_dir = spec.parent / "model"
    summary = read_json(run / "train" / "summary.json")
    assert summary["steps"] >= 1
    trained = AutoModelForCausalLM.from_pretrained(run / "train" / "final")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    diffs = [not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters(), strict=True)]
    assert any(diffs)


def test_results_compare_trained_with_base_on_held_out_problems(finished_run):
    _, run, _ = finished_run
    results = read_json(run / "eval" / "results.json")
    assert set(results["methods"]) >= {"base", "trained"}
    for label in ("base", "trained"):
        metrics = results["metrics"][label]["arithmetic_test"]
        assert metrics["n"] == N_EVAL
        gens = read_jsonl(run / "eval" / label / "arithmetic_test" / "generations.jsonl")
        assert len(gens) == N_EVAL
        assert metrics["mean_tokens"] == pytest.approx(sum(g["num_tokens"] for g in gens) / N_EVAL)
    assert (run / "report" / "report.md").exists()
    assert list((run / "report").glob("*.png"))


def test_job_records_every_stage_done(finished_run):
    _, run, _ = finished_run
    job = read_json(run / "job.json")
    assert job["state"] == "done"
    assert {s: job["stages"][s]["state"] for s in ("presample", "train", "eval")} == \
        {"presample": "done", "train": "done", "eval": "done"}


def test_rerun_skips_finished_stages(finished_run):
    spec, run, _ = finished_run
    before = {p: p.stat().st_mtime_ns for p in (
        run / "presample" / "samples.jsonl", run / "train" / "final" / "config.json",
        run / "eval" / "trained" / "arithmetic_test" / "generations.jsonl")}
    result = run_cli(spec, spec.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert sum(1 for e in events if e["kind"] == "stage" and e.get("state") == "done") >= 8
