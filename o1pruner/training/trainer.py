"""The training loop: micro-batches, the loss of train.method, optimizer steps, metrics
(events.jsonl and the experiment trackers), checkpoints, the models of intermediate steps
(train.save_model_steps), signals and the final Hugging Face model.

Checkpoints (`train/checkpoints/step-N/`) hold accelerate's resumable state (model,
optimizer, scheduler, RNG) plus `trainer_state.json`; a directory is renamed into place only
when complete. SIGTERM/SIGINT finish the current optimizer step, save a checkpoint and stop.
With several machines, each saves its checkpoints in its own run directory and they resume
together from machine 0's newest one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch

from o1pruner.errors import UserError
from o1pruner.files import atomic_write_json
from o1pruner.jobs import Progress, RunDir
from o1pruner.training.cpu_speed import CpuSpeedups
from o1pruner.training.dataset import BatchPlan, make_batch
from o1pruner.training.distributed import main_process_value
from o1pruner.training.finetuning import count_parameters, disable_dropout, load_training_model
from o1pruner.training.loss import completion_logprobs, dpo_loss, length_harmonizing_loss, sft_loss
from o1pruner.training.metrics import MetricsWindow
from o1pruner.training.prefix import FrozenPrefix
from o1pruner.training.reference import reference_pass
from o1pruner.training.saving import link_final_as_step, save_final_model, save_step_model
from o1pruner.training.trackers import finish_trackers, log_metrics, start_trackers

logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after a SIGTERM/SIGINT once the checkpoint is saved."""


class _StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            logger.warning("signal %d: finishing this step, then saving a checkpoint", signum)
        self.signum = signum


def latest_checkpoint(train_dir: Path) -> Path | None:
    ckpts = [(int(m.group(1)), p) for p in (train_dir / "checkpoints").glob("step-*")
             if (m := STEP_DIR.match(p.name)) and (p / "trainer_state.json").exists()]
    return max(ckpts)[1] if ckpts else None


def resume_point(acc: Any, train_dir: Path, fingerprint: str,
                 total_steps: int) -> tuple[Path | None, dict[str, Any]]:
    """Machine 0's newest checkpoint and its trainer state, or (None, {}). Every process
    reads it from its own machine's run directory (the machines save together), so each
    checks its copy; a problem on any machine stops all of them with its message."""
    from accelerate.utils import gather_object

    newest = latest_checkpoint(train_dir)
    name = main_process_value(acc, newest and newest.name)
    if name is None:
        return None, {}
    path, saved, problem = train_dir / "checkpoints" / name, {}, None
    try:
        saved = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        if saved.get("fingerprint") != fingerprint or saved.get("total_steps") != total_steps:
            problem = (f"{path} was written for another training set or spec; delete "
                       f"{train_dir / 'checkpoints'} to start over")
    except FileNotFoundError:
        problem = (f"{path} is missing: machine 0 resumes from {name}, and every machine "
                   "needs it in its own run directory; delete train/checkpoints on every "
                   "machine to start over")
    problems = gather_object([problem]) if acc.num_processes > 1 else [problem]
    if any(problems):
        raise UserError(next(p for p in problems if p))
    return path, saved


