"""The on-policy methods (train.method: grpo_length, thinkprune) on TRL's GRPOTrainer: their
rewards on hand-made completions give the values docs/method.md states, their spec fields
apply only where they mean something, each trains a tiny real model and changes it, and a
stop saves a checkpoint that a re-run resumes from."""

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
from pydantic import ValidationError

from o1pruner.files import read_json
from o1pruner.jobs import RunDir
from o1pruner.spec import RunSpec, TrainSpec
from o1pruner.training.grpo import STATE_FILE, round_number, trl_prompt
from o1pruner.training.grpo_rewards import (
    AccuracyReward,
    CappedAccuracyReward,
    CompletionJudge,
    GroupLengthReward,
    capped_accuracy,
    group_length_rewards,
)
from tests.tiny_model import build_stopping_model, build_tiny_model

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- the rewards' values
def test_length_reward_of_a_group_is_kimis_lambda_for_correct_and_never_positive_for_wrong():
    # lengths 10, 20, 30, 30: lambda = 0.5 - (L - 10) / 20 = 0.5, 0, -0.5, -0.5
    assert group_length_rewards([10, 20, 30, 30], [True, True, True, False]) == \
        [0.5, 0.0, -0.5, -0.5]
    # the shortest wrong answer gets min(0, 0.5) = 0, not a bonus for giving up early
    assert group_length_rewards([10, 20, 30], [False, True, False]) == [0.0, 0.0, -0.5]
    assert group_length_rewards([12, 15], [True, True]) == [0.5, -0.5]


def test_a_group_of_equal_lengths_has_no_length_reward():
    assert group_length_rewards([7, 7, 7], [True, False, True]) == [0.0, 0.0, 0.0]


def test_thinkprune_rewards_a_correct_answer_only_when_it_finished_within_the_cap():
    assert capped_accuracy(correct=True, finished=True, num_tokens=100, cap=100) == 1.0
    assert capped_accuracy(correct=True, finished=True, num_tokens=101, cap=100) == 0.0
    assert capped_accuracy(correct=True, finished=False, num_tokens=50, cap=100) == 0.0
    assert capped_accuracy(correct=False, finished=True, num_tokens=50, cap=100) == 0.0


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    path = build_tiny_model(tmp_path_factory.mktemp("tok") / "m", hidden=16, layers=1,
                            thinking="r1")
    return AutoTokenizer.from_pretrained(path)


def completion(tokenizer, text: str, finished: bool = True) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")] if finished else ids


