"""The grading worker pool: math-verify in processes the parent kills and replaces when an
item runs past its time limit.

Model text can make sympy work forever (``9^{9^{9^{9}}}``) or recurse very deep, inside C
code no signal can interrupt. So verification (and, in standard mode, math-verify's own
extraction) runs in worker processes: an item that takes too long is graded wrong and the
batch goes on.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path

from o1pruner.grading.extract import verify_answer, verify_text

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0  # a worker process that is not ready by then is a broken setup


# --------------------------------------------------------------------- worker pool
def worker_main() -> None:
    """Worker process: read `[index, kind, payload, gold]` JSON lines on stdin (kind
    "answer": an extracted answer to verify; "text": a whole answer text for math-verify's
    own extraction), answer `[index, correct, extracted]` lines on stdout; the parent kills
    it when an item takes too long."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    verify_answer("1", "2", timeout=None)  # load math-verify's parser before taking jobs
    protocol.write('"ready"\n')
    protocol.flush()
    for line in sys.stdin:
        index, kind, payload, gold = json.loads(line)
        extracted = payload if kind == "answer" else None
        try:
            if kind == "answer":
                ok = verify_answer(payload, gold, timeout=None)
            else:
                ok, extracted = verify_text(payload, gold, timeout=None)
        except Exception:  # noqa: BLE001 - a parser failure means "not shown equal"
            ok = False
        protocol.write(json.dumps([index, ok, extracted]) + "\n")
        protocol.flush()


class _Worker:
    """A killable grading process, started with `python -c` so that it never re-runs the
    caller's `__main__` (unlike multiprocessing's spawn) nor forks a threaded parent."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from o1pruner.grading.workers import worker_main; "
             "worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.born = time.monotonic()
        self.ready = False
        self.job: int | None = None
        self.deadline = 0.0

    def send(self, job: int, kind: str, payload: str, gold: str) -> None:
        self.job, self.deadline = job, time.monotonic() + self.timeout
        self.proc.stdin.write((json.dumps([job, kind, payload, gold]) + "\n").encode())
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


def verify_in_workers(jobs: dict[int, tuple[str, str, str]], n_workers: int,
                      timeout: float) -> tuple[dict[int, tuple[bool, str | None]], set[int]]:
    """Verify jobs {index: (kind, payload, gold)} in killable processes; returns the
    verdicts {index: (correct, extracted)} and the indices that ran past `timeout` seconds
    (or crashed their worker)."""
    pending = deque(jobs)
    verdicts: dict[int, tuple[bool, str | None]] = {}
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
                        verdicts[w.job], w.job = (bool(msg[1]), msg[2]), None
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
