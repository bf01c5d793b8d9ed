"""Data-parallel pre-sampling and evaluation: N replicas (local processes or Ray actors)
give the same files as one engine, and a replica killed with `kill -9` loses and
duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from o1pruner.files import read_jsonl
from o1pruner.sampling import run_presample
from o1pruner.specio import load_spec
from tests import test_engines
from tests.test_presample import assert_complete, make_spec

REPO = Path(__file__).resolve().parents[1]
one_torch_thread = test_engines.one_torch_thread
stopping_model = test_engines.stopping_model

N, K = 16, 4


def presample_files(run_root: Path) -> tuple[str, str]:
    out = run_root / "presample"
    return (out / "samples.jsonl").read_text(), (out / "problem_stats.jsonl").read_text()


@pytest.fixture(scope="module")
def one_replica(stopping_model, tmp_path_factory) -> tuple[str, str]:
    """The pre-samples of the reference: one engine, in-process."""
    root = tmp_path_factory.mktemp("dp1")
    run = run_presample(make_spec(stopping_model, root, n=N, k=K, max_new_tokens=24))
    assert_complete(run.root / "presample", N, K)
    return presample_files(run.root)


def events(run_root: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(run_root / "events.jsonl") if e.get("kind") == kind]


@pytest.mark.slow
def test_two_local_replicas_give_the_same_samples_as_one(stopping_model, one_replica,
                                                         tmp_path):
    spec = make_spec(stopping_model, tmp_path, n=N, k=K, max_new_tokens=24,
                     data_parallel_size=2)
    run = run_presample(spec)
    assert presample_files(run.root) == one_replica
    replicas = events(run.root, "replica")
    assert sorted(e["replica"] for e in replicas) == [0, 1]
    assert len({e["pid"] for e in replicas}) == 2 and os.getpid() not in \
        {e["pid"] for e in replicas}
    assert [e["cpus"] for e in sorted(replicas, key=lambda e: e["replica"])] in (
        [[c] for c in sorted(os.sched_getaffinity(0))[:2]], [None, None])
    # a re-run with one replica finds everything done
    again = run_presample(make_spec(stopping_model, tmp_path, n=N, k=K, max_new_tokens=24))
    assert presample_files(again.root) == one_replica


def _launch(spec, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))
    log = tmp_path / "worker.log"
    proc = subprocess.Popen([sys.executable, "-m", "o1pruner.cli", "presample", str(spec_path)],
                            cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    return proc, spec_path


def _wait_for(proc: subprocess.Popen, log: Path, what: str, check, timeout: float = 180):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        assert proc.poll() is None, f"exited before {what}: " + log.read_text()[-3000:]
        assert time.time() < deadline, f"no {what} in {timeout} s: " + log.read_text()[-3000:]
        time.sleep(0.05)


def _replica_pid(root: Path, replica: int, attempt: int) -> int | None:
    if not (root / "events.jsonl").exists():
        return None
    for e in events(root, "replica"):
        if e["replica"] == replica and e["attempt"] == attempt:
            return e["pid"]
    return None


@pytest.mark.slow
def test_kill_9_of_a_replica_mid_stage_loses_and_duplicates_nothing(stopping_model,
                                                                    one_replica, tmp_path):
    spec = make_spec(stopping_model, tmp_path, n=N, k=K, max_new_tokens=24,
                     data_parallel_size=2, batch_size=1)
    proc, spec_path = _launch(spec, tmp_path)
    root, log = tmp_path / "ps", tmp_path / "worker.log"
    try:
        _wait_for(proc, log, "2 finished problems",
                  lambda: len(read_jsonl(root / "presample" / "problem_stats.jsonl")) >= 2)
        victim = _replica_pid(root, 1, 0)
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    failed = events(root, "replica_failed")
    assert [(e["replica"], e["attempt"]) for e in failed] == [(1, 0)]
    assert _replica_pid(root, 1, 1) not in (None, victim)  # started again
    assert presample_files(root) == one_replica  # nothing lost, nothing twice, same samples
    assert json.loads((root / "job.json").read_text())["state"] == "done"
    rerun = run_presample(load_spec(spec_path))
    assert events(rerun.root, "skipped")  # and a re-run has nothing left to do
    assert presample_files(root) == one_replica


@pytest.mark.slow
def test_a_replica_that_fails_twice_stops_the_stage_naming_it(stopping_model, one_replica,
                                                             tmp_path):
    spec = make_spec(stopping_model, tmp_path, n=N, k=K, max_new_tokens=24,
                     data_parallel_size=2, batch_size=1)
    proc, spec_path = _launch(spec, tmp_path)
    root, log = tmp_path / "ps", tmp_path / "worker.log"
    try:
        for attempt in (0, 1):
            pid = _wait_for(proc, log, f"replica 1 attempt {attempt}",
                            lambda a=attempt: _replica_pid(root, 1, a))
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=300) == 2, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    job = json.loads((root / "job.json").read_text())
    assert job["state"] == "failed"
    assert "replica 1 of 2" in job["message"] and "failed 2 times" in job["message"]
    assert "Traceback" not in log.read_text()
    kept = len(read_jsonl(root / "presample" / "problem_stats.jsonl"))
    run_presample(load_spec(spec_path))  # a re-run completes what is left
    assert presample_files(root) == one_replica
    assert kept <= N


@pytest.mark.slow
def test_two_ray_actors_give_the_same_samples_as_one(stopping_model, one_replica, tmp_path):
    pytest.importorskip("ray")
    spec = make_spec(stopping_model, tmp_path, n=N, k=K, max_new_tokens=24,
                     data_parallel_size=2, ray_address="local")
    run = run_presample(spec)
    assert presample_files(run.root) == one_replica
    replicas = events(run.root, "replica")
    assert sorted(e["replica"] for e in replicas) == [0, 1]
    assert all(e["pid"] != os.getpid() for e in replicas)
    engine = events(run.root, "engine")[-1]
    assert engine["backend"] == "Ray actors" and engine["replicas"] == 2


def _eval_records(results: dict) -> dict:
    from o1pruner.files import read_jsonl as read

    out = {}
    for label in results["methods"]:
        for bench in results["benchmarks"]:
            path = Path(results["cache"][f"{label}/{bench}"]["path"]) / "generations.jsonl"
            rows = sorted(read(path), key=lambda r: (r["problem_id"], r["sample_idx"]))
            out[(label, bench)] = [{k: v for k, v in r.items() if k not in ("gen_s", "wall_s")}
                                   for r in rows]
    return out


@pytest.mark.slow
def test_evaluation_with_two_replicas_gives_the_same_records_as_one(tiny_model_dir, data_dir,
                                                                   tmp_path):
    from o1pruner.evaluation import run_eval
    from tests.test_evaluation import make_spec as eval_spec

    def evaluate(root: Path, **extra):
        spec = eval_spec(root, tiny_model_dir, data_dir, "dp", eval__decoding="sample",
                         eval__temperature=1.0, eval__samples_per_problem=2,
                         eval__batch_size=2, **extra)
        return run_eval(spec)

    one = evaluate(tmp_path / "one")
    two = evaluate(tmp_path / "two", eval__data_parallel_size=2)
    assert _eval_records(two) == _eval_records(one)
    assert len(_eval_records(one)[("base", "arithmetic_test")]) == 2 * 6

    def untimed(results: dict) -> dict:  # the times and tokens_per_s differ, of course
        return {bench: {k: v for k, v in m.items()
                        if k not in ("wall_s", "replica_s", "tokens_per_s")}
                for bench, m in results["metrics"]["base"].items()}

    assert untimed(two) == untimed(one)
    assert sorted(e["replica"] for e in events(Path(two["run"]), "replica")) == [0, 1]


@pytest.mark.slow
def test_a_stop_ends_every_replica_and_keeps_finished_batches(stopping_model, one_replica,
                                                             tmp_path):
    from o1pruner.jobs import pid_alive

    spec = make_spec(stopping_model, tmp_path, n=N, k=K, max_new_tokens=24,
                     data_parallel_size=2, batch_size=1)
    proc, spec_path = _launch(spec, tmp_path)
    root, log = tmp_path / "ps", tmp_path / "worker.log"
    try:
        _wait_for(proc, log, "a finished problem",
                  lambda: read_jsonl(root / "presample" / "problem_stats.jsonl"))
        pids = [_replica_pid(root, r, 0) for r in (0, 1)]
        os.killpg(proc.pid, signal.SIGTERM)  # as the UI's Stop does
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.time() + 30
    while any(pid_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in pids)
    job = json.loads((root / "job.json").read_text())
    assert job["state"] == "stopped" and "Start resumes with the rest" in job["message"]
    run_presample(load_spec(spec_path))
    assert presample_files(root) == one_replica
