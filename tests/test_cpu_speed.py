"""The CPU speed-ups of training (o1pruner/training/cpu_speed.py) change the speed, not the
numbers: losses, ratios, gradients and the trained model equal the plain path's within
float rounding. Their speed is measured in benchmarks/train_step.py, not here."""

from __future__ import annotations

import logging

import pytest
import torch

from o1pruner.models import load_tokenizer
from o1pruner.training import run_train
from o1pruner.training.cpu_speed import CpuSpeedups, keep_large_buffers
from o1pruner.training.dataset import collate, tokenize_rows
from o1pruner.training.finetuning import apply_freeze
from o1pruner.training.loss import completion_logprobs, length_harmonizing_loss
from tests.presample_files import make_spec
from tests.test_training import assert_same_training, prepared


def _model_and_batch(model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    apply_freeze(model, 1, ["all"], [])  # layer 0 and the head frozen, layer 1 trains
    tok = load_tokenizer(make_spec(model_dir, model_dir).model)
    rows = [{"prompt": "<|im_start|>user\nMia has 12 apples.<|im_end|>\n",
             "completion": text, "finish_reason": "stop"}
            for text in ("12 + 7 = 19, so 19 apples", "6")]
    batch = collate([i["chosen"] for i in tokenize_rows(tok, rows, 64)], tok.pad_token_id)
    return model, batch


def _step(model, batch, ref_logp=None):
    """One bf16 micro-step of the length-harmonizing loss: (logp, loss, ratio, gradients)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp, n = completion_logprobs(model, batch)
        ref = logp.detach() - 0.05 if ref_logp is None else ref_logp
        loss, stats = length_harmonizing_loss(logp, ref, n, torch.tensor([1.0, -0.5]), 0.2)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logp.detach(), loss.detach(), stats["ratio"], grads


def test_loss_ratio_and_gradients_equal_the_plain_path(tiny_model_dir):
    model, batch = _model_and_batch(tiny_model_dir)
    plain = _step(model, batch)
    speedups = CpuSpeedups(model, torch.bfloat16)
    speedups.install()
    fast = _step(model, batch, ref_logp=plain[0] - 0.05)
    torch.testing.assert_close(fast[0], plain[0])        # log-probs
    torch.testing.assert_close(fast[1], plain[1])        # loss
    torch.testing.assert_close(fast[2], plain[2])        # ratio
    assert fast[3].keys() == plain[3].keys() and fast[3]
    for name in plain[3]:
        torch.testing.assert_close(fast[3][name], plain[3][name], msg=name)


def test_frozen_weights_get_one_bf16_copy_and_remove_restores_the_model(tiny_model_dir, caplog):
    model, batch = _model_and_batch(tiny_model_dir)
    speedups = CpuSpeedups(model, torch.bfloat16)
    with caplog.at_level(logging.INFO, logger="o1pruner.training.cpu_speed"):
        speedups.install()
    frozen = [m for m in model.modules() if isinstance(m, torch.nn.Linear)
              and not m.weight.requires_grad]
    assert len(frozen) == 8  # layer 0's 7 projections and the head
    assert f"bf16 copies of {len(frozen)} frozen linear weights" in caplog.text
    assert all("forward" in vars(m) for m in frozen)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model(input_ids=batch["input_ids"]).logits
    speedups.remove()
    assert not any("forward" in vars(m) for m in model.modules())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(input_ids=batch["input_ids"]).logits
        torch.testing.assert_close(fast, plain)
    with torch.no_grad():  # outside autocast the fp32 weights are used, as before
        speedups.install()
        fp32 = model(input_ids=batch["input_ids"]).logits
        assert fp32.dtype == torch.float32
        speedups.remove()
        torch.testing.assert_close(fp32, model(input_ids=batch["input_ids"]).logits,
                                   rtol=0, atol=0)


def test_training_with_the_speedups_gives_the_same_losses_ratios_and_model(
        tiny_model_dir, tmp_path, monkeypatch, caplog):
    train = {"finetuning": "freeze", "freeze_trainable_layers": 1, "precision": "bf16",
             "epochs": 2, "batch_size": 1, "gradient_accumulation_steps": 2}
    with caplog.at_level(logging.INFO, logger="o1pruner.training.cpu_speed"):
        fast = run_train(prepared(tiny_model_dir, tmp_path, "fast", train=train))
    assert "CPU speed-ups: output head on 2-D inputs, bf16 copies of" in caplog.text
    monkeypatch.setattr(CpuSpeedups, "for_training", classmethod(lambda cls, *args: None))
    plain = run_train(prepared(tiny_model_dir, tmp_path, "plain", train=train))
    assert_same_training(fast, plain, metric_tol=1e-6, weight_tol=1e-6)


def test_glibc_keeps_large_buffers_and_gets_its_defaults_back():
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt only")
    assert keep_large_buffers(True) is True
    assert keep_large_buffers(False) is True
