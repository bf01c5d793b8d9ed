"""The rewards of the on-policy methods (`train.method`: grpo_length, thinkprune), as TRL
reward functions: called by GRPOTrainer with the batch's prompts, completions and
completion ids (plus the data set's columns, here `gold` and `problem_id`), one float per
completion. TRL adds the functions' rewards (weighted by `reward_weights`) and turns them
into group-relative advantages itself.

- `accuracy`: 1 when the completion's final answer equals the gold answer (our grader,
  `presample.grading`; the answer is what follows the thinking, `o1pruner.thinking`), else 0.
- `length` (grpo_length; the "length penalty" of Kimi k1.5, arXiv 2501.12599, a
  group-relative length reward as Arora & Zanette's, arXiv 2502.04463): for the G completions of one problem with lengths L_i,

      lambda_i = 0.5 - (L_i - min_j L_j) / (max_j L_j - min_j L_j)     (0 when max = min)
      r_i      = lambda_i            if completion i is correct
               = min(0, lambda_i)    if it is wrong

  so a correct completion gains up to +0.5 for being the group's shortest and loses up to
  -0.5 for being its longest, and a wrong one is never rewarded for brevity.
- `capped_accuracy` (thinkprune; ThinkPrune, arXiv 2504.01296): the accuracy reward, but 0
  for a completion that is longer than the round's token cap or did not finish (no
  end-of-turn token: cut at the cap), whatever its answer.
- DAPO's soft overlong punishment is TRL's own `get_soft_overlong_punishment`.

A completion's length is its token count including the token that ended it, as the
pre-samples count it; with `reward.length: thinking`, the length reward uses the thinking
tokens only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


def group_length_rewards(lengths: Sequence[int], correct: Sequence[bool]) -> list[float]:
    """Kimi 1.5's length reward of one group of completions of the same problem (see the
    module docstring): lambda_i = 0.5 - (L_i - min L) / (max L - min L), kept for correct
    completions, min(0, lambda_i) for wrong ones; all 0 when every length is the same."""
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(lengths)
    lam = [0.5 - (n - lo) / (hi - lo) for n in lengths]  # in [-0.5, 0.5]
    return [x if ok else min(0.0, x) for x, ok in zip(lam, correct, strict=True)]


def capped_accuracy(correct: bool, finished: bool, num_tokens: int, cap: int) -> float:
    """ThinkPrune's reward: 1 for a correct answer that finished within the cap, else 0."""
    return 1.0 if correct and finished and num_tokens <= cap else 0.0


@dataclass(frozen=True)
class Judged:
    """One graded completion."""

    num_tokens: int  # with the token that ended it
    thinking_tokens: int
    finished: bool  # ended by an end-of-turn / EOS token (not cut at the token limit)
    correct: bool


class CompletionJudge:
    """Grades a batch of completions once for all the reward functions of a step (TRL calls
    each function with the same batch; the last batch's verdicts are kept)."""

    def __init__(self, tokenizer: Any, thinking: str, grading: str, stop_ids: Sequence[int]):
        self.tokenizer, self.thinking, self.grading = tokenizer, thinking, grading
        self.stop_ids = frozenset(stop_ids)
        self._key: tuple | None = None
        self._verdicts: list[Judged] = []

    def judge(self, prompts: Sequence[str], completion_ids: Sequence[Sequence[int]],
              golds: Sequence[str]) -> list[Judged]:
        from o1pruner.grading import grade_many
        from o1pruner.thinking import ThinkingFormat

        key = (tuple(prompts), tuple(tuple(ids) for ids in completion_ids), tuple(golds))
        if key == self._key:
            return self._verdicts
        formats: dict[str, ThinkingFormat] = {}
        answers, measures, finished = [], [], []
        for prompt, ids in zip(prompts, completion_ids, strict=True):
            fmt = formats.get(prompt) or formats.setdefault(
                prompt, ThinkingFormat.detect(self.tokenizer, self.thinking, prompt))
            measured = fmt.measure(ids)
            text = self.tokenizer.decode(list(ids), skip_special_tokens=True)
            answers.append(fmt.answer_text(self.tokenizer, ids, text, measured))
            measures.append(measured)
            finished.append(bool(ids) and ids[-1] in self.stop_ids)
        grades = grade_many(answers, [str(g) for g in golds], mode=self.grading,
                            truncated=[not f for f in finished])
        self._verdicts = [
            Judged(len(ids), m.thinking_tokens, f, bool(g.correct and g.extracted is not None))
            for ids, m, f, g in zip(completion_ids, measures, finished, grades, strict=True)]
        self._key = key
        return self._verdicts


class AccuracyReward:
    """1 for a correct final answer, else 0 (`rewards/accuracy/mean` in the metrics)."""

    __name__ = "accuracy"

    def __init__(self, judge: CompletionJudge):
        self.judge = judge

    def __call__(self, prompts: list[str], completion_ids: list[list[int]], gold: list[str],
                 **_: Any) -> list[float]:
        return [float(j.correct) for j in self.judge.judge(prompts, completion_ids, gold)]


class CappedAccuracyReward:
    """thinkprune: accuracy, 0 past the token cap or without finishing."""

    __name__ = "capped_accuracy"

    def __init__(self, judge: CompletionJudge, cap: int):
        self.judge, self.cap = judge, cap

    def __call__(self, prompts: list[str], completion_ids: list[list[int]], gold: list[str],
                 **_: Any) -> list[float]:
        return [capped_accuracy(j.correct, j.finished, j.num_tokens, self.cap)
                for j in self.judge.judge(prompts, completion_ids, gold)]


class GroupLengthReward:
    """grpo_length: Kimi 1.5's length reward over each group of `group_size` completions.

    TRL lays a step's completions out problem by problem, G at a time, and with several
    processes splits that list between them in rank order (it groups the gathered rewards
    the same way); the lengths are gathered so that each group is whole."""

    __name__ = "length"

    def __init__(self, judge: CompletionJudge, group_size: int, length: str = "total"):
        self.judge, self.group_size, self.length = judge, group_size, length

    def __call__(self, prompts: list[str], completion_ids: list[list[int]], gold: list[str],
                 problem_id: list[Any] | None = None, **_: Any) -> list[float]:
        verdicts = self.judge.judge(prompts, completion_ids, gold)
        ids = list(problem_id) if problem_id is not None else list(prompts)
        local = [((j.thinking_tokens if self.length == "thinking" else j.num_tokens),
                  j.correct, str(pid)) for j, pid in zip(verdicts, ids, strict=True)]
        everyone, offset = _gather(local)
        g = self.group_size
        if len(everyone) % g:
            raise RuntimeError(f"length reward: {len(everyone)} completions are not groups of {g}")
        rewards: list[float] = []
        for start in range(0, len(everyone), g):
            group = everyone[start:start + g]
            if len({pid for _, _, pid in group}) != 1:
                raise RuntimeError("length reward: a group of completions mixes problems "
                                   f"{sorted({pid for _, _, pid in group})}")
            rewards += group_length_rewards([n for n, _, _ in group], [c for _, c, _ in group])
        return rewards[offset:offset + len(local)]


def _gather(local: list[tuple]) -> tuple[list[tuple], int]:
    """Every process's items in rank order, and where this process's begin."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return local, 0
    from accelerate.utils import gather_object

    parts = gather_object([local])  # one list per process, in rank order
    offset = sum(len(p) for p in parts[:state.process_index])
    return [item for part in parts for item in part], offset
