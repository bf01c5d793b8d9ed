"""The pools of replicas and what they pass around: a batch (`Request`), its completions
(`Result`), the arguments a replica starts its engine with (`EngineArgs`), and the queue
every pool of several replicas shares (`ReplicaPool`): batches handed to whichever replica
is free, the batch of a failed replica retried on a new one, a slot that fails too often
ending the stage. One engine in the stage's own process is `InProcessPool`; local
processes and Ray actors are in `local_replicas` and `ray_replicas`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from o1pruner.errors import UserError

logger = logging.getLogger(__name__)

#: A replica slot may fail this many times (its batch is retried each time) before the
#: stage stops.
MAX_FAILURES = 1


@dataclass(frozen=True)
class EngineArgs:
    """Everything a replica needs to start its engine (picklable: it travels to processes
    and Ray actors)."""

    model: dict[str, Any]  # ModelSpec as a dict
    engine: str
    model_path: str
    batch_size: int
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    seed: int = 0

    def start(self) -> Any:
        from o1pruner.sampling.engines import create_engine
        from o1pruner.spec import ModelSpec

        return create_engine(ModelSpec(**self.model), self.engine, model_path=self.model_path,
                             batch_size=self.batch_size, max_model_len=self.max_model_len,
                             tensor_parallel_size=self.tensor_parallel_size,
                             gpu_memory_utilization=self.gpu_memory_utilization,
                             seed=self.seed)


@dataclass
class Request:
    """One batch: prompts, n samples each, sampling settings, one seed per prompt (or
    None), and the caller's own `tag` (returned with the result)."""

    prompts: list[str]
    n: int
    sampling: dict[str, Any]
    seeds: list[int] | None = None
    tag: Any = None

    def run(self, engine: Any) -> tuple[list[list[Any]], float]:
        """The completions of the batch, and the seconds they took."""
        began = time.perf_counter()
        groups = engine.generate(self.prompts, self.n, seeds=self.seeds, **self.sampling)
        return groups, time.perf_counter() - began


@dataclass
class Result:
    """A finished batch: its request, the completions per prompt, the replica's seconds."""

    request: Request
    groups: list[list[Any]]
    seconds: float


class ReplicaFailed(UserError):
    """A replica slot failed more than MAX_FAILURES times."""


class Pool:
    """The replicas of one stage (use `open_pool`); `run` yields a Result per batch as
    batches finish, in no fixed order."""

    size = 1
    kind = "in-process"
    name = ""  # the engine, once known ("vllm" / "hf")

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class InProcessPool(Pool):
    """One engine in this process: today's single-engine path, no extra process."""

    def __init__(self, args: EngineArgs, on_event: Any = None):
        self.engine = args.start()
        self.name, self.reason = self.engine.name, self.engine.reason
        if on_event:
            on_event("replica", replica=0, attempt=0, pid=os.getpid(), engine=self.name,
                     reason=self.reason)

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        for request in requests:
            yield Result(request, *request.run(self.engine))

    def close(self) -> None:
        self.engine.close()


class Failure:
    """A replica's failed batch: the error (its traceback, or how its process ended)."""

    def __init__(self, message: str):
        self.message = message


class ReplicaPool(Pool):
    """N replicas fed from one queue; subclasses start replicas and wait for them."""

    def __init__(self, args: EngineArgs, size: int, on_event: Any = None):
        self.args, self.size, self.on_event = args, size, on_event or (lambda *a, **k: None)
        self.failures = [0] * size
        self.attempts = [0] * size
        self.busy: dict[int, Request] = {}
        self.started = False

    # to implement: start(slot), submit(slot, request), wait() -> [(slot, result|Failure)],
    # drop(slot) (end a dead or failed replica), close()
    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        source = iter(requests)
        first = next(source, None)
        if first is None:
            return
        queue: deque[Request] = deque([first])
        exhausted = False
        if not self.started:  # replicas stay up across calls (one per benchmark in eval)
            self.started = True
            for slot in range(self.size):
                self.start(slot)
        while True:
            for slot in range(self.size):
                if slot in self.busy:
                    continue
                if not queue and not exhausted:
                    nxt = next(source, None)
                    exhausted = nxt is None
                    if nxt is not None:
                        queue.append(nxt)
                if queue:
                    self.busy[slot] = queue.popleft()
                    self.submit(slot, self.busy[slot])
            if not self.busy:
                return
            for slot, outcome in self.wait():
                request = self.busy.pop(slot)
                if isinstance(outcome, Failure):
                    self._failed(slot, request, outcome.message)
                    queue.appendleft(request)
                else:
                    yield Result(request, *outcome)

    def _failed(self, slot: int, request: Request, message: str) -> None:
        self.failures[slot] += 1
        self.drop(slot)
        self.on_event("replica_failed", replica=slot, attempt=self.attempts[slot],
                      error=message[-2000:])
        if self.failures[slot] > MAX_FAILURES:
            raise ReplicaFailed(
                f"replica {slot} of {self.size} ({self.kind}) failed {self.failures[slot]} "
                f"times; the last error: {message.strip().splitlines()[-1] if message.strip() else '?'}"
                f". Finished batches are kept; fix the cause (see the stage log) and Start "
                "again, or lower data_parallel_size")
        logger.warning("replica %d failed (%s); starting it again, its batch of %d problems "
                       "is retried", slot, message.strip().splitlines()[-1:] or "?",
                       len(request.prompts))
        self.attempts[slot] += 1
        self.start(slot)

    def start(self, slot: int) -> None:
        raise NotImplementedError

    def submit(self, slot: int, request: Request) -> None:
        raise NotImplementedError

    def wait(self) -> list[tuple[int, Any]]:
        raise NotImplementedError

    def drop(self, slot: int) -> None:
        raise NotImplementedError
