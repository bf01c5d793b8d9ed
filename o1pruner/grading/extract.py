"""Finding a completion's final answer (strict mode), and the equivalence check with the gold.

Strict extraction (METHOD.md): the last brace-matched ``\\boxed{}`` (or ``\\fbox{}``), else
the last GSM8K ``#### N``; nothing else. A truncated generation (it hit the token limit)
has an answer only if its last box was closed before the limit: an answer stated on the
way ("so the answer is 12. But wait...") is not a final answer.

Standard extraction is math-verify's own (boxed answers first, then LaTeX and plain
expressions), as the field's evaluation harnesses use it; it runs in the grading worker
processes, since parsing model text with sympy can take unbounded time.

Equivalence is math-verify's (``verify(parse(gold), parse(pred))``), fed only LaTeX so that
no model text reaches sympy's Python parser.
"""

from __future__ import annotations

import logging
import re
from typing import Any

logger = logging.getLogger(__name__)

_BRACE_RE = re.compile(r"(?<!\\)[{}]")  # braces, not the escaped \{ \} of sets
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOXED_BARE_RE = re.compile(r"\\boxed\s+([^\s${}\\]+)")  # \boxed 5
_HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")
_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _matching_braces(text: str) -> dict[int, int]:
    """Map each `{` position to its matching `}` in one linear scan (no recursion)."""
    match: dict[int, int] = {}
    stack: list[int] = []
    for brace in _BRACE_RE.finditer(text):
        if brace.group() == "{":
            stack.append(brace.start())
        elif stack:
            match[stack.pop()] = brace.start()
    return match


def _boxes(text: str) -> list[tuple[int, str | None]]:
    """Every box in order of position: (position, content, or None when never closed)."""
    match = _matching_braces(text) if "{" in text else {}
    boxes: list[tuple[int, str | None]] = []
    for m in _BOXED_RE.finditer(text):
        brace = m.end() - 1
        end = match.get(brace, brace + 1)
        boxes.append((m.start(), text[brace + 1:end].strip() if end > brace + 1 else None))
    boxes += [(m.start(), m.group(1)) for m in _BOXED_BARE_RE.finditer(text)]
    return sorted(boxes)


def last_boxed(text: str) -> str | None:
    """Content of the last closed, non-empty box (an unclosed last box falls back to the
    one before it)."""
    closed = [content for _, content in _boxes(text) if content]
    return closed[-1] if closed else None


def _clean(value: str) -> str:
    """The answer after `####`, without the rest of its sentence or its delimiters."""
    v = value.strip().strip("*").strip()
    for left, right in _DELIMS:
        if v.startswith(left):
            end = v.find(right, len(left))
            if end > 0:
                return v[len(left):end].strip()
    v = re.split(r"\.\s", v, maxsplit=1)[0]
    return v.strip().rstrip(".").strip("*").strip()


def extract_answer(completion: str, truncated: bool = False) -> str | None:
    """The strict final answer: the last closed `\\boxed{}`, else the last `#### N`; for a
    truncated generation only a last box that was closed before the limit."""
    if truncated:
        boxes = _boxes(completion)
        return boxes[-1][1] if boxes and boxes[-1][1] else None
    boxed = last_boxed(completion)
    if boxed:
        return boxed
    found = [_clean(m.group(1)) for m in _HASHES_RE.finditer(completion)]
    found = [f for f in found if f]
    return found[-1] if found else None


# ---------------------------------------------------------------------- equivalence
_SPACES = re.compile(r"\s+")
_NUMBER_WITH_COMMAS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER_WITH_UNIT = re.compile(  # "18 dollars", "5\\text{ cm}": keep the number
    r"(-?(?:\d+\.?\d*|\.\d+))(?:\s+|\s*\\text\{\s*)[A-Za-z]{2,}[A-Za-z ]*\}?\.?"
)


def _strip_delims(s: str) -> str:
    """Drop one pair of math delimiters around the whole answer: `$5$` -> `5`."""
    s = s.strip()
    for left, right in _DELIMS:
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left):-len(right)].strip()
    return s


def normalize_answer(answer: str) -> str:
    """Remove the trivia math-verify does not: delimiters, `\\$`, a final `.`, thousands
    separators in a plain number, unit words after a number; escape a bare `%`."""
    s = _strip_delims(answer).rstrip(".").strip()
    s = s.replace("\\$", "").replace("$", "").replace("{,}", "").replace("\\!", "")
    s = re.sub(r"(?<!\\)%", r"\\%", s)
    if _NUMBER_WITH_COMMAS.fullmatch(s):
        s = s.replace(",", "")
    unit = _NUMBER_WITH_UNIT.fullmatch(s)
    if unit:
        s = unit.group(1)
    return s


def _parse(latex: str, timeout: int | None) -> list:
    from math_verify import LatexExtractionConfig, parse

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    return parse(latex, extraction_config=config, parsing_timeout=timeout)


def _gold(gold: str, timeout: int | None) -> list:
    """The gold answer parsed, as given and normalised."""
    gold_norm = normalize_answer(gold)
    parsed = _parse(f"\\boxed{{{gold_norm}}}", timeout) if gold_norm else []
    if any(mark in gold for mark in ("$", "\\boxed", "\\(", "\\[")):
        parsed += _parse(gold, timeout)
    return parsed


def verify_answer(answer: str, gold: str, timeout: int | None) -> bool:
    """math-verify equivalence of an extracted answer and a gold answer. `timeout` is
    math-verify's signal-based limit (main thread only; None in worker processes)."""
    from math_verify import verify

    pred_norm, gold_norm = normalize_answer(answer), normalize_answer(gold)
    if not pred_norm or not gold_norm:
        return False
    if _SPACES.sub("", pred_norm) == _SPACES.sub("", gold_norm):
        return True  # same text: settled even where math-verify cannot parse it (set-builder)
    gold_parsed = _gold(gold, timeout)
    pred_parsed = _parse(f"\\boxed{{{pred_norm}}}", timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def verify_text(text: str, gold: str, timeout: int | None) -> tuple[bool, str | None]:
    """Standard mode: the last closed box when there is one (math-verify would read several
    boxes as one set), else math-verify's own extraction from the whole answer text (LaTeX,
    then plain expressions), then the same equivalence. Returns (correct, the extracted
    answer as matched)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    boxed = last_boxed(text)
    if boxed:
        return verify_answer(boxed, gold, timeout), boxed
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    pred: list[Any] = parse(text, extraction_config=config, parsing_timeout=timeout)
    if not pred:
        return False, None
    extracted = str(pred[-1]) if isinstance(pred[-1], str) else str(pred[0])
    if verify_answer(extracted, gold, timeout):
        return True, extracted
    gold_parsed = _gold(gold, timeout)
    return bool(gold_parsed and verify(gold_parsed, pred, timeout_seconds=timeout)), extracted
