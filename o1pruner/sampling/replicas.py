"""Data-parallel generation: N model replicas, each on its own GPUs (or CPU cores), fed
batch by batch by the stage's process, which alone writes the results.

- `data_parallel_size: 1` without Ray: the engine runs in the stage's own process.
- N local replicas: one process each (multiprocessing, spawn), with its own
  CUDA_VISIBLE_DEVICES (tensor_parallel_size GPUs) or, on CPU, its own share of the cores.
- `ray_address`: the replicas are Ray actors, each reserving its GPUs (or one CPU), on
  whichever machines of the cluster have them; results come back to the stage's process,
  so the cluster needs no shared file system.

Batches are handed out as replicas become free (a slow replica takes fewer). What a batch
gives does not depend on the replica that ran it: the caller passes per-prompt seeds. A
replica that dies (`kill -9`, out of memory, a lost node) loses only its batch in flight,
which goes to a new replica; a replica slot that fails twice stops the stage with a message
naming it. Nothing is written by a replica: a stop or a crash of the stage loses at most
the batches in flight.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


# ----------------------------------------------------------------------------- pools
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


class _Failure:
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

    # to implement: start(slot), submit(slot, request), wait() -> [(slot, result|_Failure)],
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
                if isinstance(outcome, _Failure):
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


# ------------------------------------------------------------------ local processes
def _replica_main(conn: Any, args: EngineArgs, cpus: list[int] | None) -> None:
    """A local replica: start the engine, then answer requests until told to stop."""
    import traceback

    from o1pruner.jobs import watch_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the stage's to handle
    signal.signal(signal.SIGTERM, _exit_on_term)  # unwinds: the engine is closed
    watch_parent()  # the stage's process is gone (kill -9): stop too
    if cpus:
        os.sched_setaffinity(0, cpus)
        import torch

        torch.set_num_threads(len(cpus))
    engine = None
    try:
        engine = args.start()
        conn.send(("ready", engine.name, engine.reason))
        while True:
            message = conn.recv()
            if message is None:
                return
            try:
                conn.send(("result", message.run(engine)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
                return
    except Exception:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        if engine is not None:
            engine.close()


def _exit_on_term(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _environ(values: dict[str, str | None]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def device_plan(size: int, tensor_parallel: int) -> tuple[list[str | None], list[list[int]]]:
    """Per replica: its CUDA_VISIBLE_DEVICES (GPU) and its CPU cores (CPU)."""
    import torch

    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = [g for g in visible.split(",") if g.strip()] if visible else \
            [str(i) for i in range(torch.cuda.device_count())]
        if size * tensor_parallel > len(gpus):
            raise UserError(
                f"data_parallel_size {size} x tensor_parallel_size {tensor_parallel} needs "
                f"{size * tensor_parallel} GPUs; this machine has {len(gpus)}. Lower them, "
                "or set ray_address to use a cluster's GPUs")
        return [",".join(gpus[r * tensor_parallel:(r + 1) * tensor_parallel])
                for r in range(size)], [[] for _ in range(size)]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus:
        return [None] * size, [[] for _ in range(size)]
    if size > len(cpus):
        logger.warning("%d replicas on %d CPU cores: replicas share cores", size, len(cpus))
        return [None] * size, [[cpus[r % len(cpus)]] for r in range(size)]
    per = len(cpus) // size
    return [None] * size, [cpus[r * per:(r + 1) * per] for r in range(size)]


class LocalPool(ReplicaPool):
    kind = "local processes"

    def __init__(self, args: EngineArgs, size: int, on_event: Any = None):
        super().__init__(args, size, on_event)
        self.gpus, self.cpus = device_plan(size, args.tensor_parallel_size)
        self.procs: dict[int, Any] = {}
        self.conns: dict[int, Any] = {}

    def start(self, slot: int) -> None:
        import multiprocessing as mp

        from o1pruner.jobs import PARENT_ENV, PARENT_START_ENV, child_env

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        ours = child_env()  # the replica watches this process (watch_parent)
        env: dict[str, str | None] = {k: ours[k] for k in (PARENT_ENV, PARENT_START_ENV)}
        if self.gpus[slot] is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot]
        elif self.cpus[slot]:
            cores = ",".join(map(str, self.cpus[slot]))
            env.update(VLLM_CPU_OMP_THREADS_BIND=cores, OMP_NUM_THREADS=str(len(self.cpus[slot])))
        proc = ctx.Process(target=_replica_main, args=(child, self.args, self.cpus[slot]),
                           name=f"o1pruner-replica-{slot}", daemon=False)
        with _environ(env):
            proc.start()
        child.close()
        self.procs[slot], self.conns[slot] = proc, parent
        self.on_event("replica", replica=slot, attempt=self.attempts[slot], pid=proc.pid,
                      gpus=self.gpus[slot], cpus=self.cpus[slot] or None)

    def submit(self, slot: int, request: Request) -> None:
        try:
            self.conns[slot].send(request)
        except OSError:  # it died already: wait() reports it
            pass

    def wait(self) -> list[tuple[int, Any]]:
        from multiprocessing.connection import wait

        done: list[tuple[int, Any]] = []
        while not done:
            handles = {self.conns[s]: s for s in self.busy}
            handles.update({self.procs[s].sentinel: s for s in self.busy})
            for ready in wait(list(handles), timeout=5.0):
                slot = handles[ready]
                if any(s == slot for s, _ in done):
                    continue
                outcome = self._receive(slot)
                if outcome is not None:
                    done.append((slot, outcome))
        return done

    def _receive(self, slot: int) -> Any:
        """The slot's answer: a result, a _Failure, or None (it said ready: wait on)."""
        conn, proc = self.conns[slot], self.procs[slot]
        try:
            while conn.poll():
                kind, *payload = conn.recv()
                if kind == "ready":
                    self.name = payload[0]
                    self.on_event("replica_ready", replica=slot, engine=payload[0],
                                  reason=payload[1])
                    continue
                return payload[0] if kind == "result" else _Failure(payload[0])
        except (EOFError, OSError):
            pass
        if proc.is_alive():
            return None
        proc.join()
        return _Failure(f"the replica process {proc.pid} ended (exit code {proc.exitcode})")

    def drop(self, slot: int) -> None:
        proc = self.procs.pop(slot, None)
        conn = self.conns.pop(slot, None)
        if conn is not None:
            conn.close()
        if proc is not None:
            _end(proc)

    def close(self) -> None:
        """Idle replicas are told to stop; busy ones (a stop or an error of the stage: their
        batches are given up) get SIGTERM."""
        for slot, conn in list(self.conns.items()):
            if slot not in self.busy:
                try:
                    conn.send(None)
                except OSError:
                    pass
        deadline = time.time() + 30
        for slot, proc in self.procs.items():
            if slot not in self.busy:
                proc.join(timeout=max(0.0, deadline - time.time()))
        for slot in list(self.procs):
            self.drop(slot)
        self.busy.clear()


