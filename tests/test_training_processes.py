"""Training as the CLI runs it, in subprocesses: kill -9 and resume, SIGTERM/SIGINT save a
checkpoint, DeepSpeed ZeRO-2/3 with one and two processes on CPU (gloo), LoRA under ZeRO-3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from o1pruner.jobs import run_dir_for
from o1pruner.models import load_tokenizer
from o1pruner.specio import save_spec
from tests.presample_files import make_spec, write_presample

REPO = Path(__file__).resolve().parents[1]


def cli_spec(model_dir, root, name, n_problems=6, **train):
    spec = make_spec(model_dir, root, name=name, train=train)
    write_presample(run_dir_for(spec).root, load_tokenizer(spec.model, str(model_dir)),
                    n_problems=n_problems)
    path = root / f"{name}.yaml"
    save_spec(spec, path)
    return path, run_dir_for(spec)


def start(spec_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "o1pruner.cli", "train", str(spec_path)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(run, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list((run.root / "train" / "checkpoints").glob("step-*")):
            return
        if proc.poll() is not None:
            pytest.fail("training ended before its first checkpoint:\n" + proc.stdout.read())
        time.sleep(0.05)
    pytest.fail("no checkpoint appeared")


def train_metrics(run):
    return [e for e in run.events() if e["kind"] == "metrics"]


def finish(spec_path, run):
    done = subprocess.run([sys.executable, "-m", "o1pruner.cli", "train", str(spec_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((run.root / "train" / "summary.json").read_text())


@pytest.mark.slow
def test_killed_run_resumes_at_its_last_checkpoint(tiny_model_dir, tmp_path):
    # 20 problems x 2 samples, batch 1: 40 optimizer steps, a checkpoint every 3; freeze
    # tuning, so the resumed process rebuilds the frozen prefix's records (prefix.ensure)
    spec_path, run = cli_spec(tiny_model_dir, tmp_path, "kill", n_problems=20, batch_size=1,
                              save_steps=3, precision="fp32", finetuning="freeze",
                              freeze_trainable_layers=1)
    proc = start(spec_path)
    wait_for_checkpoint(run, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = int(next((run.root / "train" / "checkpoints").glob("step-*")).name.split("-")[1])
    assert ckpt < 40
    summary = finish(spec_path, run)
    assert summary["steps"] == 40
    assert not (run.root / "train" / "checkpoints").exists()  # complete: no longer needed
    resumed = [e for e in run.events() if e["kind"] == "resume"]
    assert [e["step"] for e in resumed] == [ckpt]
    steps = [m["step"] for m in train_metrics(run)]
    assert steps[-(40 - ckpt):] == list(range(ckpt + 1, 41))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_a_checkpoint_before_exiting(tiny_model_dir, tmp_path, signum):
    spec_path, run = cli_spec(tiny_model_dir, tmp_path, "sig", n_problems=20, batch_size=1,
                              save_steps=1000, logging_steps=1, precision="fp32")
    proc = start(spec_path)
    deadline = time.time() + 120
    while not train_metrics(run) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    ckpts = list((run.root / "train" / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "trainer_state.json").exists()
    step = json.loads((ckpts[0] / "trainer_state.json").read_text())["step"]
    assert 1 <= step < 40
    job = run.read_job()
    assert job["state"] == "stopped" and job["stages"]["train"]["state"] == "stopped"
    summary = finish(spec_path, run)
    assert summary["steps"] == 40
    assert [e["step"] for e in run.events() if e["kind"] == "resume"] == [step]


@pytest.mark.slow
@pytest.mark.parametrize("stage,devices", [(2, 1), (3, 1), (2, 2), (3, 2)])
def test_deepspeed_zero_trains_on_cpu(tiny_model_dir, tmp_path, stage, devices):
    from transformers import AutoModelForCausalLM

    spec_path, run = cli_spec(tiny_model_dir, tmp_path, f"z{stage}x{devices}",
                              deepspeed_stage=stage, devices=devices, precision="bf16")
    summary = finish(spec_path, run)
    assert summary["steps"] == 6 // devices
    assert summary["trainable_params"] == summary["total_params"] > 0
    first = train_metrics(run)[0]
    assert first["ratio/min"] == first["ratio/max"] == 1.0
    assert first["epoch"] == pytest.approx(2 * devices / 12, abs=1e-3)
    model = AutoModelForCausalLM.from_pretrained(run.root / "train" / "final")
    assert sum(p.numel() for p in model.parameters()) == summary["total_params"]


@pytest.mark.slow
def test_lora_under_zero3_merges_the_gathered_weights(tiny_model_dir, tmp_path):
    # each process holds empty shards of the parameters: the merged final model must be
    # the merge of the saved adapter onto the base model
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    spec_path, run = cli_spec(tiny_model_dir, tmp_path, "lora-z3", deepspeed_stage=3,
                              finetuning="lora", lora_rank=4, precision="fp32")
    summary = finish(spec_path, run)
    assert 0 < summary["trainable_params"] < summary["total_params"]
    train = run.root / "train"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    expected = PeftModel.from_pretrained(base, train / "adapter").merge_and_unload()
    merged = load_file(train / "final" / "model.safetensors")
    assert merged.keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        assert torch.allclose(merged[key], value, atol=1e-6), key
    untouched = load_file(tiny_model_dir / "model.safetensors")
    assert not torch.equal(merged["model.layers.0.mlp.down_proj.weight"],
                           untouched["model.layers.0.mlp.down_proj.weight"])
