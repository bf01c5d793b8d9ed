"""Text from data sets, models and files, shown inside the studio's own markdown as text.

A gr.Markdown renders HTML (it strips scripts, not images or forms) and markdown (images,
links), so a problem, a gold answer or a completion written into it could load an outside
image or show a form posting elsewhere. Here every ASCII punctuation character is
backslash-escaped, which CommonMark shows as the character itself: no tag, image, link,
autolink, heading or code span can form, and a backtick in a gold answer is a backtick.
Our own markdown (bold labels, layout) is written around the escaped text. Long texts go
to text components (gr.Textbox) instead.
"""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def as_text(value: object, limit: int | None = None) -> str:
    """`value` as markdown that shows exactly its text; line breaks are kept, and at most
    `limit` characters are shown (then "...")."""
    text = str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    escaped = _PUNCTUATION.sub(r"\\\1", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "  \n".join(escaped.split("\n"))


def inline(value: object, limit: int | None = 200) -> str:
    """`value` on one line (runs of white space made one space), as text, in a code font:
    for a gold answer, an extracted answer or a name inside a line of ours."""
    return f"<code>{as_text(' '.join(str(value).split()), limit)}</code>"


_MARKUP = re.compile(r"([\\`<>&\[\]])")


def no_markup(value: object) -> str:
    """A message of ours that quotes a value from a file (`got '<value>'`): the characters
    that could form a tag, an image, a link or a code span are escaped; the rest reads as
    written."""
    return _MARKUP.sub(r"\\\1", str(value))


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[str | int]:
    """A sort key that reads the numbers in a name as numbers: `step-3` before `step-12`
    (text and numbers alternate, so each is compared with its own kind)."""
    return [int(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(name))]
