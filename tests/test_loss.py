"""The PPO-clip length-harmonizing loss, the SFT and DPO losses, and completion masking."""

from __future__ import annotations

import math

import pytest
import torch

from o1pruner.training.dataset import BatchPlan, collate, tokenize_pair
from o1pruner.training.loss import (
    LOG_RATIO_LIMIT,
    completion_logprobs,
    dpo_loss,
    length_harmonizing_loss,
    sft_loss,
)


def test_ratio_one_gives_minus_mean_reward():
    logp = torch.tensor([-5.0, -9.0])
    loss, stats = length_harmonizing_loss(logp, logp.clone(), torch.tensor([5.0, 9.0]),
                                          torch.tensor([2.0, -1.0]), 0.2)
    assert loss.item() == pytest.approx(-0.5)
    assert stats["ratio"].tolist() == [1.0, 1.0]
    assert stats["clipped"].sum().item() == 0


def test_clip_caps_the_gain_and_stops_the_gradient():
    # positive reward, ratio 1.5 -> objective capped at 1.2 * R, no gradient
    logp = torch.tensor([math.log(1.5)], requires_grad=True)
    loss, stats = length_harmonizing_loss(logp, torch.zeros(1), torch.ones(1),
                                          torch.tensor([1.0]), 0.2, "sequence")
    assert loss.item() == pytest.approx(-1.2)
    assert stats["clipped"].item() == 1.0
    loss.backward()
    assert logp.grad.item() == 0.0
    # negative reward, ratio 0.5 -> the pessimistic 0.8 * R is used
    loss, stats = length_harmonizing_loss(torch.tensor([math.log(0.5)]), torch.zeros(1),
                                          torch.ones(1), torch.tensor([-1.0]), 0.2, "sequence")
    assert loss.item() == pytest.approx(0.8)
    # negative reward, ratio 1.5 -> not clipped, full penalty 1.5 * R
    loss, stats = length_harmonizing_loss(torch.tensor([math.log(1.5)]), torch.zeros(1),
                                          torch.ones(1), torch.tensor([-1.0]), 0.2, "sequence")
    assert loss.item() == pytest.approx(1.5)
    assert stats["clipped"].item() == 0.0


def test_token_mean_ratio_is_geometric_mean_of_token_ratios():
    logp, ref, n = torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([4.0])
    _, tok = length_harmonizing_loss(logp, ref, n, torch.ones(1), 0.2, "token_mean")
    _, seq = length_harmonizing_loss(logp, ref, n, torch.ones(1), 0.2, "sequence")
    assert tok["ratio"].item() == pytest.approx(math.exp(2 / 4))
    assert seq["ratio"].item() == pytest.approx(math.exp(2))


def test_sequence_ratio_of_long_samples_stays_finite():
    """Sums over 8,000-token samples: log-ratios of thousands of nats in both directions,
    with zero, positive and negative rewards. Before the clamp: inf and NaN."""
    n = torch.full((4,), 8000.0)
    ref = torch.full((4,), -16000.0)
    logp = (ref + torch.tensor([3000.0, -3000.0, 3000.0, 0.0])).requires_grad_()
    rewards = torch.tensor([0.0, 1.0, -1.0, 0.5])
    loss, stats = length_harmonizing_loss(logp, ref, n, rewards, 0.2, "sequence")
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert torch.isfinite(stats["ratio"]).all()
    assert stats["ratio"][0].item() == pytest.approx(math.exp(LOG_RATIO_LIMIT), rel=1e-5)
    # inside the clamp the value is unchanged: the last row has ratio 1
    assert stats["ratio"][3].item() == 1.0


