"""`o1pruner grade`: grade a JSONL file of predictions against gold answers."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from o1pruner.errors import DataError
from o1pruner.files import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class GradeSummary:
    """What `grade_file` did, for the CLI and the logs."""

    n: int
    n_correct: int
    n_no_answer: int
    n_timed_out: int
    seconds: float
    output: Path

    def describe(self) -> str:
        rate = self.n / self.seconds if self.seconds > 0 else 0.0
        share = 100 * self.n_correct / self.n if self.n else 0.0
        text = (f"graded {self.n} items: {self.n_correct} correct ({share:.1f}%) "
                f"in {self.seconds:.1f} s ({rate:.0f} items/s) -> {self.output}")
        notes = [f"{self.n_no_answer} without an answer"] if self.n_no_answer else []
        notes += [f"{self.n_timed_out} timed out"] if self.n_timed_out else []
        return text + (f" [{', '.join(notes)}]" if notes else "")


def _read_rows(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read it ({e}); expected a UTF-8 JSONL file with "
                        "`pred` and `gold` on each line") from None
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one object "
                            "per line with `pred` and `gold`") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object with `pred` and `gold`, "
                            f"got {type(row).__name__}")
        for key in ("pred", "gold"):
            value = row.get(key)
            if value is None or isinstance(value, (bool, dict, list)):
                raise DataError(f"{path}:{lineno}: `{key}` is missing or not a string/number; "
                                "expected `pred` (completion or answer) and `gold` (answer)")
        rows.append(row)
    return rows


def grade_file(input: Path, output: Path, workers: int | None = None,
               timeout: float = 5.0, mode: str = "strict") -> GradeSummary:
    """Grade a JSONL file of {pred, gold[, truncated]} rows in `mode`; write each row plus
    `extracted` and `correct` to `output` (atomically). `truncated: true` (or
    `finish_reason: "length"`) marks a generation that hit its token limit."""
    from o1pruner.grading import grade_many

    start = time.monotonic()
    input, output = Path(input), Path(output)
    rows = _read_rows(input)
    cut = [bool(r.get("truncated")) or r.get("finish_reason") == "length" for r in rows]
    results = grade_many([str(r["pred"]) for r in rows], [str(r["gold"]) for r in rows],
                         workers=workers, timeout=timeout, mode=mode, truncated=cut)
    lines = [json.dumps({**row, "extracted": res.extracted, "correct": res.correct},
                        ensure_ascii=False) for row, res in zip(rows, results, strict=True)]
    atomic_write_text(output, "".join(line + "\n" for line in lines))
    summary = GradeSummary(
        n=len(rows), n_correct=sum(r.correct for r in results),
        n_no_answer=sum(r.extracted is None for r in results),
        n_timed_out=sum(r.timed_out for r in results),
        seconds=time.monotonic() - start, output=output)
    logger.debug(summary.describe())
    return summary
