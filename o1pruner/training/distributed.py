"""Processes and precision: the Accelerator, the DeepSpeed config, and multi-process launch.

One process on CPU by default. `train.devices > 1` or `train.num_machines > 1` re-launches
`o1pruner train` under `accelerate launch`; DeepSpeed ZeRO runs through accelerate's
DeepSpeedPlugin, with its config built from templates/deepspeed/zero{2,3}.json or read from
train.deepspeed_config.

Several machines: each runs `o1pruner train` on the same spec (its own train.machine_rank)
with a run directory of its own. Machine 0's is the run's: decisions that read the run
directory (skip, resume, reference pass) are taken there and sent to every process
(`main_process_value`), and only its main process writes the results. Every machine keeps
complete checkpoints in its own run directory, so each can resume without a shared file
system.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.hardware import resolve_train_precision

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "deepspeed"
LAUNCH_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def needs_launch(train: Any) -> bool:
    """True when training runs in several processes, started by `accelerate launch`."""
    return train.devices > 1 or train.num_machines > 1


def is_launched_worker() -> bool:
    """True inside a process started by accelerate launch / torchrun / deepspeed."""
    return all(v in os.environ for v in LAUNCH_VARS)


def prepare_environment(train: Any) -> None:
    """Environment DeepSpeed needs before it is imported: its CPU accelerator when there is
    no GPU, and the launcher's variables for a single process started without a launcher."""
    if train.deepspeed_stage == 0:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if not is_launched_worker():
        for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"),
                           ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(free_port()))):
            os.environ.setdefault(key, value)


def deepspeed_config(train: Any, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config: train.deepspeed_config, or the zero2/zero3 template with its
    "auto" values filled from the spec (the hidden-size ones are left to accelerate)."""
    if train.deepspeed_config:
        path = Path(train.deepspeed_config)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"train.deepspeed_config: file not found: {path}") from None
        except (OSError, ValueError) as err:
            raise UserError(f"train.deepspeed_config: {path} is not valid JSON ({err})") from None
        if not isinstance(config, dict) or "zero_optimization" not in config:
            raise UserError(f"train.deepspeed_config: {path} needs a zero_optimization section")
    else:
        name = "zero3.json" if train.deepspeed_stage == 3 else "zero2.json"
        config = json.loads((TEMPLATES / name).read_text(encoding="utf-8"))
        config["zero_optimization"]["stage"] = train.deepspeed_stage
        if train.deepspeed_stage == 1:
            config["zero_optimization"] = {"stage": 1}
    config = copy.deepcopy(config)
    fill = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "train_batch_size": train.batch_size * train.gradient_accumulation_steps * world_size,
        "gradient_clipping": train.max_grad_norm,
    }
    for key, value in fill.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
    for key in ("bf16", "fp16"):
        section = config.setdefault(key, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = resolve_train_precision(train.precision) == key
    if train.num_machines > 1:  # each machine saves what its ranks need to resume
        config.setdefault("checkpoint", {}).setdefault("use_node_local_storage", True)
    if train.deepspeed_offload:
        zero = config["zero_optimization"]
        zero.setdefault("offload_optimizer", {"device": "cpu", "pin_memory": False})
        if zero.get("stage") == 3:
            zero.setdefault("offload_param", {"device": "cpu", "pin_memory": False})
    return config


def make_accelerator(train: Any, trackers: list[Any] | None = None) -> Any:
    """An Accelerator for the spec: mixed precision as autocast over fp32 weights (or
    DeepSpeed's own bf16/fp16 with fp32 master weights), our own gradient accumulation.
    Checkpoints hold the model and optimizer on every machine (`save_on_each_node`).
    `trackers`: accelerate tracker objects for `log_with` (training/trackers.py)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs, ProjectConfiguration

    precision = resolve_train_precision(train.precision)
    if precision == "fp16" and not torch.cuda.is_available():
        raise UserError("train.precision: fp16 needs a GPU; use auto, bf16 or fp32 on CPU")
    mixed = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[precision]
    reset_accelerate_state()
    plugin = None
    if train.deepspeed_stage:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(train, world))
    # Without a GPU: plain multi-process runs need cpu=True (gloo), and DeepSpeed needs the
    # backend named, or accelerate treats every worker as a lone process.
    on_cpu = not torch.cuda.is_available()
    handlers = [InitProcessGroupKwargs(backend="gloo")] if on_cpu and plugin else []
    return Accelerator(mixed_precision=mixed, deepspeed_plugin=plugin,
                       cpu=on_cpu and plugin is None, kwargs_handlers=handlers,
                       gradient_accumulation_steps=train.gradient_accumulation_steps,
                       step_scheduler_with_optimizer=False,
                       project_config=ProjectConfiguration(save_on_each_node=True),
                       log_with=trackers or None)


def main_process_value(acc: Any, value: Any) -> Any:
    """`value` as the main process has it, on every process: for decisions read from the
    run directory, which on other machines may be another folder (see the module doc)."""
    if acc.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide state, so that one process can train several specs
    one after the other (the web UI, tests, the pipeline)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def launch_command(train: Any, spec_path: Path) -> list[str]:
    """`accelerate launch` of `o1pruner train SPEC` for this machine's train.devices
    processes (accelerate's --num_processes counts those of all machines)."""
    alone = train.num_machines == 1
    ip = "127.0.0.1" if alone else train.main_process_ip
    port = free_port() if alone else train.main_process_port
    return [sys.executable, "-m", "o1pruner.training.distributed",
            "--num_processes", str(train.devices * train.num_machines),
            "--num_machines", str(train.num_machines),
            "--machine_rank", str(train.machine_rank),
            "--main_process_ip", ip, "--main_process_port", str(port), "--multi_gpu",
            "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "o1pruner.cli", "train", str(spec_path)]


def launch_workers(train: Any, run: Any, lock: Any) -> tuple[int, bool]:
    """Run `o1pruner train SPEC` in train.devices processes under accelerate launch (with
    the other machines' ones: train.num_machines); return (exit code, whether a stop was
    asked).

    torch's launcher starts every rank in a session of its own, outside the job's process
    group, so the ranks register themselves (`job.register_process`) and a stop is sent to
    them directly; each rank finishes its step, saves and exits. The launcher itself ignores
    SIGTERM/SIGINT (it would otherwise kill the ranks 30 s later, mid-save) and ends when
    they do. Each rank watches this process and stops the same way if it dies (`kill -9`).
    """
    import torch

    from o1pruner.jobs import registered_processes, run_child, signal_pid

    cmd = launch_command(train, run.spec_path)
    env = {"TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGHUP"}
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", os.environ.get("DS_ACCELERATOR", "cpu"))
    logger.info("launching %d training processes (machine %d of %d): %s", train.devices,
                train.machine_rank, train.num_machines, " ".join(cmd))

    def to_ranks(signum: int) -> None:
        for proc in registered_processes(run):
            signal_pid(proc.pid, proc.start, signal.Signals(signum))

    return run_child(cmd, lock, forward=to_ranks, env=env)


if __name__ == "__main__":
    # `accelerate launch` with SIGTERM/SIGINT ignored (see launch_workers); the ranks
    # install their own handlers.
    from accelerate.commands.launch import main as accelerate_launch

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    accelerate_launch()
