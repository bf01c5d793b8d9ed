"""Finding a completion's final answer (strict mode), and the equivalence check with the gold.

Strict extraction (METHOD.md): the last brace-matched ``\\boxed{}`` (or ``\\fbox{}``), else
the last GSM8K ``#### N``; nothing else. A generation whose last box is never closed has
no answer (the box before it is one the model moved on from), and a ``####`` followed by a
word ("#### Step 2: add 5") is a markdown heading, not an answer. A truncated generation
(it hit the token limit) has an answer only if its last box was closed before the limit:
an answer stated on the way ("so the answer is 12. But wait...") is not a final answer.

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
_HASHES_RE = re.compile(r"(?<!#)####(?!#)[ \t]*([^\n]*)")
_HEADING_RE = re.compile(r"[A-Za-z]{2,}")  # "#### Step 2: add 5": a markdown heading
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
    """Every box in order of position: (position, content: "" when empty, None when never
    closed)."""
    match = _matching_braces(text) if "{" in text else {}
    boxes: list[tuple[int, str | None]] = []
    for m in _BOXED_RE.finditer(text):
        brace = m.end() - 1
        end = match.get(brace)
        boxes.append((m.start(), None if end is None else text[brace + 1:end].strip()))
    boxes += [(m.start(), m.group(1)) for m in _BOXED_BARE_RE.finditer(text)]
    return sorted(boxes)


def last_boxed(text: str) -> str | None:
    """Content of the last non-empty box; None when there is none, or when the last box
    is never closed (an answer the model abandoned: the box before it is not its answer).
    Empty boxes (an echoed "put your answer in \\boxed{}") are passed over."""
    for _, content in reversed(_boxes(text)):
        if content is None:
            return None
        if content:
            return content
    return None


def ends_in_unclosed_box(text: str) -> bool:
    """The last box of `text` is never closed (its generation has no boxed answer)."""
    boxes = [content for _, content in _boxes(text) if content != ""]
    return bool(boxes) and boxes[-1] is None


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
    """The strict final answer: the last `\\boxed{}` if closed, else the last `#### N` that
    is not a heading (after the last box, if that one is unclosed); for a truncated
    generation only a last box that was closed before the limit."""
    if truncated:
        boxes = _boxes(completion)
        return boxes[-1][1] if boxes and boxes[-1][1] else None
    boxed = last_boxed(completion)
    if boxed:
        return boxed
    boxes = [at for at, content in _boxes(completion) if content != ""]
    after = boxes[-1] if boxes else 0  # past an abandoned (unclosed) last box
    found = [_clean(m.group(1)) for m in _HASHES_RE.finditer(completion, after)]
    found = [f for f in found if f and not _HEADING_RE.match(f)]
    return found[-1] if found else None


# ---------------------------------------------------------------------- equivalence
_SPACES = re.compile(r"\s+")
_NUMBER_WITH_COMMAS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER_WITH_UNIT = re.compile(  # "18 dollars", "5\\text{ cm}": keep the number
    r"(-?(?:\d+\.?\d*|\.\d+))(?:\s+|\s*\\text\{\s*)([A-Za-z]{2,}[A-Za-z ]*)\}?\.?"
)
#: Words after a number that change its value or make it a bound, never a unit: "5 or
#: more", "2 pi", "3 million" are not 5, 2 and 3. (Counted units stay units: "3 quarters",
#: "5 dozen", "2 times", "50 percent" are graded as 3, 5, 2 and 50, as GSM8K's answers are.)
_NOT_UNITS = frozenset({
    "or", "and", "more", "less", "fewer", "than", "least", "most", "over", "under", "plus",
    "minus", "divided", "pi", "hundred", "hundreds", "thousand", "thousands", "million",
    "millions", "billion", "billions", "trillion", "trillions", "squared", "cubed", "sqrt",
    "power", "half", "thirds", "infinity",
})


def _strip_delims(s: str) -> str:
    """Drop one pair of math delimiters around the whole answer: `$5$` -> `5`."""
    s = s.strip()
    for left, right in _DELIMS:
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left):-len(right)].strip()
    return s


def normalize_answer(answer: str) -> str:
    """Remove the trivia math-verify does not: delimiters, `\\$`, a final `.`, thousands
    separators in a plain number, unit words after a number (not words that change its
    value: "5 or more", "2 pi", "3 million" are kept whole); escape a bare `%`."""
    s = _strip_delims(answer).rstrip(".").strip()
    s = s.replace("\\$", "").replace("$", "").replace("{,}", "").replace("\\!", "")
    s = re.sub(r"(?<!\\)%", r"\\%", s)
    if _NUMBER_WITH_COMMAS.fullmatch(s):
        s = s.replace(",", "")
    unit = _NUMBER_WITH_UNIT.fullmatch(s)
    if unit and not _NOT_UNITS.intersection(unit.group(2).lower().split()):
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
    """Standard mode: the last box when there is one (math-verify would read several boxes
    as one set; an unclosed last box is no answer), else math-verify's own extraction from
    the whole answer text (LaTeX, then plain expressions), then the same equivalence.
    Returns (correct, the extracted answer as matched)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    boxed = last_boxed(text)
    if boxed:
        return verify_answer(boxed, gold, timeout), boxed
    if ends_in_unclosed_box(text):
        return False, None  # math-verify would read the box before it: an abandoned answer
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    pred: list[Any] = parse(text, extraction_config=config, parsing_timeout=timeout)
    if not pred:
        return False, None
    extracted = str(pred[-1]) if isinstance(pred[-1], str) else str(pred[0])
    if _EQUATION_RE.search(gold) and not _EQUATION_RE.search(extracted):
        equation = _equation_ending_in(text, extracted)
        if equation is not None:  # compared whole: its left-hand side is part of the answer
            return verify_answer(equation, gold, timeout), equation
    if verify_answer(extracted, gold, timeout):
        return True, extracted
    gold_parsed = _gold(gold, timeout)
    return bool(gold_parsed and verify(gold_parsed, pred, timeout_seconds=timeout)), extracted


_EQUATION_RE = re.compile(r"(?<![<>!\\:=])=(?!=)")  # an `=`, not <=, >=, !=, \=, :=, ==
_EQUATION_START_RE = re.compile(r"\n|\$|\\\(|\\\[|[:;,]\s|\.\s")
_LEADING_WORD_RE = re.compile(r"[A-Za-z]{2,}\s+")


def _equation_ending_in(text: str, extracted: str) -> str | None:
    """`lhs = extracted` when the text's last `extracted` is the right-hand side of an
    equation (math-verify's extraction keeps only a bare value or fraction there, and then
    compares it with a gold equation's right-hand side: `\\cos(x)=\\frac{42}{59}` would
    equal the gold `\\sin(x)=\\frac{42}{59}`), else None. The left-hand side runs from
    the start of the line, formula or clause, without leading words ("so x" -> "x")."""
    value = extracted.rstrip(".").strip()
    at = text.rfind(value) if value else -1
    before = text[:at].rstrip() if at > 0 else ""
    if not before.endswith("=") or before[-2:-1] in ("<", ">", "!", "\\", ":", "="):
        return None
    lhs = before[:-1]
    starts = [m.end() for m in _EQUATION_START_RE.finditer(lhs)]
    lhs = lhs[starts[-1] if starts else 0:].strip()
    while (word := _LEADING_WORD_RE.match(lhs)) and word.end() < len(lhs):
        lhs = lhs[word.end():]
    return f"{lhs} = {value}" if lhs else None
