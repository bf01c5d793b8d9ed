"""Gold answers: read a row's answer field in one of the answer formats and normalise it.

Kept apart from `o1pruner.grading` on purpose: the data layer only needs to find the
gold (the text after `####`, the last `\\boxed{}`, a float that is really an int), not to
judge whether a prediction matches it.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

logger = logging.getLogger(__name__)

ANSWER_FORMATS = ("plain", "gsm8k", "boxed")

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


class AnswerFormatError(ValueError):
    """The answer field does not hold an answer in the declared format."""


def last_boxed(text: str) -> str | None:
    """Content of the last brace-matched `\\boxed{...}` (or `\\fbox{...}`) in `text`."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text):
            char = text[i]
            if char == "\\":  # skip escaped characters such as \{ and \}
                i += 2
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
            i += 1
    return None


def strip_math_delimiters(text: str) -> str:
    """Remove `$...$` / `$$...$$` wrapping (gaokao-style golds such as `$\\{x|x<1\\}$`).

    Only when the unescaped dollar signs pair up, so a lone currency sign is kept.
    """
    text = text.strip()
    count = len(_UNESCAPED_DOLLAR.findall(text))
    if count and count % 2 == 0:
        text = _UNESCAPED_DOLLAR.sub("", text).strip()
    return text


def scalar_to_text(value: Any) -> str | None:
    """A JSON scalar as text: 27.0 -> "27", 0.5 -> "0.5", None -> None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return value
    raise AnswerFormatError(f"expected a string or a number, got {type(value).__name__}")


def extract_gold(value: Any, answer_format: str) -> str:
    """The normalised gold from an answer field's value ("" when the field is empty).

    plain: the value as text; gsm8k: text after the last `####`, commas removed;
    boxed: content of the last `\\boxed{}`. Integral floats become ints and `$` math
    delimiters are removed in every format.
    """
    text = scalar_to_text(value)
    if text is None:
        return ""
    if answer_format == "gsm8k":
        if "####" not in text:
            raise AnswerFormatError("no '####' marker (answer_format gsm8k expects the final "
                                    "answer after the last '####')")
        text = text.rsplit("####", 1)[1].replace(",", "")
    elif answer_format == "boxed":
        boxed = last_boxed(text)
        if boxed is None:
            raise AnswerFormatError("no \\boxed{...} (answer_format boxed expects a solution "
                                    "whose final answer is boxed)")
        text = boxed
    elif answer_format != "plain":
        raise AnswerFormatError(f"unknown answer_format {answer_format!r}; expected one of "
                                f"{', '.join(ANSWER_FORMATS)}")
    return strip_math_delimiters(text)
