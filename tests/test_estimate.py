"""The time a run is estimated to take before it starts: it grows with the work the spec
asks for and shrinks with the machine's speed."""

from __future__ import annotations

import pytest
import torch

from o1pruner.estimate import estimate_run, params_from_config
from o1pruner.specio import load_spec
from tests.conftest import REPO

QUICKSTART = REPO / "templates" / "quickstart-full.yaml"
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU estimates only")


def test_parameter_count_of_a_qwen_config():
    config = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936}
    assert params_from_config(config) == pytest.approx(494e6, rel=0.01)


def test_the_estimate_scales_with_the_work_and_the_machine():
    spec = load_spec(QUICKSTART)
    base = estimate_run(spec, gflops=150.0)
    assert base is not None and set(base.phases) == {"pre-sample", "training", "evaluation"}
    double_k = estimate_run(load_spec(QUICKSTART, ["presample.k=16"]), gflops=150.0)
    assert double_k.phases["pre-sample"] > 1.9 * base.phases["pre-sample"] - 130
    assert estimate_run(spec, gflops=300.0).total_s < base.total_s
    one_round = estimate_run(load_spec(QUICKSTART, ["run.rounds=1"]), gflops=150.0)  # 2 there
    assert one_round.total_s < base.total_s
    assert "min" in base.line() and "GFLOP/s" in base.line()


def test_no_estimate_for_a_hub_model_not_on_disk():
    spec = load_spec(QUICKSTART, ["model.name_or_path=someorg/somemodel",
                                  "model.prompt_template=generic"])
    assert estimate_run(spec, gflops=150.0) is None


def test_an_emulated_dtype_is_estimated_slower():
    from o1pruner.hardware import cpu_facts

    if cpu_facts().native_bf16:
        pytest.skip("bf16 is native on this CPU")
    slow = estimate_run(load_spec(QUICKSTART, ["model.dtype=bfloat16"]))
    fast = estimate_run(load_spec(QUICKSTART, ["model.dtype=float32"]))
    assert slow.total_s > 5 * fast.total_s


def test_an_on_policy_method_has_no_pre_sampling_and_pays_for_its_sampling():
    lh = estimate_run(load_spec(QUICKSTART), gflops=150.0)
    grpo = estimate_run(load_spec(QUICKSTART, [
        "train.method=grpo_length", "train.grpo_max_completion_length=512",
        "train.grpo_num_generations=8", "train.epochs=1"]), gflops=150.0)
    assert set(grpo.phases) == {"training", "evaluation"}
    assert grpo.phases["evaluation"] == lh.phases["evaluation"]
    # sampling K completions per problem with transformers inside training costs more than
    # pre-sampling them with vLLM and training on them
    assert grpo.phases["training"] > lh.phases["training"] + lh.phases["pre-sample"] - 130
    more = estimate_run(load_spec(QUICKSTART, [
        "train.method=grpo_length", "train.grpo_max_completion_length=512",
        "train.grpo_num_generations=8", "train.epochs=2"]), gflops=150.0)
    assert more.phases["training"] > 1.9 * grpo.phases["training"] - 130


def test_starting_an_on_policy_runs_pre_sampling_says_there_is_none_to_estimate():
    from webui.machine import time_note

    spec = load_spec(QUICKSTART, ["train.method=grpo_length",
                                  "train.grpo_max_completion_length=512",
                                  "train.grpo_num_generations=8"])
    note = time_note(spec, "presample")
    assert note.seconds is None and "grpo_length run has none" in note.line
    assert time_note(spec, "train").seconds > 0