def test_a_sample_beyond_the_log_ratio_clamp_keeps_the_sign_of_its_gradient():
    """Sequence level, |log r| = 30 > LOG_RATIO_LIMIT: far above its reference with a
    negative reward, a sample is still pushed down; far below with a positive reward, up
    (a plain clamp gives both a zero gradient). The value is the clamp's."""
    logp = torch.tensor([30.0, -30.0], requires_grad=True)
    loss, stats = length_harmonizing_loss(logp, torch.zeros(2), torch.ones(2),
                                          torch.tensor([-1.0, 1.0]), 0.2, "sequence")
    assert stats["ratio"].tolist() == pytest.approx([math.exp(20), math.exp(-20)], rel=1e-5)
    loss.backward()
    # loss = -mean(r * R): d loss / d logp = -r * R / 2, at the clamped ratio
    assert logp.grad[0].item() == pytest.approx(math.exp(20) / 2, rel=1e-5)  # > 0: down
    assert logp.grad[1].item() == pytest.approx(-math.exp(-20) / 2, rel=1e-4)  # < 0: up
    # beyond the clamp on the clipped side (log r = 30, positive reward): no gradient, as in PPO
    high = torch.tensor([30.0], requires_grad=True)
    loss, _ = length_harmonizing_loss(high, torch.zeros(1), torch.ones(1), torch.ones(1), 0.2,
                                      "sequence")
    loss.backward()
    assert high.grad.item() == 0.0


def test_sft_and_dpo_losses():
    assert sft_loss(torch.tensor([-6.0, -2.0]), torch.tensor([3.0, 1.0])).item() == 2.0
    zero = torch.zeros(2)
    loss, stats = dpo_loss(zero, zero, zero, zero, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    loss, stats = dpo_loss(torch.tensor([1.0]), torch.tensor([-1.0]), torch.zeros(1),
                           torch.zeros(1), beta=0.5)
    assert stats["margin"].item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))


def test_completion_logprobs_masks_prompt_and_padding(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    short = tokenize_pair(tok, "<|im_start|>user\nHi<|im_end|>\n", "12 + 7 = 19", "stop", 64)
    long = tokenize_pair(tok, "<|im_start|>user\nMia has 12 apples.<|im_end|>\n",
                         "Let me think step by step. 6 * 4 = 24.", "length", 64)
    assert short.input_ids[-1] == tok.eos_token_id and long.input_ids[-1] != tok.eos_token_id
    with torch.no_grad():
        batch_sum, batch_n = completion_logprobs(model, collate([short, long], tok.pad_token_id))
        for b, seq in enumerate((short, long)):
            ids = torch.tensor([seq.input_ids])
            logits = model(input_ids=ids).logits[0, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
            expected = logp[seq.n_prompt - 1:].sum()
            assert batch_n[b].item() == len(seq.input_ids) - seq.n_prompt
            assert batch_sum[b].item() == pytest.approx(expected.item(), abs=1e-4)

        class NoLogitsToKeep(torch.nn.Module):  # a forward without logits_to_keep
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask)

        class IgnoresLogitsToKeep(NoLogitsToKeep):  # takes it, returns every position
            def forward(self, input_ids, attention_mask, **kwargs):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask)

        for wrapper in (NoLogitsToKeep, IgnoresLogitsToKeep):
            wrapped_sum, wrapped_n = completion_logprobs(wrapper(model),
                                                         collate([short, long], tok.pad_token_id))
            assert torch.allclose(wrapped_sum, batch_sum, atol=1e-4), wrapper.__name__
            assert torch.equal(wrapped_n, batch_n)
        # a row without completion tokens counts none
        empty = tokenize_pair(tok, "<|im_start|>user\nMia has 12 apples.<|im_end|>\n", "",
                              "length", 64)
        both_sum, both_n = completion_logprobs(model, collate([empty, short], tok.pad_token_id))
        assert both_n.tolist() == [0.0, batch_n[0].item()]
        assert both_sum[0].item() == 0.0
        assert both_sum[1].item() == pytest.approx(batch_sum[0].item(), abs=1e-4)


def test_batch_plan_covers_every_row_and_fills_the_last_step():
    plan = BatchPlan(n_rows=10, batch_size=2, world_size=2, grad_accum=2, seed=3, epochs=1)
    assert plan.micro_per_pass == 3 and plan.total_steps == 2 and plan.total_micro == 4
    first_pass = [r for j in range(3) for rank in range(2) for r in plan.micro_batch(j, rank)]
    assert set(first_pass) == set(range(10)) and len(first_pass) == 12
    assert plan.micro_batch(0, 0) == BatchPlan(10, 2, 2, 2, 3, 1).micro_batch(0, 0)
    assert plan.micro_batch(3, 0) == plan.pass_order(1)[:2]
