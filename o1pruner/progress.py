"""What a stage shows while it works: a tqdm bar in the terminal plus `progress` events in
the run's events.jsonl, and its log records in logs/<stage>.log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from o1pruner.rundir import RunDir


class Progress:
    """A tqdm bar in the terminal plus `progress` events in events.jsonl (rate-limited)."""

    def __init__(
        self,
        run: RunDir | None,
        stage: str,
        total: int,
        initial: int = 0,
        unit: str = "it",
        desc: str | None = None,
        min_interval: float = 1.0,
    ):
        self.run, self.stage, self.total, self.done = run, stage, total, initial
        self.unit = unit
        self.phase = desc if desc and desc != stage else None  # e.g. "reference pass"
        self.started = time.time()
        self._initial = initial
        self._last_emit = 0.0
        self._min_interval = min_interval
        self._bar = tqdm(total=total, initial=initial, unit=unit, desc=desc or stage,
                         dynamic_ncols=True, mininterval=1.0)
        self._emit(force=True)

    def update(self, n: int = 1, **metrics: Any) -> None:
        self.done += n
        self._bar.update(n)
        if metrics:
            self._bar.set_postfix({k: v for k, v in metrics.items()
                                   if isinstance(v, (int, float))}, refresh=False)
        self._emit(force=self.done >= self.total, **metrics)

    def _emit(self, force: bool = False, **metrics: Any) -> None:
        now = time.time()
        if self.run is None or (not force and now - self._last_emit < self._min_interval):
            return
        self._last_emit = now
        elapsed = now - self.started
        rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        phase = {"phase": self.phase} if self.phase else {}
        self.run.emit("progress", self.stage, done=self.done, total=self.total,
                      unit=self.unit, elapsed_s=round(elapsed, 1),
                      eta_s=None if eta is None else round(eta, 1), **phase, **metrics)

    def close(self) -> None:
        self._emit(force=True)
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


WARNINGS = "warnings"


def emit_warnings(run: RunDir, stage: str, warnings: list[dict[str, Any]]) -> None:
    """Record what the user must know about the stage's input (e.g. a training set whose
    rewards are all 0), as one `warnings` event: the stage's current list, empty when all is
    well, so a later run of the stage replaces what an earlier one said."""
    run.emit(WARNINGS, stage, items=list(warnings))


def current_warnings(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The warnings that hold: the last `warnings` event of each stage."""
    latest: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event.get("kind") == WARNINGS and isinstance(event.get("items"), list):
            latest[str(event.get("stage"))] = [w for w in event["items"] if isinstance(w, dict)]
    return [w for items in latest.values() for w in items]


@contextmanager
def stage_logging(run: RunDir, stage: str) -> Iterator[Path]:
    """Send the `o1pruner` loggers' records to logs/<stage>.log while the stage runs."""
    path = run.log_path(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("o1pruner")
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
