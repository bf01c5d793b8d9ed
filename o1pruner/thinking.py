"""Thinking and answer: where a long-thought model's reasoning ends, counted in tokens.

Reasoning models write a thinking block, then the answer: DeepSeek-R1 distills and QwQ
after a `<think>` their chat template opens in the generation prompt, Qwen3 after one it
writes itself (its template has an `enable_thinking` switch). A completion is split at its
first closing tag `</think>`, found by token ids (the generated ids, never re-tokenized
text): `thinking_tokens` up to and including the tag, `answer_tokens` after it.

`model.thinking` says whether completions think:
- `auto` (default): they do when the generation prompt ends inside an opened `<think>`
  (R1-style templates), or the chat template has Qwen3's `enable_thinking` switch (its
  default is to think), or the completion itself starts with `<think>`;
- `on`: they do (and a switch template is asked to think);
- `off`: they do not (a switch template is asked not to; an R1-style template always
  opens the block, so leave such models on `auto`).

A completion that thinks but never closes its thinking (cut off at the token limit, or
stopped inside it) has no answer: it is graded wrong, and all its tokens are thinking.
A completion of a model that does not think is all answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

from o1pruner.spec import ModelSpec

logger = logging.getLogger(__name__)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THINKING_MODES: tuple[str, ...] = get_args(ModelSpec.model_fields["thinking"].annotation)
SWITCH = "enable_thinking"


def template_kwargs(tokenizer: Any, mode: str) -> dict[str, Any]:
    """Extra arguments for apply_chat_template: Qwen3's switch when the template has one
    and the mode is not `auto` (auto keeps the template's own default)."""
    if mode != "auto" and SWITCH in (getattr(tokenizer, "chat_template", None) or ""):
        return {SWITCH: mode == "on"}
    return {}


def _tag_ids(tokenizer: Any, tag: str) -> tuple[int, ...]:
    """The tag's token id when the vocabulary has it as one token, else its encoding."""
    vocab = tokenizer.get_vocab()
    if tag in vocab:
        return (vocab[tag],)
    return tuple(tokenizer(tag, add_special_tokens=False)["input_ids"])


def _find(ids: Sequence[int], part: Sequence[int]) -> int:
    n = len(part)
    if not n:
        return -1
    first = part[0]
    for i in range(len(ids) - n + 1):
        if ids[i] == first and list(ids[i:i + n]) == list(part):
            return i
    return -1


@dataclass(frozen=True)
class Measured:
    """One completion split into thinking and answer."""

    thinking_tokens: int
    answer_tokens: int
    answer_start: int  # index into the generated ids where the answer begins
    in_thinking: bool  # it thinks and never closed its thinking: it has no answer


@dataclass(frozen=True)
class ThinkingFormat:
    """How completions of one model and prompt are split."""

    open_ids: tuple[int, ...]
    close_ids: tuple[int, ...]
    expected: bool  # completions start inside a thinking block

    @classmethod
    def detect(cls, tokenizer: Any, mode: str, prompt: str) -> ThinkingFormat:
        """The format for completions of `prompt` (a rendered generation prompt)."""
        if mode not in THINKING_MODES:
            raise ValueError(f"model.thinking: expected one of {', '.join(THINKING_MODES)}; "
                             f"got {mode!r}")
        opened = prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)
        has_switch = SWITCH in (getattr(tokenizer, "chat_template", None) or "")
        if mode == "auto":
            expected = opened or (has_switch and not prompt.rstrip().endswith(THINK_CLOSE))
        else:
            expected = mode == "on"
        return cls(_tag_ids(tokenizer, THINK_OPEN), _tag_ids(tokenizer, THINK_CLOSE), expected)

    def measure(self, token_ids: Sequence[int]) -> Measured:
        """Split generated ids at the first closing tag."""
        n = len(token_ids)
        close = _find(token_ids, self.close_ids)
        if close >= 0:
            end = close + len(self.close_ids)
            return Measured(end, n - end, end, False)
        if self.expected or (self.open_ids and list(token_ids[:len(self.open_ids)])
                             == list(self.open_ids)):
            return Measured(n, 0, n, True)
        return Measured(0, n, 0, False)

    def answer_text(self, tokenizer: Any, token_ids: Sequence[int], text: str,
                    measured: Measured) -> str:
        """The text to grade: what follows the thinking ("" when it never closed)."""
        if measured.in_thinking:
            return ""
        if measured.answer_start == 0:
            return text
        return tokenizer.decode(list(token_ids[measured.answer_start:]),
                                skip_special_tokens=True)


def split_completions(tokenizer: Any, mode: str, prompts: Sequence[str],
                      completions: Sequence[Any]) -> list[tuple[Measured, str]]:
    """(measured, answer text) of each completion (`completions[i]` answers
    `prompts[i]`; each has `token_ids` and `text`)."""
    formats: dict[str, ThinkingFormat] = {}
    out = []
    for prompt, c in zip(prompts, completions, strict=True):
        fmt = formats.get(prompt) or formats.setdefault(
            prompt, ThinkingFormat.detect(tokenizer, mode, prompt))
        measured = fmt.measure(c.token_ids)
        out.append((measured, fmt.answer_text(tokenizer, c.token_ids, c.text, measured)))
    return out
