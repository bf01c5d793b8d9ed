"""Training across machines, played by two `o1pruner train` processes on one host: the same
spec with num_machines 2 and machine_rank 0 / 1, each with a run directory of its own (as
on machines without a shared file system). It must train exactly as two processes on one
machine do, with the results in machine 0's run directory only."""

from __future__ import annotations

import json
import shutil
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from o1pruner.training.distributed import free_port
from tests.test_training_processes import cli_spec, finish, start, train_metrics


def machines(tiny_model_dir, tmp_path, n_problems=6, **train):
    """Spec files and run directories of two machines (output_root machine0/, machine1/)."""
    port = free_port()
    return [cli_spec(tiny_model_dir, tmp_path / f"machine{rank}", "multi", n_problems,
                     num_machines=2, machine_rank=rank, main_process_ip="127.0.0.1",
                     main_process_port=port, **train)
            for rank in (0, 1)]


def run_together(specs):
    procs = [start(spec_path) for spec_path, _ in specs]
    try:
        outs = [proc.communicate(timeout=240)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out


@pytest.mark.slow
def test_two_machines_train_like_two_processes_on_one(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    train = {"precision": "fp32", "logging_steps": 1, "keep_last_checkpoint": True}
    (_, run0), (_, run1) = specs = machines(tiny_model_dir, tmp_path, **train)
    run_together(specs)

    # machine 0's run directory holds the run: 12 rows, 2 per process and step -> 3 steps
    summary = json.loads((run0.root / "train" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    final = run0.root / "train" / "final"
    model = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == summary["total_params"]
    steps = train_metrics(run0)
    assert [m["step"] for m in steps] == [1, 2, 3]
    assert steps[0]["ratio/min"] == steps[0]["ratio/max"] == 1.0
    assert run0.read_job()["state"] == "done"
    # machine 1's holds its checkpoint and job record, but no results
    train1 = run1.root / "train"
    assert run1.read_job()["state"] == "done"
    assert not (train1 / "final").exists() and not (train1 / "summary.json").exists()
    assert not train_metrics(run1)
    # each machine's checkpoint is complete (resumable on its own), and the replicas agree:
    # the gradients were averaged across the machines
    ckpt0, ckpt1 = (r.root / "train" / "checkpoints" / "step-3" for r in (run0, run1))
    names0, names1 = ({p.name for p in c.iterdir()} for c in (ckpt0, ckpt1))
    assert "random_states_0.pkl" in names0 and "random_states_1.pkl" in names1
    assert names0 - {"random_states_0.pkl"} == names1 - {"random_states_1.pkl"}
    weights0, weights1 = (load_file(c / "model.safetensors") for c in (ckpt0, ckpt1))
    assert all(torch.equal(weights0[k], weights1[k]) for k in weights0)
    assert all(torch.equal(weights0[k], v) for k, v in model.state_dict().items())

    # the same spec on one machine with two processes: the same losses and weights
    one_path, one = cli_spec(tiny_model_dir, tmp_path / "one", "multi", devices=2, **train)
    finish(one_path, one)
    for a, b in zip(train_metrics(one), steps, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["ratio/mean"] == pytest.approx(b["ratio/mean"], abs=1e-6)
    reference = load_file(one.root / "train" / "final" / "model.safetensors")
    assert all(torch.allclose(reference[k], v, atol=1e-6) for k, v in model.state_dict().items())

    # started again without machine 0's final model: each machine resumes from the
    # checkpoint in its own run directory
    shutil.rmtree(final)
    run_together(specs)
    for run in (run0, run1):
        assert [e["step"] for e in run.events() if e["kind"] == "resume"] == [3]
    resaved = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).state_dict()
    assert all(torch.equal(resaved[k], v) for k, v in model.state_dict().items())
    # and once more: machine 0 decides for both that the run is done
    run_together(specs)
    assert run0.events()[-1]["kind"] == "skipped"
    assert len(train_metrics(run0)) == 3


def test_the_launch_command_names_the_machines(tmp_path):
    from o1pruner.spec import TrainSpec
    from o1pruner.training.distributed import launch_command, needs_launch

    def flags(train):
        cmd = launch_command(train, tmp_path / "spec.yaml")
        names = ("--num_processes", "--num_machines", "--machine_rank", "--main_process_ip")
        return {name: cmd[cmd.index(name) + 1] for name in names}

    two = TrainSpec(devices=4, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1",
                    main_process_port=29500)
    assert flags(two) == {"--num_processes": "8", "--num_machines": "2", "--machine_rank": "1",
                          "--main_process_ip": "10.0.0.1"}
    cmd = launch_command(two, tmp_path / "spec.yaml")
    assert cmd[cmd.index("--main_process_port") + 1] == "29500"
    assert flags(TrainSpec(devices=2)) == {"--num_processes": "2", "--num_machines": "1",
                                           "--machine_rank": "0",
                                           "--main_process_ip": "127.0.0.1"}
    assert needs_launch(two) and needs_launch(TrainSpec(num_machines=2, main_process_ip="h",
                                                        main_process_port=1))
    assert not needs_launch(TrainSpec())


@pytest.mark.slow
def test_two_machines_under_zero3_resume_from_their_own_run_directories(tiny_model_dir,
                                                                       tmp_path):
    (_, run0), (_, run1) = specs = machines(tiny_model_dir, tmp_path, precision="bf16",
                                            deepspeed_stage=3, keep_last_checkpoint=True)
    run_together(specs)
    summary = json.loads((run0.root / "train" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    for rank, run in enumerate((run0, run1)):  # each machine's model states and shards
        shards = run.root / "train" / "checkpoints" / "step-3" / "pytorch_model"
        assert {p.name for p in shards.glob("*zero_pp_rank_*")} == {
            f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
            f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt"}
    shutil.rmtree(run0.root / "train" / "final")
    run_together(specs)
    for run in (run0, run1):
        assert [e["step"] for e in run.events() if e["kind"] == "resume"] == [3]
    assert (run0.root / "train" / "final" / "model.safetensors").exists()


@pytest.mark.slow
def test_a_stop_on_one_machine_stops_both_after_the_same_step(tiny_model_dir, tmp_path):
    # 20 problems x 2 samples, 1 per process and step: 20 steps
    (_, run0), (_, run1) = specs = machines(tiny_model_dir, tmp_path, n_problems=20,
                                            batch_size=1, precision="fp32", logging_steps=1)
    procs = [start(spec_path) for spec_path, _ in specs]
    deadline = time.time() + 120
    while not train_metrics(run0) and time.time() < deadline and procs[0].poll() is None:
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # machine 1's `o1pruner train`
    outs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [130, 130], outs
    steps = []
    for run in (run0, run1):
        assert run.read_job()["state"] == "stopped"
        (ckpt,) = (run.root / "train" / "checkpoints").glob("step-*")
        steps.append(json.loads((ckpt / "trainer_state.json").read_text())["step"])
    assert steps[0] == steps[1] < 20
    run_together(specs)
    for run in (run0, run1):
        assert [e["step"] for e in run.events() if e["kind"] == "resume"] == [steps[0]]
    assert [m["step"] for m in train_metrics(run0)][-3:] == [18, 19, 20]


@pytest.mark.slow
def test_machines_with_different_presamples_are_refused(tiny_model_dir, tmp_path):
    (_, run0), (_, run1) = specs = machines(tiny_model_dir, tmp_path, precision="fp32")
    samples = run1.root / "presample" / "samples.jsonl"
    samples.write_text(samples.read_text().replace("= 19", "= 20"))
    procs = [start(spec_path) for spec_path, _ in specs]
    outs = [proc.communicate(timeout=240)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [2, 2], outs
    for run, out in zip((run0, run1), outs, strict=True):
        assert "copy of machine 0's presample/ folder" in out
        assert run.read_job()["state"] == "failed"
    assert not (run0.root / "train" / "final").exists()