def test_the_reward_functions_grade_hand_made_completions_as_trl_calls_them(tokenizer) -> None:
    """One group of four completions of one problem (gold 14), called with the keyword
    arguments GRPOTrainer passes; thinking is on (R1 template): the answer follows </think>."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    judge = CompletionJudge(tokenizer, "on", "strict", [end])
    ids = [completion(tokenizer, "12 + 2 = 14</think>\\boxed{14}"),            # correct
           completion(tokenizer, "Let me think step by step. 12 + 7 = 19</think>\\boxed{19}"),
           completion(tokenizer, "Wait, 12 + 2 = 14, so</think>\\boxed{14}", finished=False),
           completion(tokenizer, "Let me think step by step. \\boxed{14}", finished=False)]
    n = [len(x) for x in ids]
    prompt = "<|im_start|>user\nMia has 12 apples<|im_end|>\n<|im_start|>assistant\n<think>\n"
    kwargs = {"prompts": [prompt] * 4, "completions": [tokenizer.decode(x) for x in ids],
              "completion_ids": ids, "gold": ["14"] * 4, "problem_id": ["p0"] * 4,
              "trainer_state": None, "log_extra": None, "log_metric": None}
    # the third is cut at the limit but its box closed after the thinking: correct; the
    # fourth never closed its thinking: no answer
    assert AccuracyReward(judge)(**kwargs) == [1.0, 0.0, 1.0, 0.0]
    lo, hi = min(n), max(n)
    lam = [0.5 - (x - lo) / (hi - lo) for x in n]
    expected = [lam[0], min(0.0, lam[1]), lam[2], min(0.0, lam[3])]
    assert GroupLengthReward(judge, group_size=4)(**kwargs) == pytest.approx(expected)
    # thinkprune: the unfinished one gets 0 although correct, and so does one over the cap
    assert CappedAccuracyReward(judge, cap=max(n))(**kwargs) == [1.0, 0.0, 0.0, 0.0]
    assert CappedAccuracyReward(judge, cap=n[0] - 1)(**kwargs) == [0.0, 0.0, 0.0, 0.0]


def test_the_length_reward_can_count_thinking_tokens_only(tokenizer) -> None:
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    judge = CompletionJudge(tokenizer, "on", "strict", [end])
    # same thinking, answers of different lengths: no length difference to reward
    ids = [completion(tokenizer, "12 + 2 = 14</think>\\boxed{14}"),
           completion(tokenizer, "12 + 2 = 14</think>The answer is \\boxed{14}")]
    kwargs = {"prompts": ["q"] * 2, "completion_ids": ids, "gold": ["14"] * 2,
              "problem_id": ["p0"] * 2}
    assert GroupLengthReward(judge, 2, length="thinking")(**kwargs) == [0.0, 0.0]
    assert GroupLengthReward(judge, 2, length="total")(**kwargs) == [0.5, -0.5]


def test_a_group_that_mixes_problems_is_an_error_not_a_silent_reward(tokenizer) -> None:
    judge = CompletionJudge(tokenizer, "off", "strict", [])
    ids = [completion(tokenizer, "1"), completion(tokenizer, "22")]
    with pytest.raises(RuntimeError, match="mixes problems"):
        GroupLengthReward(judge, 2)(prompts=["a", "b"], completion_ids=ids, gold=["1", "2"],
                                    problem_id=["p0", "p1"])


def test_trl_gets_the_prompt_tokens_pre_sampling_uses(tokenizer) -> None:
    from o1pruner.sampling.engines import encode_prompt

    prompt = "<|endoftext|><|im_start|>user\nMia has 12 apples<|im_end|>\n"
    text = trl_prompt(tokenizer, prompt)
    assert tokenizer(text)["input_ids"] == encode_prompt(tokenizer, prompt)


# ------------------------------------------------------------------------ spec fields
def test_the_new_fields_apply_only_to_their_methods() -> None:
    with pytest.raises(ValidationError, match="grpo_num_generations: only applies with method: "
                       "grpo_length or thinkprune"):
        TrainSpec(method="lh", grpo_num_generations=4)
    with pytest.raises(ValidationError, match="grpo_length_weight: only applies"):
        TrainSpec(method="thinkprune", grpo_length_weight=2.0)
    with pytest.raises(ValidationError, match="thinkprune_cap_schedule: only applies"):
        TrainSpec(method="grpo_length", thinkprune_cap_schedule=[1.0, 0.5])
    with pytest.raises(ValidationError, match="save_model_steps: not offered with method"):
        TrainSpec(method="thinkprune", save_model_steps=10)
    TrainSpec(method="grpo_length", grpo_length_weight=0.5, grpo_overlong_buffer=512)


def test_a_step_holds_whole_groups_and_the_cap_schedule_only_goes_down() -> None:
    with pytest.raises(ValidationError, match="grpo_num_generations: 3 must divide"):
        TrainSpec(method="grpo_length", grpo_num_generations=3)  # 4 x 8 = 32 completions
    with pytest.raises(ValidationError, match="non-increasing"):
        TrainSpec(method="thinkprune", thinkprune_cap_schedule=[0.5, 1.0])
    with pytest.raises(ValidationError, match="grpo_overlong_buffer: 2048 must be below the "
                       "token limit \\(2048 tokens in the last round\\)"):
        TrainSpec(method="thinkprune", grpo_overlong_buffer=2048)  # 4096 x 0.5


def test_thinkprunes_cap_follows_the_rounds_and_keeps_the_last_fraction() -> None:
    train = TrainSpec(method="thinkprune", grpo_max_completion_length=4096)
    assert [train.grpo_token_limit(r) for r in (1, 2, 3, 4)] == [4096, 3072, 2048, 2048]
    assert TrainSpec(method="grpo_length").grpo_token_limit(3) == 4096


def test_no_pre_sample_selection_is_claimed_for_an_on_policy_method(tmp_path: Path) -> None:
    """The Samples explorer asks build_training_set what training uses: nothing of the
    pre-samples, with grpo_length or thinkprune."""
    from o1pruner.errors import UserError
    from o1pruner.reward import build_training_set

    spec = RunSpec.model_validate({"train": {"method": "grpo_length"}})
    with pytest.raises(UserError, match="trains on-policy"):
        build_training_set(spec, tmp_path / "presample")


def test_an_on_policy_run_has_no_pre_sampling_and_says_why(tmp_path: Path, monkeypatch,
                                                           capsys, tiny_model_dir: Path) -> None:
    """`o1pruner run` of grpo_length / thinkprune trains and evaluates (every round), with
    no pre-sampling or analysis of pre-samples; lh keeps all four stages."""
    from o1pruner import pipeline
    from o1pruner.specio import spec_from_dict

    ran: list[tuple[str, str]] = []
    monkeypatch.setattr(pipeline, "run_stage", lambda stage, run, lock=None, label=None:
                        ran.append((stage, run.root.name)) or 0.0)
    data = grpo_spec(tmp_path, tiny_model_dir, "thinkprune", "tp")
    data["run"]["rounds"] = 2
    spec = spec_from_dict(data)
    assert pipeline.stages_of(spec) == ("train", "eval")
    pipeline.run_pipeline(spec)
    assert ran == [("train", "tp"), ("train", "round-2"), ("eval", "tp")]
    from o1pruner.cli import main as cli_main
    from webui.live import LiveView, job_markdown

    run = RunDir(tmp_path / "runs" / "tp")
    line = ("stages: train, eval; no presample, analyze (train.method thinkprune samples "
            "while it trains)")
    capsys.readouterr()
    assert cli_main(["status", str(run.root)]) == 0
    assert line in capsys.readouterr().out
    view = LiveView(run)
    view.poll()
    assert line in job_markdown(run, view.job(), view.choices)
    assert pipeline.stages_of(RunSpec()) == ("presample", "train", "eval", "analyze")


def test_most_steps_without_a_learning_signal_are_a_warning_with_cause_and_fix(
        tmp_path: Path) -> None:
    """TRL's logs of the thinkprune point of the peers sweep (seed 0, cap 256): steps 4, 6,
    8, 9 and 10 had every group at one reward; at step 10 that is half, and the run says so
    where the status line and the results read it."""
    from types import SimpleNamespace

    from o1pruner.jobs import current_warnings
    from o1pruner.training.grpo_callbacks import RunCallback, StopFlag, Timer

    run = RunDir(tmp_path / "run")
    callback = RunCallback(run, StopFlag(), Timer(), "fingerprint", 256)
    callback.on_train_begin(None, SimpleNamespace(is_world_process_zero=True, max_steps=10,
                                                  global_step=0), None)
    truncated = [0.5, 0.0, 0.25, 0.25, 0.125, 0.125, 0.0, 0.875, 0.5, 0.75]
    silent = {4, 6, 8, 9, 10}
    for step in range(1, 11):
        callback.on_log(None, SimpleNamespace(is_world_process_zero=True, global_step=step),
                        None, {"loss": 0.0, "reward": 0.0 if step in silent else 0.375,
                               "completions/clipped_ratio": truncated[step - 1],
                               "frac_reward_zero_std": 1.0 if step in silent else 0.0})
        said = current_warnings(run.events())
        assert bool(said) == (step == 10), (step, said)
    [warning] = said
    assert warning["code"] == "no_learning_signal"
    assert warning["message"] == ("5 of 10 training steps could not change the model: no "
                                  "completion was right within the limit 256")
    assert "easier training problems" in warning["fix"]
    callback.close()


def test_a_rounds_run_directory_says_its_round(tmp_path: Path) -> None:
    from o1pruner.rounds import round_dir

    run = RunDir(tmp_path / "run")
    assert round_number(run) == 1
    assert round_number(round_dir(run, 3)) == 3


# ----------------------------------------------------------------- training, tiny model
def grpo_spec(tmp_path: Path, model: Path, method: str, name: str, **train) -> dict:
    return {
        "model": {"name_or_path": str(model)},
        "data": {"train": "arithmetic_train", "train_limit": train.pop("problems", 4)},
        "presample": {"engine": "hf"},
        "train": {"method": method, "learning_rate": 1e-2, "batch_size": 4,
                  "gradient_accumulation_steps": 1, "grpo_num_generations": 4,
                  "grpo_max_completion_length": 12, "precision": "fp32",
                  "gradient_checkpointing": False, "report_to": [], "logging_steps": 1,
                  **train},
        "run": {"name": name, "output_root": str(tmp_path / "runs")},
    }


@pytest.fixture(scope="module")
def stopping_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lengths geometric with mean 5 (EOS <|im_end|> with p = 0.2 at each step), so groups
    differ in length and the rewards have a spread to learn from."""
    return build_stopping_model(tmp_path_factory.mktemp("stop") / "m", p_stop=0.2, hidden=32)


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def changed(before: dict, after: dict) -> list[str]:
    import torch

    return [k for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))]


