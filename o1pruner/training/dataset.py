"""Training rows -> token ids, the deterministic micro-batch plan, and collation.

The plan is a pure function of (number of rows, batch size, processes, seed, pass), so the
reference pass can walk exactly the micro-batches that the first training pass will use
(same rows together, same padding), which makes the ratio exactly 1 at step 0.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sequence:
    """One tokenized prompt + completion; loss positions are the completion tokens."""

    input_ids: list[int]
    n_prompt: int


def sequence_of(prompt_ids: list[int], completion_ids: list[int], max_length: int) -> Sequence:
    """Prompt ids + completion ids cut to max_length. A prompt that leaves no room is cut
    from the left to half of max_length."""
    if len(prompt_ids) >= max_length:
        prompt_ids = prompt_ids[-(max_length // 2):]
    return Sequence(list(prompt_ids + completion_ids)[:max_length], len(prompt_ids))


def tokenize_pair(tokenizer: Any, prompt: str, completion: str, finish_reason: str,
                  max_length: int) -> Sequence:
    """Pre-samples written without token ids: the texts tokenized again (+ EOS when the
    sample stopped by itself). Not always the sampled sequence: a decode/encode round trip
    can differ, and the sample may have ended with an end-of-turn token other than EOS."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if finish_reason == "stop" and tokenizer.eos_token_id is not None:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    return sequence_of(prompt_ids, completion_ids, max_length)


def _sequence(tokenizer: Any, row: dict, sample: dict, max_length: int) -> Sequence:
    """The exact sampled tokens (prompt ids as generated from, completion ids including
    the token that ended it) when the pre-samples have them, else the texts again."""
    if "prompt_token_ids" in row and "token_ids" in sample:
        return sequence_of(row["prompt_token_ids"], sample["token_ids"], max_length)
    return tokenize_pair(tokenizer, row["prompt"], sample["completion"],
                         sample["finish_reason"], max_length)


def tokenize_rows(tokenizer: Any, rows: list[dict], max_length: int) -> list[dict[str, Sequence]]:
    """Each row's `chosen` sequence (its completion) and, for DPO rows, `rejected`."""
    legacy = sum("token_ids" not in row or "prompt_token_ids" not in row for row in rows)
    if legacy:
        logger.warning("%d of %d training samples have no token ids (pre-sampled by an older "
                       "version): their texts are tokenized again, which may not give the "
                       "sampled tokens; pre-sample again for exact ratios", legacy, len(rows))
    items = []
    for row in rows:
        item = {"chosen": _sequence(tokenizer, row, row, max_length)}
        if "rejected" in row:
            item["rejected"] = _sequence(tokenizer, row, row["rejected"], max_length)
        items.append(item)
    return items


# ------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class BatchPlan:
    """Micro-batches of row indices for each training pass, per process.

    Every process gets the same number of micro-batches per pass; rows are wrapped around
    to fill the last ones. Training runs `total_micro` micro-batches, a whole number of
    optimizer steps (the last step is filled from the start of the next pass).
    """

    n_rows: int
    batch_size: int
    world_size: int
    grad_accum: int
    seed: int
    epochs: float

    @property
    def micro_per_pass(self) -> int:
        return math.ceil(self.n_rows / (self.batch_size * self.world_size))

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(math.ceil(self.epochs * self.micro_per_pass) / self.grad_accum))

    @property
    def total_micro(self) -> int:
        return self.total_steps * self.grad_accum

    def pass_order(self, pass_idx: int) -> list[int]:
        """The shuffled row order of one pass, padded (wrapped) to fill every micro-batch."""
        gen = torch.Generator().manual_seed(self.seed * 1000 + pass_idx)
        order = torch.randperm(self.n_rows, generator=gen).tolist()
        need = self.micro_per_pass * self.batch_size * self.world_size
        while len(order) < need:
            order += order[: need - len(order)]
        return order

    def micro_batch(self, j: int, rank: int) -> list[int]:
        """Row indices of global micro-batch number j (0-based, across passes) on `rank`."""
        pass_idx, i = divmod(j, self.micro_per_pass)
        order = self.pass_order(pass_idx)
        start = (i * self.world_size + rank) * self.batch_size
        return order[start:start + self.batch_size]

    def epoch_of(self, j: int) -> float:
        return j / self.micro_per_pass


def collate(seqs: list[Sequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / completion_mask, all [B, T_max]."""
    width = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    comp = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        n = len(s.input_ids)
        ids[b, :n] = torch.tensor(s.input_ids, dtype=torch.long)
        attn[b, :n] = 1
        comp[b, s.n_prompt:n] = 1
    return {"input_ids": ids, "attention_mask": attn, "completion_mask": comp}


def make_batch(items: list[dict[str, Sequence]], indices: list[int], pad_id: int,
               pairs: bool) -> dict[str, torch.Tensor]:
    """The model input of one micro-batch; for DPO, chosen rows then rejected rows."""
    seqs = [items[i]["chosen"] for i in indices]
    if pairs:
        seqs += [items[i]["rejected"] for i in indices]
    return collate(seqs, pad_id)
