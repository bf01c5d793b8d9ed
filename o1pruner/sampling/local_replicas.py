"""Replicas as local processes (multiprocessing, spawn), one per slot, each with its own
CUDA_VISIBLE_DEVICES (tensor_parallel_size GPUs) or, on CPU, its own share of the cores;
a replica watches the stage's process and stops with it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from o1pruner.errors import UserError
from o1pruner.sampling.pool import EngineArgs, Failure, ReplicaPool, Request

logger = logging.getLogger(__name__)


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
        """The slot's answer: a result, a Failure, or None (it said ready: wait on)."""
        conn, proc = self.conns[slot], self.procs[slot]
        try:
            while conn.poll():
                kind, *payload = conn.recv()
                if kind == "ready":
                    self.name = payload[0]
                    self.on_event("replica_ready", replica=slot, engine=payload[0],
                                  reason=payload[1])
                    continue
                return payload[0] if kind == "result" else Failure(payload[0])
        except (EOFError, OSError):
            pass
        if proc.is_alive():
            return None
        proc.join()
        return Failure(f"the replica process {proc.pid} ended (exit code {proc.exitcode})")

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
