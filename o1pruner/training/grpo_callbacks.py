"""What ties TRL's GRPOTrainer to a run directory: progress and metrics events, the stop
signal (finish the step, save, stop), checkpoints renamed into our layout, and a warning
when most steps cannot change the model (every completion of each group got the same
reward: GRPO's advantages, and so its gradient, are then zero)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from o1pruner.files import atomic_write_json
from o1pruner.jobs import Progress, RunDir, emit_warnings

logger = logging.getLogger(__name__)

STATE_FILE = "o1pruner_state.json"  # our record in a checkpoint: fingerprint, step, time
# TRL's metric names -> the names every method logs (training/metrics.py); others kept as is
METRIC_NAMES = {"reward": "reward/mean", "reward_std": "reward/std",
                "completions/mean_length": "completion_length",
                "completions/clipped_ratio": "truncated_ratio",
                "clip_ratio/region_mean": "clip_ratio"}


def silent_step_cause(metrics: dict[str, Any], limit: int | None) -> tuple[str, str]:
    """Why a logged step's groups each had one reward, and what to do, from its metrics."""
    cap = f" {limit}" if limit else ""
    if metrics.get("truncated_ratio", 0) >= 1.0:
        return (f"every completion was cut at the token limit{cap}",
                "raise train.grpo_max_completion_length (thinkprune: or a looser "
                "thinkprune_cap_schedule)")
    if metrics.get("reward/mean", 1.0) <= 0.0:
        return ("no completion was right" + (f" within the limit{cap}" if cap else ""),
                "use easier training problems or a stronger model (thinkprune: a looser "
                "first cap)")
    return ("within each group every completion got the same reward",
            "use harder or more varied training problems, or raise train.grpo_temperature")


def silence_warning(silent: int, logged: int, cause: str, fix: str) -> dict[str, Any] | None:
    """The `warnings` item once at least half the logged steps (2 or more) had no learning
    signal; None before."""
    if silent < 2 or silent * 2 < logged:
        return None
    return {"code": "no_learning_signal",
            "message": f"{silent} of {logged} training steps could not change the model: "
                       f"{cause}", "fix": fix}


class StopFlag:
    """A SIGTERM/SIGINT handler: remember the signal; the callback stops after the step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped_at: int | None = None  # the step whose checkpoint the stop saved

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            logger.warning("signal %d: finishing this step, then saving a checkpoint", signum)
        self.signum = signum


class Timer:
    """Training seconds, carried over a resume."""

    def __init__(self, before: float = 0.0):
        self.before, self.started = before, time.time()

    def elapsed(self) -> float:
        return self.before + time.time() - self.started


class RunCallback(TrainerCallback):
    """Progress and `metrics` events in the run directory (metric names as training/metrics.py
    has them), a checkpoint and a stop after the step in which a signal came, a checkpoint
    at the last step, and each checkpoint moved to train/checkpoints/step-N with our record."""

    def __init__(self, run: RunDir, stop: StopFlag, timer: Timer, fingerprint: str,
                 limit: int | None = None):
        self.run, self.stop, self.timer, self.fingerprint = run, stop, timer, fingerprint
        self.limit = limit  # the completions' token limit, named in a warning
        self.progress: Progress | None = None
        self.logged = self.silent = 0  # logged steps (since this process began), and those
        self.cause = ("", "")  # whose groups each had one reward: the latest one's cause
        self.warned: dict[str, Any] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.progress = Progress(self.run if state.is_world_process_zero else None, "train",
                                 total=state.max_steps, initial=state.global_step, unit="step")
        if state.is_world_process_zero:
            emit_warnings(self.run, "train", [])  # what an earlier run of the stage said

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(1)
        if _any_process(self.stop.signum is not None):
            control.should_save = control.should_training_stop = True
            self.stop.stopped_at = state.global_step
        elif state.global_step >= state.max_steps:
            control.should_save = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero or "loss" not in logs:
            return
        metrics = {METRIC_NAMES.get(k, k): v for k, v in logs.items()
                   if isinstance(v, (int, float))}
        self.run.emit("metrics", "train", step=state.global_step, **metrics)
        self._watch_signal(metrics)

    def _watch_signal(self, metrics: dict[str, Any]) -> None:
        """Count the logged steps whose groups each had one reward (TRL's
        frac_reward_zero_std 1); warn once they are half or more, with the latest cause."""
        if "frac_reward_zero_std" not in metrics:
            return
        self.logged += 1
        if metrics["frac_reward_zero_std"] >= 1.0:
            self.silent += 1
            self.cause = silent_step_cause(metrics, self.limit)
        warning = silence_warning(self.silent, self.logged, *self.cause)
        if warning != self.warned:
            self.warned = warning
            if warning:
                logger.warning("%s: %s", warning["message"], warning["fix"])
            emit_warnings(self.run, "train", [warning] if warning else [])

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # every process has written its part
        root = Path(args.output_dir)
        made, target = root / f"checkpoint-{state.global_step}", root / f"step-{state.global_step}"
        if state.is_local_process_zero and made.is_dir():
            atomic_write_json(made / STATE_FILE, {
                "step": state.global_step, "total_steps": state.max_steps,
                "fingerprint": self.fingerprint, "train_s": round(self.timer.elapsed(), 2)})
            if target.exists():
                shutil.rmtree(target)
            os.replace(made, target)
            for old in root.glob("step-*"):  # only the newest is kept
                if old != target:
                    shutil.rmtree(old, ignore_errors=True)
            logger.info("checkpoint saved: %s", target)
        PartialState().wait_for_everyone()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def _any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process (a stop must reach every rank at the same step)."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=state.device)
    dist.all_reduce(value)
    return bool(value.item() > 0)
