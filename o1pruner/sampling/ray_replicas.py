"""Replicas as Ray actors (`ray_address`), each reserving its GPUs (or one CPU) on
whichever machine of the cluster has them; the results come back to the stage's process,
so the cluster needs no shared file system.
"""

from __future__ import annotations

import os
from typing import Any

from o1pruner.errors import UserError
from o1pruner.sampling.pool import EngineArgs, Failure, ReplicaPool, Request


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
                        done.append((slot, Failure(f"{type(err).__name__}: {err}")))
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
