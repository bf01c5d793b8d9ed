"""A stop is a checkpoint, never a loss: `o1pruner run` on a tiny model, SIGTERM to the
job's process group while it trains (one process, and two ranks under accelerate), then a
re-run that resumes at the saved step; and no rank outlives a `kill -9` of its launcher."""

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

from o1pruner import jobs
from o1pruner.files import read_json, read_jsonl
from o1pruner.jobs import RunDir, procs

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def write_spec(tmp_path: Path, model_dir: Path, name: str, devices: int = 1) -> Path:
    spec = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": "arithmetic_train", "train_limit": 12, "eval_limit": 2},
        "presample": {"k": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8,
                      "engine": "hf", "batch_size": 12},
        "reward": {"samples_per_problem": 4},
        # 48 samples, one per step, 4 epochs: ~190 steps, and no periodic checkpoint
        "train": {"learning_rate": 1e-4, "batch_size": 1, "gradient_accumulation_steps": 1,
                  "epochs": 4, "max_length": 64, "gradient_checkpointing": False,
                  "precision": "fp32", "save_steps": 0, "logging_steps": 1,
                  "devices": devices},
        "eval": {"benchmarks": ["arithmetic_test"], "max_new_tokens": 8, "engine": "hf"},
        "run": {"name": name, "output_root": str(tmp_path / "runs"), "stop_timeout": 120},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start_run(spec: Path) -> subprocess.Popen:
    """`o1pruner run SPEC` in a session of its own, as the web UI starts it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "o1pruner.cli", "run", str(spec)],
                            cwd=spec.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_training_steps(run: RunDir, proc: subprocess.Popen, steps: int = 2,
                            timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = [e for e in run.events() if e["kind"] == "metrics" and e["stage"] == "train"]
        if len(done) >= steps:
            return
        if proc.poll() is not None:
            pytest.fail("the run ended before training:\n" + proc.stdout.read()[-3000:])
        time.sleep(0.05)
    pytest.fail("training did not start")


def checkpoint_step(run: RunDir) -> int:
    (ckpt,) = (run.root / "train" / "checkpoints").glob("step-*")
    return json.loads((ckpt / "trainer_state.json").read_text())["step"]


def finish(spec: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "o1pruner.cli", "run", str(spec)],
                          cwd=spec.parent, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("devices", [1, 2])
def test_sigterm_to_the_job_group_saves_a_checkpoint_and_a_rerun_resumes_there(
        tiny_model_dir: Path, tmp_path: Path, devices: int) -> None:
    spec = write_spec(tmp_path, tiny_model_dir, f"stop{devices}", devices)
    run = RunDir(tmp_path / "runs" / f"stop{devices}")
    proc = start_run(spec)
    wait_for_training_steps(run, proc)
    ranks = jobs.registered_processes(run)
    assert len(ranks) == (devices if devices > 1 else 0)
    os.killpg(proc.pid, signal.SIGTERM)  # what the web UI's Stop sends (and a group Ctrl-C)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:]

    step = checkpoint_step(run)
    assert step >= 1
    record = read_json(run.job_path)
    assert record["state"] == "stopped" and record["stages"]["train"]["state"] == "stopped"
    assert record["message"] == (f"stopped during train: checkpoint step-{step} saved; Start "
                              "resumes from it")
    assert jobs.status(run)["state"] == "stopped"
    # nothing of the job is left: its group, and the ranks in their own sessions
    assert not procs.group_alive(proc.pid)
    assert all(not r.alive() for r in ranks)
    stopped = [e for e in run.events() if e["kind"] == "stopped"]
    assert [e["step"] for e in stopped] == [step]

    result = finish(spec)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = [e for e in run.events() if e["kind"] == "resume"]
    assert [e["step"] for e in resumed] == [step]  # not step 0
    summary = read_json(run.root / "train" / "summary.json")
    total = 48 * 4 // devices
    assert summary["steps"] == total
    steps = [e["step"] for e in run.events() if e["kind"] == "metrics" and e["stage"] == "train"]
    assert steps[-(total - step):] == list(range(step + 1, total + 1))
    assert read_json(run.job_path)["state"] == "done"


def test_no_rank_outlives_a_kill_9_of_its_launcher(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, tiny_model_dir, "killed", devices=2)
    run = RunDir(tmp_path / "runs" / "killed")
    proc = start_run(spec)
    wait_for_training_steps(run, proc)
    ranks = jobs.registered_processes(run)
    assert len(ranks) == 2
    launcher = read_json(run.job_path)["stages"]["train"]["pid"]
    os.kill(launcher, signal.SIGKILL)  # the `o1pruner train` launcher: no handler runs
    deadline = time.time() + 120
    while any(r.alive() for r in ranks):
        assert time.time() < deadline, "training ranks outlived their launcher"
        time.sleep(0.2)
    proc.communicate(timeout=120)
    # each rank saw its launcher die and stopped as a Stop would: a checkpoint is kept
    assert checkpoint_step(run) >= 1
    # accelerate's launcher (what is left of the group) ends once its ranks have: under
    # load that can take a few seconds after they are gone
    deadline = time.time() + 60
    while procs.group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not procs.group_alive(proc.pid) and jobs.registered_processes(run) == []
    assert jobs.status(run)["state"] in ("failed", "stopped")
    assert read_jsonl(run.root / "presample" / "samples.jsonl")  # nothing lost before it