def _end(proc: Any) -> None:
    """Stop a replica process: SIGTERM (it closes its engine), then SIGKILL."""
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=20)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=5)


# ------------------------------------------------------------------------------- Ray
class _Actor:
    """The Ray actor of one replica."""

    def __init__(self, args: EngineArgs, cpus: int):
        if cpus:
            import torch

            torch.set_num_threads(cpus)
        self.engine = args.start()

    def info(self) -> dict[str, Any]:
        import socket

        return {"pid": os.getpid(), "host": socket.gethostname(), "engine": self.engine.name,
                "reason": self.engine.reason}

    def generate(self, request: Request) -> tuple[list[list[Any]], float]:
        return request.run(self.engine)

    def close(self) -> None:
        self.engine.close()


class RayPool(ReplicaPool):
    kind = "Ray actors"

    def __init__(self, args: EngineArgs, size: int, address: str, on_event: Any = None):
        super().__init__(args, size, on_event)
        try:
            import ray
        except ImportError:
            raise UserError("ray_address is set but Ray is not installed: pip install "
                            "'o1pruner[dist]' (or unset ray_address)") from None
        self.ray = ray
        self.owns_ray = False
        if not ray.is_initialized():
            # the workers import o1pruner from the installed package, as on other nodes
            kwargs: dict[str, Any] = {"log_to_driver": True, "include_dashboard": False}
            if address == "local":
                kwargs["num_cpus"] = len(os.sched_getaffinity(0))
            else:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise UserError(f"ray_address: cannot connect to the Ray cluster at "
                                f"{address!r} ({err}); start one with `ray start --head` "
                                "(docs/scale-out.md)") from None
            self.owns_ray = True
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus:
            options = {"num_gpus": args.tensor_parallel_size, "num_cpus": 1}
        else:
            options = {"num_cpus": 1}
        self.remote = ray.remote(**options)(_Actor)
        self.cpus = options["num_cpus"] if not gpus else 0
        self.actors: dict[int, Any] = {}
        self.refs: dict[Any, tuple[int, str]] = {}

    def start(self, slot: int) -> None:
        actor = self.remote.remote(self.args, self.cpus)
        self.actors[slot] = actor
        self.refs[actor.info.remote()] = (slot, "info")

    def submit(self, slot: int, request: Request) -> None:
        self.refs[self.actors[slot].generate.remote(request)] = (slot, "result")

    def wait(self) -> list[tuple[int, Any]]:
        ray = self.ray
        done: list[tuple[int, Any]] = []
        while not done:
            ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=5.0)
            for ref in ready:
                slot, kind = self.refs.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayError as err:
                    if slot in self.busy and not any(s == slot for s, _ in done):
                        done.append((slot, _Failure(f"{type(err).__name__}: {err}")))
                    continue
                if kind == "info":
                    self.name = value["engine"]
                    self.on_event("replica", replica=slot, attempt=self.attempts[slot],
                                  pid=value["pid"], host=value["host"], engine=value["engine"])
                elif slot in self.busy:
                    done.append((slot, value))
        return done

    def drop(self, slot: int) -> None:
        actor = self.actors.pop(slot, None)
        for ref, (s, _) in list(self.refs.items()):
            if s == slot:
                del self.refs[ref]
        if actor is not None:
            self.ray.kill(actor)

    def close(self) -> None:
        for slot, actor in list(self.actors.items()):
            try:
                self.ray.get(actor.close.remote(), timeout=30)
            except Exception:  # a dead actor, or one that does not answer
                pass
            self.drop(slot)
        if self.owns_ray:
            self.ray.shutdown()


def open_pool(args: EngineArgs, size: int = 1, ray_address: str | None = None,
              on_event: Any = None) -> Pool:
    """The replicas for a stage (see the module docstring)."""
    if ray_address:
        return RayPool(args, size, ray_address, on_event)
    if size == 1:
        return InProcessPool(args, on_event)
    return LocalPool(args, size, on_event)


def engine_args(model: Any, engine: str, model_path: str, **kwargs: Any) -> EngineArgs:
    return EngineArgs(model=model.model_dump(), engine=engine, model_path=model_path, **kwargs)


__all__ = ["EngineArgs", "Pool", "ReplicaFailed", "Request", "Result", "engine_args", "open_pool"]
