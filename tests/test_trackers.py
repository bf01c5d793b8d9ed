"""train.report_to: the training metrics go to experiment trackers through accelerate
(TensorBoard by default; W&B offline and Trackio locally when installed), with the same
values and step numbers as events.jsonl, which the web UI reads."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from o1pruner.errors import UserError
from o1pruner.jobs import run_dir_for
from o1pruner.models import load_tokenizer
from o1pruner.specio import SpecError, save_spec, spec_from_dict
from o1pruner.training import run_train
from tests.presample_files import make_spec, write_presample

REPO = Path(__file__).resolve().parents[1]


def prepared(model_dir, root, name, **train):
    spec = make_spec(model_dir, root, name=name, train=train)
    write_presample(run_dir_for(spec).root, load_tokenizer(spec.model, str(model_dir)),
                    n_problems=2)
    return spec


def metric_events(run):
    return [e for e in run.events() if e["kind"] == "metrics" and e["stage"] == "train"]


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tensorboard_gets_the_scalars_of_events_jsonl(tiny_model_dir, tmp_path):
    run = run_train(prepared(tiny_model_dir, tmp_path, "tb"))  # report_to: [tensorboard]
    scalars = tensorboard_scalars(run.root / "train" / "tensorboard")
    events = metric_events(run)
    assert len(events) == 2
    for event in events:
        for key, value in event.items():
            if key in ("time", "kind", "stage", "step"):
                continue
            assert scalars[f"train/{key}"][event["step"]] == pytest.approx(value, rel=1e-6), key
    hparams = list((run.root / "train" / "tensorboard").glob("*/hparams.yml"))
    assert len(hparams) == 1 and "train.learning_rate: 0.001" in hparams[0].read_text()


def test_report_to_nothing_writes_no_tracker_files(tiny_model_dir, tmp_path):
    run = run_train(prepared(tiny_model_dir, tmp_path, "none", report_to=[]))
    assert not (run.root / "train" / "tensorboard").exists()
    assert len(metric_events(run)) == 2  # the web UI's curves are there all the same


def test_a_tracker_that_is_not_installed_names_the_package(tiny_model_dir, tmp_path):
    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    spec = prepared(tiny_model_dir, tmp_path, "mlflow", report_to=["tensorboard", "mlflow"])
    with pytest.raises(UserError, match=r"train.report_to: mlflow asked for but not "
                       r"installed; install it \(pip install mlflow\)"):
        run_train(spec)
    run = run_dir_for(spec)
    assert not (run.root / "train" / "dataset.jsonl").exists()  # refused before any work
    assert "pip install mlflow" in run.read_job()["message"]


def test_an_unknown_tracker_is_a_spec_error():
    with pytest.raises(SpecError, match="report_to"):
        spec_from_dict({"train": {"report_to": ["neptune"]}})


def test_wandb_offline_and_trackio_locally_from_the_cli(tiny_model_dir, tmp_path):
    for package in ("wandb", "trackio"):
        pytest.importorskip(package)
    spec = prepared(tiny_model_dir, tmp_path, "trackers",
                    report_to=["tensorboard", "wandb", "trackio"])
    save_spec(spec, tmp_path / "spec.yaml")
    env = {**os.environ, "WANDB_MODE": "offline", "TRACKIO_DIR": str(tmp_path / "trackio"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "o1pruner.cli", "train",
                           str(tmp_path / "spec.yaml")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dir_for(spec)
    losses = {e["step"]: e["loss"] for e in metric_events(run)}
    assert sorted(losses) == [1, 2]

    # W&B: an offline run in train/wandb/ whose transaction log holds the metrics and spec
    logs = list((run.root / "train" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    data = logs[0].read_bytes()
    assert b"train/loss" in data and b"train/reward/mean" in data
    assert b"train.learning_rate" in data

    # Trackio: the project `o1pruner`, a run named after the run directory, read back
    # through trackio's own storage API
    read = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage as S; "
            "print(json.dumps(S.get_logs('o1pruner', 'trackers')))")
    out = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    logged = {row["step"]: row["train/loss"] for row in json.loads(out.stdout.splitlines()[-1])
              if "train/loss" in row}
    assert logged.keys() == losses.keys()
    assert all(logged[s] == pytest.approx(losses[s], rel=1e-6) for s in losses)


def test_changing_the_trackers_does_not_train_a_finished_run_again(tiny_model_dir, tmp_path):
    run = run_train(prepared(tiny_model_dir, tmp_path, "again", report_to=[]))
    run_train(prepared(tiny_model_dir, tmp_path, "again", report_to=["tensorboard"],
                       save_model_steps=1))
    assert len(metric_events(run)) == 2 and run.events()[-1]["kind"] == "skipped"


def test_a_tracker_that_cannot_start_is_one_message(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "online")  # online, without a login or a server
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    spec = prepared(tiny_model_dir, tmp_path, "nologin", report_to=["wandb"])
    with pytest.raises(UserError, match=r"train.report_to: the experiment trackers \(wandb\) "
                       r"did not start \(UsageError: No API key configured"):
        run_train(spec)
    assert "WANDB_MODE=offline" in run_dir_for(spec).read_job()["message"]