@pytest.mark.slow
def test_grpo_length_trains_a_tiny_model_and_changes_it(tmp_path: Path,
                                                        stopping_model: Path) -> None:
    from o1pruner.specio import spec_from_dict
    from o1pruner.training.stage import run_train

    spec = spec_from_dict(grpo_spec(tmp_path, stopping_model, "grpo_length", "gl"))
    run = run_train(spec)
    summary = read_json(run.root / "train" / "summary.json")
    assert summary["method"] == "grpo_length" and summary["steps"] == 4  # 4 problems x 4 / 4
    assert changed(weights(stopping_model), weights(run.root / "train" / "final"))
    metrics = [e for e in run.events() if e["kind"] == "metrics"]
    assert [e["step"] for e in metrics] == [1, 2, 3, 4]
    assert {"loss", "reward/mean", "completion_length", "rewards/accuracy/mean",
            "rewards/length/mean"} <= set(metrics[0])
    assert all(-0.5 <= e["rewards/length/mean"] <= 0.5 for e in metrics)
    assert not (run.root / "train" / "checkpoints").exists()  # keep_last_checkpoint off
    # a re-run of the finished stage trains nothing
    run_train(spec)
    assert [e["kind"] for e in run.events()][-1] == "skipped"


@pytest.mark.slow
def test_on_cpu_in_bf16_the_trainer_generates_with_the_cpu_speed_ups(
        tmp_path: Path, stopping_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TRL generates under accelerate's bf16 autocast on CPU: the frozen weights' bf16
    copies and the 2-D head are installed on the model it trains (benchmarks/grpo_generate.py
    measured 2.2x), and the run still trains the trainable layers."""
    import torch

    from o1pruner.specio import spec_from_dict
    from o1pruner.training import cpu_speed
    from o1pruner.training.stage import run_train

    installed: list[tuple] = []
    real_install = cpu_speed.CpuSpeedups.install

    def install(self) -> None:
        real_install(self)
        installed.append((self.dtype, len(self._patched)))

    monkeypatch.setattr(cpu_speed.CpuSpeedups, "install", install)
    spec = spec_from_dict(grpo_spec(tmp_path, stopping_model, "grpo_length", "gl-bf16",
                                    precision="bf16", finetuning="freeze",
                                    freeze_trainable_layers=1))
    run = run_train(spec)
    assert installed and installed[0][0] == torch.bfloat16 and installed[0][1] > 1
    assert changed(weights(stopping_model), weights(run.root / "train" / "final"))


@pytest.mark.slow
def test_thinkprune_in_round_two_trains_under_the_lowered_cap(tmp_path: Path,
                                                              stopping_model: Path) -> None:
    """Round 2 of a thinkprune run caps completions at 0.75 x 12 = 9 tokens; with no
    answer ever right, DAPO's overlong punishment is what moves the model."""
    from o1pruner.specio import spec_from_dict
    from o1pruner.training.stage import run_train

    data = grpo_spec(tmp_path, stopping_model, "thinkprune", "round-2", grpo_overlong_buffer=4)
    data["run"]["output_root"] = str(tmp_path / "runs" / "tp" / "rounds")
    run = run_train(spec_from_dict(data))
    assert round_number(run) == 2
    summary = read_json(run.root / "train" / "summary.json")
    assert (summary["token_limit"], summary["round"]) == (9, 2)
    metrics = [e for e in run.events() if e["kind"] == "metrics"]
    assert all(e["completions/max_length"] <= 9 for e in metrics)
    assert "rewards/capped_accuracy/mean" in metrics[0]
    assert "rewards/soft_overlong_punishment_reward/mean" in metrics[0]
    assert changed(weights(stopping_model), weights(run.root / "train" / "final"))


@pytest.mark.slow
def test_a_stop_saves_a_checkpoint_and_a_rerun_resumes_from_it(tmp_path: Path,
                                                               stopping_model: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(grpo_spec(tmp_path, stopping_model, "grpo_length",
                                                  "stopped", problems=16)))
    run = RunDir(tmp_path / "runs" / "stopped")
    cmd = [sys.executable, "-m", "o1pruner.cli", "train", str(spec_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 300
    while not [e for e in run.events() if e["kind"] == "metrics"]:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "training did not start"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:]
    (ckpt,) = (run.root / "train" / "checkpoints").glob("step-*")
    step = json.loads((ckpt / STATE_FILE).read_text())["step"]
    assert 1 <= step < 16 and ckpt.name == f"step-{step}"
    record = read_json(run.job_path)
    assert record["state"] == "stopped"
    assert record["message"] == (f"stopped during train: checkpoint step-{step} saved; Start "
                                 "resumes from it")
    assert [e["step"] for e in run.events() if e["kind"] == "stopped"] == [step]

    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [e["step"] for e in run.events() if e["kind"] == "resume"] == [step]
    assert read_json(run.root / "train" / "summary.json")["steps"] == 16
    steps = [e["step"] for e in run.events() if e["kind"] == "metrics"]
    assert steps[-(16 - step):] == list(range(step + 1, 17))  # went on, not from step 0


@pytest.mark.slow
def test_two_processes_split_each_group_and_the_length_reward_sees_it_whole(
        tmp_path: Path, stopping_model: Path) -> None:
    """train.devices 2 with 2 completions a process and groups of 4: every group spans both
    processes; the length reward gathers the lengths (a group mixing problems would fail)."""
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(grpo_spec(tmp_path, stopping_model, "grpo_length",
                                                  "two", batch_size=2, devices=2)))
    result = subprocess.run([sys.executable, "-m", "o1pruner.cli", "train", str(spec_path)],
                            cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunDir(tmp_path / "runs" / "two")
    summary = read_json(run.root / "train" / "summary.json")
    assert (summary["world_size"], summary["steps"]) == (2, 4)
    metrics = [e for e in run.events() if e["kind"] == "metrics"]
    assert len(metrics) == 4 and all("rewards/length/mean" in e for e in metrics)


def test_the_spec_reference_lists_the_new_fields() -> None:
    text = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")
    for field in ("grpo_num_generations", "grpo_max_completion_length", "grpo_temperature",
                  "grpo_overlong_buffer", "grpo_length_weight", "thinkprune_cap_schedule"):
        assert f"`{field}`" in text
    assert RunSpec.model_validate({"train": {"method": "thinkprune"}}).train.method == "thinkprune"


# ------------------------------------------------------------------ CUDA (gpu_check.sh)
@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["hf", "vllm"])
def test_grpo_on_cuda_generates_with_the_engine_the_spec_names(tmp_path: Path,
                                                               engine: str) -> None:
    """On CUDA: transformers generate (engine hf), or TRL's colocated vLLM (engine vllm),
    inside GRPO, in bf16; the model changes."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pytest.importorskip("trl")
    if engine == "vllm":
        pytest.importorskip("vllm")
    from o1pruner.specio import spec_from_dict
    from o1pruner.training.stage import run_train

    model = build_stopping_model(tmp_path / "m", p_stop=0.2)  # head size 64: vLLM's kernels
    data = grpo_spec(tmp_path, model, "grpo_length", f"cuda-{engine}", precision="bf16")
    data["presample"]["engine"] = engine
    run = run_train(spec_from_dict(data))
    summary = read_json(run.root / "train" / "summary.json")
    assert summary["generation"] == ("vllm" if engine == "vllm" else "transformers")
    assert summary["steps"] == 4 and summary["precision"] == "bf16"
    assert changed(weights(model), weights(run.root / "train" / "final"))
