"""The pre-sampling stage on a tiny real model: output files, statistics, resume after a
crash (a real `kill -9` of the CLI worker) and refusal to mix specs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from o1pruner.files import read_jsonl
from o1pruner.sampling import run_presample
from o1pruner.sampling.presample import problem_stats
from o1pruner.specio import load_spec, spec_from_dict
from tests import test_engines

REPO = Path(__file__).resolve().parents[1]
one_torch_thread = test_engines.one_torch_thread  # fixtures shared with the engine tests
stopping_model = test_engines.stopping_model


def make_spec(model, root: Path, n: int = 6, k: int = 4, train="arithmetic_train", **presample):
    return spec_from_dict({
        "model": {"name_or_path": model.name_or_path, "dtype": "float32"},
        "data": {"train": train, "train_limit": n},
        "presample": {"k": k, "engine": "hf", "max_new_tokens": 16, "temperature": 1.0,
                      "top_p": 1.0, "batch_size": 2, **presample},
        "reward": {"samples_per_problem": 2},
        "run": {"name": "ps", "output_root": str(root)},
    })


def assert_complete(out: Path, n: int, k: int) -> None:
    """Exactly n*k unique samples, one stats line per problem, consistent with them."""
    samples = read_jsonl(out / "samples.jsonl")
    stats = read_jsonl(out / "problem_stats.jsonl")
    pairs = Counter((s["problem_id"], s["sample_idx"]) for s in samples)
    assert len(samples) == len(pairs) == n * k
    assert sorted(idx for (_, idx) in pairs) == sorted(list(range(k)) * n)
    assert len(stats) == len({s["problem_id"] for s in stats}) == n
    by_problem: dict[str, list] = {}
    for s in samples:
        by_problem.setdefault(s["problem_id"], []).append(s)
    for line in stats:
        assert line == problem_stats(line["problem_id"], by_problem[line["problem_id"]])


def test_presample_writes_problems_samples_and_stats(stopping_model, tmp_path, caplog):
    from o1pruner.models import load_tokenizer
    from o1pruner.prompts import build_prompt, load_template

    caplog.set_level(logging.INFO, logger="o1pruner")
    spec = make_spec(stopping_model, tmp_path)
    run = run_presample(spec)
    out = run.root / "presample"
    problems = read_jsonl(out / "problems.jsonl")
    tok = load_tokenizer(spec.model)
    assert [p["prompt"] for p in problems] == [
        build_prompt(tok, load_template(spec.model), p["problem"]) for p in problems]
    assert all(p["prompt_tokens"] == len(tok(p["prompt"])["input_ids"]) for p in problems)
    assert all(p["prompt_token_ids"] == tok(p["prompt"])["input_ids"] for p in problems)
    assert_complete(out, 6, 4)
    sample = read_jsonl(out / "samples.jsonl")[0]
    assert set(sample) == {"problem_id", "sample_idx", "completion", "token_ids", "num_tokens",
                           "thinking_tokens", "answer_tokens", "finish_reason", "extracted",
                           "correct"}
    assert len(sample["token_ids"]) == sample["num_tokens"] == sample["answer_tokens"]
    stats = read_jsonl(out / "problem_stats.jsonl")
    assert set(stats[0]) == {"problem_id", "k", "mean_length", "mean_thinking_tokens",
                             "mean_answer_tokens", "mean_accuracy", "min_length",
                             "max_length", "truncated"}
    job = run.read_job()
    assert job["stage"] == "presample" and job["state"] == "done"
    events = run.events()
    metrics = [e for e in events if e["kind"] == "metrics"][-1]
    assert metrics["n_problems"] == 6 and metrics["n_samples"] == 24
    assert metrics["engine"] == "hf" and metrics["tokens_per_s"] > 0
    assert [e for e in events if e["kind"] == "progress"][-1]["done"] == 6
    assert (run.root / "logs" / "presample.log").read_text().count("presample done") == 1


def test_two_presample_seeds_share_no_problem_and_sample_seed(stopping_model, tmp_path,
                                                             requested_sample_seeds):
    run_presample(make_spec(stopping_model, tmp_path / "seed0", seed=0))
    first = dict(requested_sample_seeds)
    requested_sample_seeds.clear()
    run_presample(make_spec(stopping_model, tmp_path / "seed1", seed=1))
    assert len(first) == 6 and requested_sample_seeds.keys() == first.keys()
    for prompt, seeds in first.items():
        assert len(seeds) == 4 and not seeds & requested_sample_seeds[prompt]


def test_a_problems_samples_do_not_depend_on_its_place_in_the_list(stopping_model, tmp_path):
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)}
            for i in range(4)]

    def samples(order: list[dict], name: str) -> dict:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in order))
        train = {"name": str(path), "problem_field": "question", "answer_field": "answer",
                 "id_field": "id"}
        run = run_presample(make_spec(stopping_model, tmp_path / name, n=4, train=train))
        return {(s["problem_id"], s["sample_idx"]): s["token_ids"]
                for s in read_jsonl(run.root / "presample" / "samples.jsonl")}

    forward = samples(rows, "forward")
    assert len(forward) == 16 and samples(rows[::-1], "reversed") == forward


def test_truncated_completion_without_answer_is_wrong():
    samples = [{"num_tokens": 16, "correct": False, "finish_reason": "length"},
               {"num_tokens": 4, "correct": True, "finish_reason": "stop"}]
    assert problem_stats("p", samples) == {
        "problem_id": "p", "k": 2, "mean_length": 10.0, "mean_thinking_tokens": 0.0,
        "mean_answer_tokens": 10.0, "mean_accuracy": 0.5, "min_length": 4,
        "max_length": 16, "truncated": 1}


def test_rerun_of_a_finished_stage_is_skipped(stopping_model, tmp_path):
    spec = make_spec(stopping_model, tmp_path, n=2)
    run = run_presample(spec)
    before = (run.root / "presample" / "samples.jsonl").read_bytes()
    run_presample(spec)
    assert (run.root / "presample" / "samples.jsonl").read_bytes() == before
    assert [e for e in run.events() if e["kind"] == "skipped"][-1]["stage"] == "presample"


def test_resume_drops_samples_of_unfinished_problems(stopping_model, tmp_path):
    spec = make_spec(stopping_model, tmp_path, n=6)
    out = run_presample(spec).root / "presample"
    # simulate a crash: the last 2 problems lost their stats line, one sample is torn
    stats_path, samples_path = out / "problem_stats.jsonl", out / "samples.jsonl"
    lines = stats_path.read_text().splitlines(keepends=True)
    stats_path.write_text("".join(lines[:4]))
    with open(samples_path, "a") as fh:
        fh.write('{"problem_id": "torn", "sampl')
    kept = {s["problem_id"] for s in read_jsonl(stats_path)}
    old = [s for s in read_jsonl(samples_path) if s["problem_id"] in kept]
    run_presample(spec)
    assert_complete(out, 6, 4)
    assert [s for s in read_jsonl(samples_path) if s["problem_id"] in kept] == old


def _shared(out):
    source = json.loads((out / "source.json").read_text())
    return Path(source["shared"]) / "generations.jsonl"


def test_more_problems_in_the_same_run_sample_only_the_new_ones(stopping_model, tmp_path):
    out = run_presample(make_spec(stopping_model, tmp_path, n=2)).root / "presample"
    first = read_jsonl(_shared(out))
    run_presample(make_spec(stopping_model, tmp_path, n=3))
    assert_complete(out, 3, 4)
    entry = read_jsonl(_shared(out))
    assert entry[:len(first)] == first and len(entry) == 3 * 4  # 2 reused, 1 sampled


def test_another_k_uses_another_shared_entry_and_keeps_the_first(stopping_model, tmp_path):
    out = run_presample(make_spec(stopping_model, tmp_path, n=2, k=4)).root / "presample"
    entry4 = _shared(out)
    run_presample(make_spec(stopping_model, tmp_path, n=2, k=3))
    assert_complete(out, 2, 3)
    assert _shared(out) != entry4 and len(read_jsonl(entry4)) == 2 * 4


def test_runs_that_differ_in_reward_share_their_pre_samples_and_grade_on_their_own(
        stopping_model, tmp_path):
    a = run_presample(make_spec(stopping_model, tmp_path, n=3))
    other = make_spec(stopping_model, tmp_path, n=3).model_copy(deep=True)
    other.run.name, other.reward.lambda_ = "ps-lambda-5", 5.0
    other.presample.grading = "standard"
    b = run_presample(other)
    assert _shared(a.root / "presample") == _shared(b.root / "presample")
    assert not [e for e in b.events() if e["kind"] == "engine"]  # no model was started
    strip = ("extracted", "correct")
    samples_a = [{k: v for k, v in s.items() if k not in strip}
                 for s in read_jsonl(a.root / "presample" / "samples.jsonl")]
    samples_b = [{k: v for k, v in s.items() if k not in strip}
                 for s in read_jsonl(b.root / "presample" / "samples.jsonl")]
    assert samples_a == samples_b
    assert json.loads((b.root / "presample" / "source.json").read_text())["grading"] == \
        "standard"


@pytest.mark.slow
def test_kill_9_then_rerun_gives_every_sample_exactly_once(stopping_model, tmp_path):
    n, k = 24, 4
    spec = make_spec(stopping_model, tmp_path, n=n, k=k, batch_size=1, max_new_tokens=32)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))
    out = tmp_path / "ps" / "presample"
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "o1pruner.cli", "presample", str(spec_path)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(read_jsonl(out / "problem_stats.jsonl")) < 3:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
            assert time.time() < deadline, "the worker wrote no stats in 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    done_at_kill = len(read_jsonl(out / "problem_stats.jsonl"))
    assert 3 <= done_at_kill < n  # really killed mid-way
    assert (tmp_path / "ps" / "job.json").exists()
    run_presample(load_spec(spec_path))
    assert_complete(out, n, k)


def test_sigterm_stops_the_stage_and_records_it(stopping_model, tmp_path):
    spec = make_spec(stopping_model, tmp_path, n=24, k=4, batch_size=1, max_new_tokens=32)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))
    out = tmp_path / "ps" / "presample"
    proc = subprocess.Popen([sys.executable, "-m", "o1pruner.cli", "presample", str(spec_path)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    deadline = time.time() + 120
    while not read_jsonl(out / "problem_stats.jsonl"):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    job = json.loads((tmp_path / "ps" / "job.json").read_text())
    assert job["state"] == "stopped" and job["stages"]["presample"]["state"] == "stopped"
    run_presample(load_spec(spec_path))  # and a re-run completes what was left
    assert_complete(out, 24, 4)
