"""Answer grading: find a completion's final answer and check it against the gold answer.

Extraction is ours (last brace-matched ``\\boxed{}``, GSM8K ``#### N``, "the answer is X"
phrases, a short bare answer); equivalence is math-verify's (``verify(parse(gold),
parse(pred))``), fed only LaTeX so that no model text reaches sympy's Python parser.

Model text can make sympy work forever (``9^{9^{9^{9}}}``) or recurse very deep, inside
C code no signal can interrupt. So `grade_many` verifies in worker processes that the
parent kills and replaces when an item runs past its time limit: that item is graded
wrong and the batch goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from o1pruner.errors import DataError
from o1pruner.files import atomic_write_text

logger = logging.getLogger(__name__)

SMALL_BATCH = 16  # fewer items than this are verified by a single worker process
_START_TIMEOUT_S = 120.0  # a worker process that is not ready by then is a broken setup


@dataclass(frozen=True)
class GradeResult:
    """One graded item: the final answer found (None if none) and whether it is right."""

    extracted: str | None
    correct: bool
    timed_out: bool = False  # verification ran past the time limit (graded wrong)


# ------------------------------------------------------------------------ extraction
_BRACE_RE = re.compile(r"(?<!\\)[{}]")  # braces, not the escaped \{ \} of sets
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOXED_BARE_RE = re.compile(r"\\boxed\s+([^\s${}\\]+)")  # \boxed 5
_HASHES_RE = re.compile(r"####[ \t]*([^\n]*)")
_PHRASE_RE = re.compile(
    r"(?:\banswer\s*(?:is\s*:?|:)|^[ \t]*A[ \t]*:)[ \t]*(?P<v>[^\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")


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


def _last_boxed(text: str) -> str | None:
    starts = [m.end() - 1 for m in _BOXED_RE.finditer(text)]
    if starts:
        match = _matching_braces(text)
        for brace in reversed(starts):
            if match.get(brace, brace + 1) > brace + 1:  # closed and not empty
                return text[brace + 1 : match[brace]].strip()
    bare = _BOXED_BARE_RE.findall(text)
    return bare[-1] if bare else None


def _strip_delims(s: str) -> str:
    """Drop one pair of math delimiters around the whole answer: `$5$` -> `5`."""
    s = s.strip()
    for left, right in _DELIMS:
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left) : -len(right)].strip()
    return s


def _clean_phrase(value: str) -> str:
    """Cut the answer out of the rest of the sentence that follows "the answer is"."""
    v = value.strip().strip("*").strip()
    for left, right in _DELIMS:
        if v.startswith(left):
            end = v.find(right, len(left))
            if end > 0:
                return v[len(left) : end].strip()
    v = re.split(r"\.\s|\s+I hope", v, maxsplit=1)[0]
    return v.strip().rstrip(".").strip("*").strip()


def _looks_like_bare_answer(s: str) -> bool:
    return 0 < len(s) <= 60 and "\n" not in s and len(_WORD_RE.findall(s)) <= 1


def extract_answer(completion: str) -> str | None:
    """The completion's final answer: the last `\\boxed{}`, else GSM8K `#### N`, else an
    "answer is X" / "answer: X" / "A: X" phrase, else the text itself if it is short."""
    boxed = _last_boxed(completion)
    if boxed:
        return boxed
    for finder in (_HASHES_RE, _PHRASE_RE):
        found = [_clean_phrase(m.group(1)) for m in finder.finditer(completion)]
        found = [f for f in found if f]
        if found:
            return found[-1]
    text = completion.strip()
    if _looks_like_bare_answer(text):
        return _strip_delims(text).rstrip(".").strip() or None
    return None


# ---------------------------------------------------------------------- equivalence
_SPACES = re.compile(r"\s+")
_NUMBER_WITH_COMMAS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER_WITH_UNIT = re.compile(  # "18 dollars", "5\\text{ cm}": keep the number
    r"(-?(?:\d+\.?\d*|\.\d+))(?:\s+|\s*\\text\{\s*)[A-Za-z]{2,}[A-Za-z ]*\}?\.?"
)


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


def _verify_answer(answer: str, gold: str, timeout: int | None) -> bool:
    """math-verify equivalence of an extracted answer and a gold answer (gold tried both as
    given and normalised). `timeout` is math-verify's signal-based limit (main thread only)."""
    from math_verify import verify

    pred_norm, gold_norm = normalize_answer(answer), normalize_answer(gold)
    if not pred_norm or not gold_norm:
        return False
    if _SPACES.sub("", pred_norm) == _SPACES.sub("", gold_norm):
        return True  # same text: settled even where math-verify cannot parse it (set-builder)
    gold_parsed = _parse(f"\\boxed{{{gold_norm}}}", timeout)
    if any(mark in gold for mark in ("$", "\\boxed", "\\(", "\\[")):
        gold_parsed += _parse(gold, timeout)
    pred_parsed = _parse(f"\\boxed{{{pred_norm}}}", timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def grade(completion: str, gold: str) -> GradeResult:
    """Grade one completion in this process. math-verify's own 5 s limits apply on the main
    thread only, and cannot stop sympy inside C code: for model output use `grade_many`."""
    extracted = extract_answer(completion)
    if extracted is None:
        return GradeResult(None, False)
    on_main = threading.current_thread() is threading.main_thread()
    try:
        ok = _verify_answer(extracted, str(gold), timeout=5 if on_main else None)
    except Exception:  # noqa: BLE001 - a parser failure means "not shown equal"
        logger.debug("verification failed for %r", extracted, exc_info=True)
        ok = False
    return GradeResult(extracted, ok)


def is_correct(completion: str, gold: str) -> bool:
    """True if the completion's final answer equals the gold answer."""
    return grade(completion, gold).correct


# --------------------------------------------------------------------- worker pool
def _worker_main() -> None:
    """Worker process: read `[index, answer, gold]` JSON lines on stdin, answer
    `[index, correct]` lines on stdout; the parent kills it when an item takes too long."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _verify_answer("1", "2", timeout=None)  # load math-verify's parser before taking jobs
    protocol.write('"ready"\n')
    protocol.flush()
    for line in sys.stdin:
        index, answer, gold = json.loads(line)
        try:
            ok = _verify_answer(answer, gold, timeout=None)
        except Exception:  # noqa: BLE001 - a parser failure means "not shown equal"
            ok = False
        protocol.write(json.dumps([index, ok]) + "\n")
        protocol.flush()


class _Worker:
    """A killable grading process, started with `python -c` so that it never re-runs the
    caller's `__main__` (unlike multiprocessing's spawn) nor forks a threaded parent."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from o1pruner.grading import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.born = time.monotonic()
        self.ready = False
        self.job: int | None = None
        self.deadline = 0.0

    def send(self, job: int, answer: str, gold: str) -> None:
        self.job, self.deadline = job, time.monotonic() + self.timeout
        self.proc.stdin.write((json.dumps([job, answer, gold]) + "\n").encode())
        self.proc.stdin.flush()

    def read_lines(self) -> list | None:
        """Messages that arrived (None once the process has closed its output)."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return None
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        return [json.loads(line) for line in lines]

    def stop(self, kill: bool = False) -> None:
        try:
            self.proc.stdin.close()  # end of input: the worker's loop ends
        except OSError:
            pass
        try:
            self.proc.wait(0 if kill else 2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def _verify_in_workers(jobs: dict[int, tuple[str, str]], n_workers: int,
                       timeout: float) -> tuple[dict[int, bool], set[int]]:
    """Verify jobs {index: (answer, gold)} in killable processes; returns the verdicts and
    the indices that ran past `timeout` seconds (or crashed their worker)."""
    pending = deque(jobs)
    verdicts: dict[int, bool] = {}
    failed: set[int] = set()
    start_failures = 0
    workers = [_Worker(timeout) for _ in range(n_workers)]
    try:
        while pending or any(w.job is not None for w in workers):
            for w in workers:
                if w.ready and w.job is None and pending:
                    index = pending.popleft()
                    try:
                        w.send(index, *jobs[index])
                    except OSError:  # it died while idle: retry the item elsewhere
                        w.job = None
                        pending.appendleft(index)
            now = time.monotonic()
            deadlines = [w.deadline - now for w in workers if w.job is not None]
            readable = wait([w.fd for w in workers], timeout=max(0.0, min(deadlines or [1.0])))
            for w in workers:
                messages = w.read_lines() if w.fd in readable else []
                if messages is None:  # it died (e.g. out of stack or memory)
                    w.proc.wait()
                for msg in messages or []:
                    if msg == "ready":
                        w.ready = True
                    elif msg[0] == w.job:
                        verdicts[w.job], w.job = bool(msg[1]), None
            now = time.monotonic()
            for i, w in enumerate(workers):
                late = w.job is not None and now > w.deadline
                slow_start = not w.ready and now - w.born > _START_TIMEOUT_S
                if not (late or slow_start or w.proc.poll() is not None):
                    continue
                if w.job is not None:
                    logger.warning("grading item %d %s; graded wrong", w.job,
                                   "timed out" if late else "crashed its worker")
                    failed.add(w.job)
                elif not w.ready:
                    start_failures += 1
                    if start_failures > 3:
                        raise RuntimeError("grading worker processes fail to start")
                w.stop(kill=True)
                workers[i] = _Worker(timeout)
    finally:
        for w in workers:
            w.stop(kill=w.job is not None)
    return verdicts, failed


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def grade_many(completions: Sequence[str], golds: Sequence[str], workers: int | None = None,
               timeout: float = 5.0) -> list[GradeResult]:
    """Grade many completions in parallel processes, in input order. An item whose
    verification takes longer than `timeout` seconds is graded wrong (its worker is
    killed and replaced), so one pathological answer never stalls the batch."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    extracted = [extract_answer(c) for c in completions]
    jobs = {i: (e, str(golds[i])) for i, e in enumerate(extracted) if e is not None}
    verdicts, failed = {}, set()
    if jobs:
        n = 1 if len(jobs) < SMALL_BATCH else max(1, min(workers or _cpu_count(), len(jobs)))
        verdicts, failed = _verify_in_workers(jobs, n, timeout)
    return [GradeResult(e, verdicts.get(i, False), i in failed) for i, e in enumerate(extracted)]


# ------------------------------------------------------------------------------ files
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
               timeout: float = 5.0) -> GradeSummary:
    """Grade a JSONL file of {pred, gold} rows; write each row plus `extracted` and
    `correct` to `output` (atomically)."""
    start = time.monotonic()
    input, output = Path(input), Path(output)
    rows = _read_rows(input)
    results = grade_many([str(r["pred"]) for r in rows], [str(r["gold"]) for r in rows],
                         workers=workers, timeout=timeout)
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