def train_model(spec: Any, run: RunDir, acc: Any, rows: list[dict], items: list,
                tokenizer: Any, model_path: str, fingerprint: str) -> dict[str, Any]:
    """Train on `rows` (tokenized as `items`) with the Accelerator `acc`; return the summary
    fields of this stage."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    train, method = spec.train, spec.train.method
    set_seed(spec.run.seed)
    model = load_training_model(spec, model_path)
    if method != "sft":  # the ratio to the reference pass must be 1 at step 0
        dropped = disable_dropout(model)
        if dropped:
            logger.info("%s: %d dropout(s) turned off for the reference pass and training "
                        "(the ratio to pi_ref must not carry dropout noise)", method, dropped)
    trainable, total = count_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=train.weight_decay)
    plan = BatchPlan(len(rows), train.batch_size, acc.num_processes,
                     train.gradient_accumulation_steps, spec.run.seed, train.epochs)
    total_steps = plan.total_steps
    scheduler = get_scheduler(train.lr_scheduler, optimizer,
                              num_warmup_steps=math.ceil(train.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)
    model.train()
    CpuSpeedups.for_training(spec, acc.unwrap_model(model), acc.device)
    train_dir = run.stage_dir("train")
    pad_id = tokenizer.pad_token_id
    pairs = method == "dpo"

    ckpt, saved = resume_point(acc, train_dir, fingerprint, total_steps)
    prefix = FrozenPrefix.for_training(spec, acc.unwrap_model(model),
                                       sum(len(i["chosen"].input_ids) for i in items),
                                       acc.num_processes)
    ref = None
    if method != "sft":
        ref = reference_pass(acc, model, plan, items, rows, pad_id, pairs, run, fingerprint,
                             started_training=ckpt is not None, prefix=prefix)
    state = {"step": 0, "tokens": 0, "train_s": 0.0}
    if ckpt is not None:
        acc.load_state(str(ckpt))
        state.update({k: saved[k] for k in state})
        logger.info("resumed from %s at step %d of %d", ckpt, state["step"], total_steps)
        if acc.is_local_main_process:
            run.emit("resume", "train", step=state["step"], checkpoint=str(ckpt))

    start_trackers(acc, spec)
    progress = Progress(run if acc.is_main_process else None, "train", total=total_steps,
                        initial=state["step"], unit="step")
    stop = _StopFlag()
    handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    window = MetricsWindow()
    started = time.time() - state["train_s"]
    rewards = torch.tensor([r["reward"] for r in rows], dtype=torch.float32)
    try:
        while state["step"] < total_steps:
            grad_norm = None
            for j in range(state["step"] * plan.grad_accum, (state["step"] + 1) * plan.grad_accum):
                idx = plan.micro_batch(j, acc.process_index)
                batch = {k: v.to(acc.device) for k, v in
                         make_batch(items, idx, pad_id, pairs).items()}
                with acc.accumulate(model):
                    loss, stats = _micro_step(method, model, batch, idx, ref, rewards, spec,
                                              prefix)
                    acc.backward(loss)
                    if acc.sync_gradients:
                        norm = acc.clip_grad_norm_(params, train.max_grad_norm)
                        grad_norm = None if norm is None else float(norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window.add(loss.detach(), stats, batch)
            scheduler.step()
            state["step"] += 1
            epoch = plan.epoch_of(state["step"] * plan.grad_accum)
            progress.update(1)
            last = state["step"] == total_steps
            if state["step"] % train.logging_steps == 0 or last:
                metrics = window.flush(acc, grad_norm, scheduler.get_last_lr()[0], epoch)
                state["tokens"] += metrics.pop("_tokens")
                if acc.is_main_process:
                    run.emit("metrics", "train", step=state["step"], **metrics)
                log_metrics(acc, metrics, state["step"])
            state["train_s"] = time.time() - started
            if (train.save_model_steps and not last
                    and state["step"] % train.save_model_steps == 0):
                save_step_model(acc, model, tokenizer, spec, train_dir, state["step"])
            if _should_stop(acc, stop):
                path = _save_checkpoint(acc, train_dir, state, fingerprint, total_steps)
                if acc.is_local_main_process:  # every machine's job records the stop
                    run.emit("stopped", "train", step=state["step"], checkpoint=str(path))
                    run.update_stage("train", checkpoint=str(path), resume=(
                        f"checkpoint {path.name} saved; Start resumes from it"))
                raise TrainingInterrupted(f"stopped by signal at step {state['step']}")
            if last or (train.save_steps and state["step"] % train.save_steps == 0):
                _save_checkpoint(acc, train_dir, state, fingerprint, total_steps)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        progress.close()
        finish_trackers(acc)
    final = save_final_model(acc, model, tokenizer, spec, train_dir)
    if train.save_model_steps:
        link_final_as_step(acc, spec, train_dir, state["step"])
    return {"steps": state["step"], "total_steps": total_steps, "tokens": state["tokens"],
            "train_s": round(state["train_s"], 2),
            "tokens_per_s": round(state["tokens"] / max(state["train_s"], 1e-9), 2),
            "trainable_params": trainable, "total_params": total, "final_model": str(final)}


def _micro_step(method: str, model: Any, batch: dict, idx: list[int], ref: dict | None,
                rewards: torch.Tensor, spec: Any,
                prefix: FrozenPrefix | None = None) -> tuple[torch.Tensor, dict]:
    """Loss and statistics of one micro-batch for train.method."""
    if prefix is not None:
        prefix.ensure(model, batch, idx)
        with prefix.replaying(idx, batch["input_ids"].shape[1], batch["input_ids"].device):
            logp, n = completion_logprobs(model, batch)
    else:
        logp, n = completion_logprobs(model, batch)  # [B] (dpo: [2B], chosen first)
    if method == "sft":
        return sft_loss(logp, n), {"completion_length": n}
    if method == "dpo":
        b = len(idx)
        ref_c = torch.tensor([ref[i]["sum_logprob"] for i in idx], device=logp.device)
        ref_r = torch.tensor([ref[i]["rejected_sum_logprob"] for i in idx], device=logp.device)
        loss, stats = dpo_loss(logp[:b], logp[b:], ref_c, ref_r, spec.train.dpo_beta)
        stats["completion_length"] = n[:b]
        return loss, stats
    ref_sum = torch.tensor([ref[i]["sum_logprob"] for i in idx], device=logp.device)
    reward = rewards[idx].to(logp.device)
    loss, stats = length_harmonizing_loss(logp, ref_sum, n, reward, spec.train.epsilon,
                                          spec.reward.ratio_level)
    stats.update(reward=reward, completion_length=n)
    return loss, stats


def _should_stop(acc: Any, stop: _StopFlag) -> bool:
    flag = torch.tensor([1.0 if stop.signum is not None else 0.0], device=acc.device)
    if acc.num_processes > 1:
        flag = acc.reduce(flag, reduction="sum")
    return bool(flag.item() > 0)


def _save_checkpoint(acc: Any, train_dir: Path, state: dict, fingerprint: str,
                     total_steps: int) -> Path:
    """Save the resumable state to checkpoints/step-N (complete, or not there at all) and
    remove older checkpoints: on every machine, in its own run directory."""
    root = train_dir / "checkpoints"
    final, tmp = root / f"step-{state['step']}", root / f".step-{state['step']}.tmp"
    if acc.is_local_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_local_main_process:
        atomic_write_json(tmp / "trainer_state.json",
                          {**state, "fingerprint": fingerprint, "total_steps": total_steps})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in root.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint saved: %s", final)
    acc.wait_for_everyone()
    return final
