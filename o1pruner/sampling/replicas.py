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

Here: `open_pool` chooses the pool; `pool` holds the shared queue and the in-process pool,
`local_replicas` and `ray_replicas` the two kinds of replicas.
"""

from __future__ import annotations

from typing import Any

from o1pruner.sampling.local_replicas import LocalPool
from o1pruner.sampling.pool import (
    EngineArgs,
    InProcessPool,
    Pool,
    ReplicaFailed,
    ReplicaPool,
    Request,
    Result,
)
from o1pruner.sampling.ray_replicas import RayPool


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


__all__ = ["EngineArgs", "InProcessPool", "LocalPool", "Pool", "RayPool", "ReplicaFailed",
           "ReplicaPool", "Request", "Result", "engine_args", "open_pool"]
