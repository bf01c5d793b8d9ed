"""Generation for the studio's playground: one problem, two models, the answers streamed
side by side, measured and graded the way the pipeline measures and grades them
(`playground_answer`: one model's answer; `playground_choices`: the models and problems
the page offers).

A Playground is one browser session's: its answers, its Stop and its one comparison at a
time (a lock); its models run one after the other in a worker thread, so that their times
compare on a shared machine, each streamed through transformers' TextIteratorStreamer from
a generation thread. Stop sets a flag that a StoppingCriteria checks at every token.

`Sessions` keeps one Playground per browser session and bounds the memory of all of them
together: they share one ModelCache (the last MAX_LOADED models used stay loaded, least
recent evicted), a session generates with one model at a time, at most MAX_GENERATING
comparisons run at once, and at most MAX_SESSIONS playgrounds are kept (the least recently
used idle one is forgotten first). So at most MAX_LOADED + MAX_GENERATING models are in
memory: those cached, and one per running comparison whose model was evicted meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace

from o1pruner.errors import UserError
from o1pruner.playground_answer import (
    MAX_LOADED,
    Answer,
    ModelCache,
    Settings,
    generate_answer,
)
from o1pruner.playground_choices import (
    default_max_new_tokens,
    find_model_dirs,
    problem_sources,
    source_problems,
)
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)

MAX_PROBLEM_CHARS = 20_000  # a problem typed or pasted in the browser
MAX_GOLD_CHARS = 1_000
MAX_GENERATING = 2  # comparisons running at once, every browser session together
MAX_SESSIONS = 32  # playgrounds kept (one per browser session)
CHARS_PER_SECOND = 20_000  # of answer text sent to a page per second, at most
MAX_PAUSE_S = 2.0  # the longest pause between two updates of a page


class Busy(UserError):
    """A comparison is already running."""


class Slots(threading.BoundedSemaphore):
    """How many comparisons may run at once, every session together."""

    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


def update_pause(interval: float, answers: Sequence[Answer]) -> float:
    """Seconds until the next update of a page: `interval`, longer as the answers grow
    (CHARS_PER_SECOND of their text at most, MAX_PAUSE_S at the longest). The page redraws
    each answer whole at every update; a long answer redrawn ten times a second keeps a
    loaded machine's browser too busy to take a click, Stop's included."""
    chars = sum(len(a.text) for a in answers)
    return max(interval, min(chars / CHARS_PER_SECOND, MAX_PAUSE_S))


class Playground:
    """One session's two-model comparisons on one problem, one at a time, with a model
    cache (its own, or one shared by every session) and, when given, a share of the
    comparisons that may run at once (`slots`)."""

    def __init__(self, cache_size: int = MAX_LOADED, models: ModelCache | None = None,
                 slots: Slots | None = None):
        self.models = models if models is not None else ModelCache(cache_size)
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._slots = slots
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def start(self, spec: RunSpec, models: Sequence[str], problem: str, gold: str | None = None,
              settings: Settings | None = None) -> None:
        """Begin generating each model's answer to `problem` in a worker thread; raise Busy
        while another comparison runs."""
        models = [m.strip() for m in models if m and m.strip()]
        if not models:
            raise UserError("choose a model")
        if not (problem or "").strip():
            raise UserError("type a problem or pick one from a data set")
        if len(problem) > MAX_PROBLEM_CHARS or len(gold or "") > MAX_GOLD_CHARS:
            raise UserError(f"a problem has at most {MAX_PROBLEM_CHARS:,} characters and a "
                            f"gold answer {MAX_GOLD_CHARS:,}; this one has {len(problem):,} "
                            f"and {len(gold or ''):,}")
        if not self._lock.acquire(blocking=False):
            raise Busy("a generation is running; wait for it or press Stop")
        if self._slots is not None and not self._slots.acquire(blocking=False):
            self._lock.release()
            raise Busy(f"{self._slots.size} generation(s) are running in other browser "
                       "sessions, the most at once; try again when one ends")
        try:
            self._stop.clear()
            self.answers = [Answer(m) for m in models]
            self._worker = threading.Thread(
                target=self._run, args=(spec, problem, (gold or "").strip(),
                                        settings or Settings()),
                name="playground", daemon=True)
            self._worker.start()
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.release()
        self._lock.release()

    def stop(self) -> list[Answer]:
        """Ask the running comparison to stop; the model generating stops at its next
        token and the ones not started are skipped."""
        self._stop.set()
        return [replace(a) for a in self.answers]

    def wait(self, timeout: float | None = None) -> list[Answer]:
        if self._worker is not None:
            self._worker.join(timeout)
        return [replace(a) for a in self.answers]

    def updates(self, interval: float = 0.1) -> Iterator[list[Answer]]:
        """Copies of the answers whenever they changed, every `interval` seconds at most
        (less often as they grow: `update_pause`), until the comparison ends (the last one
        is the final state)."""
        last: list[Answer] | None = None
        while True:
            alive = self._worker is not None and self._worker.is_alive()
            snapshot = [replace(a) for a in self.answers]
            if snapshot != last:
                yield snapshot
                last = snapshot
            if not alive:
                return
            time.sleep(update_pause(interval, snapshot))

    def compare(self, spec: RunSpec, models: Sequence[str], problem: str,
                gold: str | None = None, settings: Settings | None = None,
                interval: float = 0.1) -> Iterator[list[Answer]]:
        """start() then updates(); closing the iterator early stops the generation."""
        self.start(spec, models, problem, gold, settings)
        try:
            yield from self.updates(interval)
        finally:
            if self._worker is not None and self._worker.is_alive():
                self.stop()

    # ----------------------------------------------------------------------- worker
    def _run(self, spec: RunSpec, problem: str, gold: str, settings: Settings) -> None:
        from o1pruner.prompts import load_template

        try:
            template = load_template(spec.model)
            for answer in self.answers:
                if self._stop.is_set():
                    answer.state = "stopped"
                    continue
                try:
                    generate_answer(self.models, spec, template, answer, problem, gold,
                                    settings, self._stop)
                except Exception as err:  # noqa: BLE001 - shown on that model's side
                    logger.warning("playground: %s failed: %s", answer.model, err,
                                   exc_info=not isinstance(err, UserError))
                    answer.state, answer.error = "error", str(err)
        except Exception as err:  # noqa: BLE001 - e.g. a broken prompt template
            for answer in self.answers:
                if answer.state == "waiting":
                    answer.state, answer.error = "error", str(err)
        finally:
            self._release()


class Sessions:
    """One Playground per browser session (`key`: the session's id), sharing one ModelCache
    of `cache_size` models and `max_generating` running comparisons; at most `max_sessions`
    are kept, the least recently used idle one forgotten first (a page whose playground was
    forgotten gets a new one at its next click)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, cache_size: int = MAX_LOADED,
                 max_generating: int = MAX_GENERATING):
        self.max_sessions = max_sessions
        self.models = ModelCache(cache_size)
        self._slots = Slots(max_generating)
        self._items: OrderedDict[str, Playground] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Playground:
        """The session's playground, made on its first use."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            idle = [k for k, p in self._items.items() if not p.busy]
            while len(self._items) >= self.max_sessions and idle:
                del self._items[idle.pop(0)]
            if len(self._items) >= self.max_sessions:
                raise Busy(f"the playground is generating for {len(self._items)} browser "
                           "sessions; try again when one ends")
            playground = self._items[key] = Playground(models=self.models, slots=self._slots)
            return playground

    def peek(self, key: str) -> Playground | None:
        """The session's playground if it has one (nothing is made)."""
        with self._lock:
            return self._items.get(key)

    def close(self, key: str | None) -> None:
        """The session ended (its page was closed): stop its comparison and forget it."""
        with self._lock:
            playground = self._items.pop(key or "", None)
        if playground is not None:
            playground.stop()


__all__ = ["MAX_GENERATING", "MAX_GOLD_CHARS", "MAX_LOADED", "MAX_PROBLEM_CHARS", "MAX_SESSIONS",
           "Answer", "Busy", "ModelCache", "Playground", "Sessions", "Settings", "Slots",
           "default_max_new_tokens", "find_model_dirs", "problem_sources", "source_problems"]
