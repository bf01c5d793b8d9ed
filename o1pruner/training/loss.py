"""The training objectives: length-harmonizing PPO-clip, and the SFT / DPO baselines.

All three work on per-sequence sums of completion-token log-probs (prompt and padding
tokens are masked out by `completion_logprobs`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

#: |log r| is clamped to this before exp (value only, see `clamp_keeping_gradient`): r
#: stays within [2e-9, 5e8], finite in fp32.
LOG_RATIO_LIMIT = 20.0


def completion_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log pi(y_t | x, y_<t) over each row's completion tokens, and their count.

    batch: input_ids, attention_mask, completion_mask, all [B, T] (right padded).
    Returns (logp_sum [B] float32, n_tokens [B] float32).

    Logits are computed only from the position that predicts the batch's first completion
    token onward (transformers' `logits_to_keep`): the prompt positions need none, and the
    [B, T, vocabulary] fp32 logits are the largest tensors of a training step.
    """
    ids, completion = batch["input_ids"], batch["completion_mask"]
    width = ids.shape[1]
    starts = completion.float().argmax(-1)[completion.any(-1)]       # first completion token
    start = max(int(starts.min()) - 1, 0) if starts.numel() else 0
    logits = _logits(model, ids, batch["attention_mask"], width - start)  # [B, T-start, V]
    logits = logits[:, :-1].float()                                   # predict start+1 .. T-1
    targets = ids[:, start + 1:]                                      # [B, T-start-1]
    token_logp = -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                  reduction="none").view(targets.shape)
    mask = completion[:, start + 1:].to(token_logp.dtype)
    return (token_logp * mask).sum(-1), mask.sum(-1)


_NO_LOGITS_TO_KEEP: set[type] = set()


def _logits(model: Any, ids: torch.Tensor, attention_mask: torch.Tensor, keep: int) -> torch.Tensor:
    """The logits of the last `keep` positions; models whose forward has no `logits_to_keep`
    or ignores it (some remote-code models) compute all positions, which are sliced."""
    if keep < ids.shape[1] and type(model) not in _NO_LOGITS_TO_KEEP:
        try:
            logits = model(input_ids=ids, attention_mask=attention_mask,
                           logits_to_keep=keep).logits
            return logits[:, -keep:]
        except TypeError as err:
            if "logits_to_keep" not in str(err):
                raise
            logger.info("%s takes no logits_to_keep; computing logits at every position",
                        type(model).__name__)
            _NO_LOGITS_TO_KEEP.add(type(model))
    return model(input_ids=ids, attention_mask=attention_mask).logits[:, -keep:]


def length_harmonizing_loss(
    logp_sum: torch.Tensor,
    ref_logp_sum: torch.Tensor,
    n_tokens: torch.Tensor,
    rewards: torch.Tensor,
    epsilon: float,
    ratio_level: str = "token_mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip with the length-harmonizing reward as the advantage (O1-Pruner):

        loss = - mean_i min( r_i * R_i , clip(r_i, 1 - eps, 1 + eps) * R_i )

    with r_i = pi_theta(y_i|x_i) / pi_ref(y_i|x_i) computed at `ratio_level`:
    `sequence`:   r = exp( sum_t logp_theta - sum_t logp_ref )
    `token_mean`: r = exp( mean_t logp_theta - mean_t logp_ref )  (geometric mean of the
                  per-token ratios; the published code's choice).
    All inputs are [B]; returns the scalar loss and detached statistics.

    The ratio is formed in log space and the value of its log clamped to +-LOG_RATIO_LIMIT
    before the exponential: a sequence-level log-ratio is a sum over thousands of tokens
    and would overflow to inf (and inf * a zero reward to NaN). Inside the clamp nothing
    changes. Beyond it the gradient passes straight through the clamp, so a sample keeps
    the push PPO gives it, at the magnitude of the clamped ratio: one with log r > 20 and a
    negative reward is still pushed down (d loss / d log r = -r_clamped * R > 0), one with
    log r > 20 and a positive reward is in the clipped branch (no gradient, as in PPO).
    """
    log_ratio = logp_sum - ref_logp_sum                               # [B]
    if ratio_level == "token_mean":
        log_ratio = log_ratio / n_tokens.clamp(min=1)
    log_ratio = clamp_keeping_gradient(log_ratio, LOG_RATIO_LIMIT)
    ratio = torch.exp(log_ratio)                                      # [B]
    unclipped = ratio * rewards
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * rewards
    objective = torch.minimum(unclipped, clipped)                     # [B]
    loss = -objective.mean()
    stats = {
        "ratio": ratio.detach(),
        "clipped": (clipped < unclipped).detach().float(),            # the clip is active
    }
    return loss, stats


def clamp_keeping_gradient(x: torch.Tensor, limit: float) -> torch.Tensor:
    """x clamped to [-limit, limit] in value, with the gradient of the identity (a
    straight-through clamp): `torch.clamp` has zero gradient outside its range, which
    would leave a sample beyond it without any push."""
    return x.clamp(-limit, limit).detach() + (x - x.detach())  # value: exactly the clamp


def sft_loss(logp_sum: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per completion token over the batch:
    loss = - sum_i sum_t logp(y_it) / sum_i |y_i|."""
    return -logp_sum.sum() / n_tokens.sum().clamp(min=1)


def dpo_loss(
    chosen_logp: torch.Tensor,
    rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al. 2023), sigmoid loss, on sequence log-prob sums (all [B]):

        loss = - mean_i log sigmoid( beta * [ (logp_c - ref_c) - (logp_r - ref_r) ] )

    The implicit rewards beta*(logp - ref) of chosen and rejected are returned as stats.
    """
    chosen_reward = beta * (chosen_logp - ref_chosen_logp)           # [B]
    rejected_reward = beta * (rejected_logp - ref_rejected_logp)     # [B]
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    stats = {"chosen": chosen_reward.detach(), "rejected": rejected_reward.detach(),
             "margin": margin.detach()}
    return loss, stats
