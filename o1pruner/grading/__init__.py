"""Answer grading: find a completion's final answer and check it against the gold answer.

Two modes (`presample.grading`, `eval.grading`, `o1pruner grade --mode`):

- `strict` (default; METHOD.md): the last brace-matched `\\boxed{}`, else GSM8K `#### N`;
  nothing else. Fits models prompted to box their answer (R1 distills, QwQ, Qwen, the
  paper's models): an answer stated on the way is never taken for the final one.
- `standard`: math-verify's own extraction (boxed answers first, then LaTeX and plain
  expressions: "The final answer is $\\frac{1}{2}$.", "Therefore $x \\geq 5$."), as the
  field's evaluation harnesses grade. Fits models that do not box reliably (base models,
  instruct models without a boxing instruction), and comparisons with published numbers.

In both, a generation that hit the token limit has an answer only if its last box was
closed before the limit (a truncated "so the answer is 12. But wait" is wrong), a finished
generation whose last box is never closed has no answer (not the box before it), and a
generation cut off inside its thinking has no answer at all (the caller passes only the
text after the closing think tag; see `o1pruner.thinking`).

Equivalence is math-verify's, in killable worker processes (`o1pruner.grading.workers`).
`GRADER_VERSION` is part of every cached evaluation's key: a grading change re-grades.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

from o1pruner.grading.extract import extract_answer, normalize_answer, verify_answer, verify_text
from o1pruner.grading.files import GradeSummary, grade_file
from o1pruner.grading.workers import verify_in_workers
from o1pruner.spec import Grading

logger = logging.getLogger(__name__)

# 3: an unclosed last box is no answer (was: the box before it); `#### Word...` is a heading,
#    not an answer; "5 or more", "2 pi", "3 million" are not stripped to their number
GRADER_VERSION = 3
GradingMode = Grading  # the spec's field type: the modes are defined there, once
GRADING_MODES: tuple[str, ...] = get_args(Grading)
SMALL_BATCH = 16  # fewer items than this are verified by a single worker process

__all__ = ["GRADER_VERSION", "GRADING_MODES", "GradeResult", "GradeSummary", "extract_answer",
           "grade", "grade_file", "grade_many", "is_correct", "normalize_answer"]


@dataclass(frozen=True)
class GradeResult:
    """One graded item: the final answer found (None if none) and whether it is right."""

    extracted: str | None
    correct: bool
    timed_out: bool = False  # verification ran past the time limit (graded wrong)


def _job(completion: str, mode: str, truncated: bool) -> tuple[str, str] | None:
    """(kind, payload) for a worker, or None when the completion has no answer."""
    if mode not in GRADING_MODES:
        raise ValueError(f"grading mode {mode!r}: expected one of {', '.join(GRADING_MODES)}")
    if mode == "strict" or truncated:
        answer = extract_answer(completion, truncated)
        return ("answer", answer) if answer else None
    return ("text", completion) if completion.strip() else None


def grade(completion: str, gold: str, mode: GradingMode = "strict",
          truncated: bool = False) -> GradeResult:
    """Grade one completion in this process. math-verify's own 5 s limits apply on the main
    thread only, and cannot stop sympy inside C code: for model output use `grade_many`."""
    job = _job(completion, mode, truncated)
    if job is None:
        return GradeResult(None, False)
    kind, payload = job
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    extracted: str | None = payload if kind == "answer" else None
    try:
        if kind == "answer":
            ok = verify_answer(payload, str(gold), timeout)
        else:
            ok, extracted = verify_text(payload, str(gold), timeout)
    except Exception:  # noqa: BLE001 - a parser failure means "not shown equal"
        logger.debug("verification failed for %r", payload[:200], exc_info=True)
        ok = False
    return GradeResult(extracted, ok)


def is_correct(completion: str, gold: str, mode: GradingMode = "strict") -> bool:
    """True if the completion's final answer equals the gold answer."""
    return grade(completion, gold, mode).correct


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def grade_many(completions: Sequence[str], golds: Sequence[str], workers: int | None = None,
               timeout: float = 5.0, mode: GradingMode = "strict",
               truncated: Sequence[bool] | None = None) -> list[GradeResult]:
    """Grade many completions in parallel processes, in input order. `truncated[i]`: the
    completion hit the token limit. An item whose verification takes longer than `timeout`
    seconds is graded wrong (its worker is killed and replaced), so one pathological answer
    never stalls the batch."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    cut = list(truncated) if truncated is not None else [False] * len(completions)
    if len(cut) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(cut)} truncation flags")
    planned = [_job(c, mode, t) for c, t in zip(completions, cut, strict=True)]
    jobs = {i: (kind, payload, str(golds[i])) for i, job in enumerate(planned) if job
            for kind, payload in [job]}
    verdicts: dict[int, tuple[bool, str | None]] = {}
    failed: set[int] = set()
    if jobs:
        n = 1 if len(jobs) < SMALL_BATCH else max(1, min(workers or _cpu_count(), len(jobs)))
        verdicts, failed = verify_in_workers(jobs, n, timeout)
    results = []
    for i, job in enumerate(planned):
        if job is None:
            results.append(GradeResult(None, False))
            continue
        ok, extracted = verdicts.get(i, (False, job[1] if job[0] == "answer" else None))
        results.append(GradeResult(extracted, ok, i in failed))
    return results
