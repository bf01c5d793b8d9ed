"""What a stage shows while it works: a tqdm bar in the terminal plus `progress` events in
the run's events.jsonl, and its log records in logs/<stage>.log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from o1pruner.jobs.rundir import RunDir

#: Seconds between the `progress` events that report tokens within an item.
TOKEN_INTERVAL = 5.0


class Progress:
    """A tqdm bar in the terminal plus `progress` events in events.jsonl (rate-limited).

    The ETA counts from the first item finished by this process, at the rate since then:
    a resumed stage is timed by its own steps, and the warm-up before the first item (the
    model loading, the first step) does not stretch it. `tokens(n)` reports generation
    within an item (an engine's decoding steps), as `tokens` in the events."""

    def __init__(
        self,
        run: RunDir | None,
        stage: str,
        total: int,
        initial: int = 0,
        unit: str = "it",
        desc: str | None = None,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ):
        self.run, self.stage, self.total, self.done = run, stage, total, initial
        self.unit = unit
        self.phase = desc if desc and desc != stage else None  # e.g. "reference pass"
        self._clock = clock
        self.started = clock()
        self._initial = initial
        self._first: tuple[float, int] | None = None  # (time, done) at the first update
        self.batch_tokens = 0  # tokens generated since the last finished item
        self._tokens_shown = False  # the last event reported tokens
        self._last_emit = 0.0
        self._min_interval = min_interval
        self._bar = tqdm(total=total, initial=initial, unit=unit, desc=desc or stage,
                         dynamic_ncols=True, mininterval=1.0)
        self._emit(force=True)

    def update(self, n: int = 1, **metrics: Any) -> None:
        self.done += n
        self.batch_tokens = 0
        if self._first is None:
            self._first = (self._clock(), self.done)
        self._bar.update(n)
        if metrics:
            self._bar.set_postfix({k: v for k, v in metrics.items()
                                   if isinstance(v, (int, float))}, refresh=False)
        # after a tokens event, the item's end is reported at once (else the bar would
        # keep the item in flight)
        self._emit(force=self.done >= self.total or self._tokens_shown, **metrics)

    def tokens(self, n: int) -> None:
        """`n` more tokens generated for the items in flight (an event every
        TOKEN_INTERVAL seconds at most)."""
        self.batch_tokens += n
        if self._clock() - self._last_emit >= TOKEN_INTERVAL:
            self._emit(tokens=self.batch_tokens)
            self._tokens_shown = True

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate since the first item this process finished (before
        the second, the rate since the start)."""
        if self._first is not None and self.done > self._first[1] and now > self._first[0]:
            rate = (self.done - self._first[1]) / (now - self._first[0])
        else:
            elapsed = now - self.started
            rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
        return (self.total - self.done) / rate if rate > 0 else None

    def _emit(self, force: bool = False, **metrics: Any) -> None:
        now = self._clock()
        if self.run is None or (not force and now - self._last_emit < self._min_interval):
            return
        self._last_emit, self._tokens_shown = now, False
        eta = self.eta(now)
        phase = {"phase": self.phase} if self.phase else {}
        self.run.emit("progress", self.stage, done=self.done, total=self.total,
                      unit=self.unit, elapsed_s=round(now - self.started, 1),
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
