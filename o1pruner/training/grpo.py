"""`o1pruner train SPEC` for the on-policy methods (`train.method`: grpo_length, thinkprune):
TRL's GRPOTrainer samples G completions of each training problem with the model being
trained, rewards them (o1pruner/training/grpo_rewards.py) and takes a clipped policy-gradient
step on the group-relative advantages. No pre-samples are read: the problems come from the
data registry (`data.train`, its limits and shuffle), prompted as pre-sampling prompts them
(the prompt template, the thinking switch, the same prompt token ids).

It writes where the off-policy methods write: `train/final/` (the model in save_dtype),
`train/summary.json`, `metrics`/`progress`/`resume`/`stopped` events in events.jsonl, the
trackers of train.report_to, and resumable checkpoints in `train/checkpoints/step-N/` (TRL's
checkpoint, renamed into place when complete, with `o1pruner_state.json`). A SIGTERM/SIGINT
finishes the current step, saves a checkpoint and stops; a re-run resumes from it.

Generation: transformers generate (TRL's default) on CPU; on a GPU with `presample.engine`
vllm or auto (and vLLM installed), TRL's vLLM in colocate mode (in the training processes,
sharing their GPUs). thinkprune's cap of round r (`run.rounds`) is the spec's
`train.grpo_token_limit(r)`; a round's run directory says which round it is.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import signal
import time
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import atomic_write_json, read_json
from o1pruner.jobs import RunDir
from o1pruner.training.grpo_callbacks import STATE_FILE

logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
VLLM_MEMORY = 0.3  # TRL's vllm_gpu_memory_utilization default: colocated vLLM's GPU share


def round_number(run: RunDir) -> int:
    """Which round (`run.rounds`) a run directory trains: r for `<run>/rounds/round-r/`
    (o1pruner/rounds.py), else 1."""
    from o1pruner.rounds import ROUNDS_DIR, round_label

    match = re.fullmatch(r"round-(\d+)", run.root.name)
    if match and run.root.parent.name == ROUNDS_DIR \
            and run.root.name == round_label(int(match.group(1))):
        return int(match.group(1))
    return 1


def trl_prompt(tokenizer: Any, prompt: str) -> str:
    """The prompt text to hand TRL, which tokenizes text prompts with the tokenizer's
    special tokens: without the BOS the chat template already wrote when the tokenizer adds
    one itself, so that TRL's prompt ids are exactly pre-sampling's (`encode_prompt`)."""
    from o1pruner.sampling.engines import encode_prompt

    want = encode_prompt(tokenizer, prompt)
    bos = getattr(tokenizer, "bos_token", None)
    for text in (prompt, prompt[len(bos):] if bos and prompt.startswith(bos) else None):
        if text is not None and list(tokenizer(text)["input_ids"]) == want:
            return text
    raise UserError("train.method: the tokenizer does not give the same prompt tokens to TRL "
                    "as to pre-sampling (special tokens around the chat template); use an "
                    "off-policy method (lh, sft, dpo) with this model")


def training_problems(spec: Any, tokenizer: Any) -> list[dict[str, Any]]:
    """The data set's rows for TRL: prompt (text), gold, problem_id."""
    from o1pruner.data import load_problems
    from o1pruner.prompts import build_prompt, load_template

    problems = load_problems(spec.data.train, spec.data.local_dir, spec.data.train_limit,
                             spec.data.shuffle_seed)
    if not problems:
        raise UserError(f"data.train: {spec.data.train.name} has no problems")
    template = load_template(spec.model)
    return [{"prompt": trl_prompt(tokenizer, build_prompt(tokenizer, template, p.problem,
                                                          thinking=spec.model.thinking)),
             "gold": str(p.gold), "problem_id": str(p.id)} for p in problems]


def reward_functions(spec: Any, tokenizer: Any, stop_ids: list[int],
                     limit: int) -> tuple[list[Any], list[float]]:
    """The method's TRL reward functions and their weights."""
    from o1pruner.training.grpo_rewards import (
        AccuracyReward,
        CappedAccuracyReward,
        CompletionJudge,
        GroupLengthReward,
    )

    train = spec.train
    judge = CompletionJudge(tokenizer, spec.model.thinking, spec.presample.grading, stop_ids)
    if train.method == "grpo_length":
        funcs = [AccuracyReward(judge),
                 GroupLengthReward(judge, train.grpo_num_generations, spec.reward.length)]
        weights = [1.0, train.grpo_length_weight]
    else:
        funcs, weights = [CappedAccuracyReward(judge, limit)], [1.0]
    if train.grpo_overlong_buffer:
        from trl.rewards import get_soft_overlong_punishment

        funcs.append(get_soft_overlong_punishment(limit, train.grpo_overlong_buffer))
        weights.append(1.0)
    return funcs, weights


def uses_vllm(spec: Any) -> bool:
    """vLLM generates inside GRPO on a CUDA machine when presample.engine allows it."""
    import importlib.util

    import torch

    if spec.presample.engine == "hf" or not torch.cuda.is_available():
        return False
    if importlib.util.find_spec("vllm") is None:
        if spec.presample.engine == "vllm":
            raise UserError("presample.engine: vllm, but vLLM is not installed (pip install "
                            "'o1pruner[gpu]'); or set presample.engine: hf")
        return False
    return True


def grpo_config(spec: Any, train_dir: Path, limit: int, weights: list[float],
                prompt_tokens: int, stop_ids: list[int]) -> Any:
    """TRL's GRPOConfig from the spec (the fields' meanings are in docs/spec.md)."""
    import torch
    from trl import GRPOConfig

    from o1pruner.hardware import resolve_train_precision
    from o1pruner.training.distributed import deepspeed_config

    train = spec.train
    precision = resolve_train_precision(train.precision)
    if precision == "fp16" and not torch.cuda.is_available():
        raise UserError("train.precision: fp16 needs a GPU; use auto, bf16 or fp32 on CPU")
    vllm = uses_vllm(spec)
    extra: dict[str, Any] = {}
    if vllm:
        extra = {"use_vllm": True, "vllm_mode": "colocate",
                 "vllm_tensor_parallel_size": spec.presample.tensor_parallel_size,
                 "vllm_gpu_memory_utilization": VLLM_MEMORY,
                 "vllm_max_model_length": prompt_tokens + limit,
                 "generation_kwargs": {"stop_token_ids": list(stop_ids)}}  # end-of-turn too
    else:  # the training model's config has use_cache off (for training); generate with it
        extra = {"generation_kwargs": {"use_cache": True}}
    if "tensorboard" in train.report_to:  # where lh writes it (transformers reads this)
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(train_dir / "tensorboard")
    if train.deepspeed_stage:
        extra["deepspeed"] = deepspeed_config(train, int(os.environ.get("WORLD_SIZE", "1")))
    return GRPOConfig(
        output_dir=str(train_dir / "checkpoints"),
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        num_generations=train.grpo_num_generations,
        max_completion_length=limit,
        temperature=train.grpo_temperature,
        reward_weights=weights,
        epsilon=train.epsilon,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # a float below 1: a share of the steps
        num_train_epochs=train.epochs,
        max_grad_norm=train.max_grad_norm,
        weight_decay=train.weight_decay,
        logging_steps=train.logging_steps,
        save_strategy="steps" if train.save_steps else "no",
        save_steps=train.save_steps or 1,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=train.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        seed=spec.run.seed,
        data_seed=spec.run.seed,
        report_to=list(train.report_to) or "none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        **extra,
    )


def latest_checkpoint(train_dir: Path, fingerprint: str) -> tuple[Path | None, dict]:
    """The newest complete checkpoint and its record, or (None, {}); one of another spec or
    training set is an error (delete it to start over)."""
    found = sorted((int(m.group(1)), p) for p in (train_dir / "checkpoints").glob("step-*")
                   if (m := STEP_DIR.match(p.name)) and (p / STATE_FILE).exists())
    if not found:
        return None, {}
    path = found[-1][1]
    saved = read_json(path / STATE_FILE, {}) or {}
    if saved.get("fingerprint") != fingerprint:
        raise UserError(f"{path} was written for another training set or spec; delete "
                        f"{train_dir / 'checkpoints'} to start over")
    return path, saved


def train_grpo(spec: Any, run: RunDir) -> dict[str, Any]:
    """Train the spec's model with its on-policy method; return the stage's summary."""
    from o1pruner.hardware import precision_record, resolve_train_precision
    from o1pruner.models import load_tokenizer, resolve_model
    from o1pruner.sampling.engines import stop_token_ids
    from o1pruner.training.distributed import reset_accelerate_state
    from o1pruner.training.saving import save_dtype
    from o1pruner.training.stage import _drop_checkpoints, training_fingerprint

    started = time.time()
    train, train_dir = spec.train, run.stage_dir("train")
    main = os.environ.get("RANK", "0") == "0"
    r = round_number(run)
    limit = train.grpo_token_limit(r)
    model_path = resolve_model(spec.model)
    tokenizer = load_tokenizer(spec.model, model_path)
    rows = training_problems(spec, tokenizer)
    fingerprint = training_fingerprint(spec, [*rows, {"round": r, "token_limit": limit}])
    summary_path = train_dir / "summary.json"
    summary = read_json(summary_path, {}) or {}
    if ((train_dir / "final").is_dir() and summary.get("fingerprint") == fingerprint
            and summary.get("save_dtype") == save_dtype(train)):
        if main:
            logger.info("train: %s already holds the trained model for this spec; skipped",
                        train_dir / "final")
            run.emit("skipped", "train", reason="final model exists",
                     final_model=summary.get("final_model"))
        return summary

    stop_ids = stop_token_ids(tokenizer, model_path)
    prompt_tokens = max(len(tokenizer(row["prompt"])["input_ids"]) for row in rows)
    funcs, weights = reward_functions(spec, tokenizer, stop_ids, limit)
    reset_accelerate_state()
    config = grpo_config(spec, train_dir, limit, weights, prompt_tokens, stop_ids)
    if main:
        logger.info("%s: %d problems x %d completions a step-group, token limit %d%s, "
                    "generation by %s", train.method, len(rows), train.grpo_num_generations,
                    limit, f" (round {r})" if train.method == "thinkprune" else "",
                    "vLLM (colocate)" if config.use_vllm else "transformers generate")
        run.emit("dataset", "train", problems=len(rows), method=train.method,
                 num_generations=train.grpo_num_generations, token_limit=limit, round=r)
        run.emit("precision", "train", **precision_record("float32", train.precision))
    ckpt, saved = latest_checkpoint(train_dir, fingerprint)
    trainer, callback = _make_trainer(spec, run, config, model_path, tokenizer, rows, funcs,
                                      stop_ids, fingerprint, saved.get("train_s", 0.0))
    stop = callback.stop
    if ckpt is not None and main:
        logger.info("resuming from %s at step %d", ckpt, saved["step"])
        run.emit("resume", "train", step=saved["step"], checkpoint=str(ckpt))
    handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        callback.close()
    state = trainer.state
    if stop.stopped_at is not None:
        from o1pruner.training.trainer import TrainingInterrupted

        path = train_dir / "checkpoints" / f"step-{stop.stopped_at}"
        if main:
            run.emit("stopped", "train", step=stop.stopped_at, checkpoint=str(path))
            run.update_stage("train", checkpoint=str(path),
                             resume=f"checkpoint {path.name} saved; Start resumes from it")
        raise TrainingInterrupted(f"stopped by signal at step {stop.stopped_at}")

    from o1pruner.training.finetuning import count_parameters
    from o1pruner.training.saving import save_final_model

    final = save_final_model(trainer.accelerator, trainer.model, tokenizer, spec, train_dir)
    trainable, total = count_parameters(trainer.model)
    train_s = callback.timer.elapsed()
    tokens = int(state.num_input_tokens_seen or 0)
    summary = {
        "method": train.method, "finetuning": train.finetuning, "steps": state.global_step,
        "problems": len(rows), "num_generations": train.grpo_num_generations,
        "token_limit": limit, "round": r, "wall_s": round(time.time() - started, 2),
        "train_s": round(train_s, 2), "tokens": tokens,
        "tokens_per_s": round(tokens / max(train_s, 1e-9), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trainable_params": trainable, "total_params": total,
        "world_size": trainer.accelerator.num_processes, "final_model": str(final),
        "save_dtype": save_dtype(train), "fingerprint": fingerprint,
        "precision": resolve_train_precision(train.precision),
        "generation": "vllm" if config.use_vllm else "transformers",
    }
    if trainer.accelerator.is_main_process:
        atomic_write_json(summary_path, summary)
        run.emit("summary", "train", **{k: v for k, v in summary.items() if k != "fingerprint"})
        logger.info("train done: %s", summary)
    trainer.accelerator.wait_for_everyone()
    if not train.keep_last_checkpoint and trainer.accelerator.is_local_main_process:
        _drop_checkpoints(train_dir)
    return summary


def _make_trainer(spec: Any, run: RunDir, config: Any, model_path: str, tokenizer: Any,
                  rows: list[dict], funcs: list[Any], stop_ids: list[int], fingerprint: str,
                  train_s: float) -> tuple[Any, Any]:
    """The GRPOTrainer with our model (fine-tuning mode applied, fp32 master weights) and
    end-of-turn tokens; and its callback into the run directory, which holds the stop flag
    the signal handlers set and the training time."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from o1pruner.training.cpu_speed import CpuSpeedups
    from o1pruner.training.finetuning import load_training_model
    from o1pruner.training.grpo_callbacks import RunCallback, StopFlag, Timer

    model = load_training_model(spec, model_path)
    base = getattr(model, "get_base_model", lambda: model)()
    base.generation_config.eos_token_id = list(stop_ids)  # TRL stops at each of them
    callback = RunCallback(run, StopFlag(), Timer(train_s), fingerprint,
                           config.max_completion_length)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=config,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          callbacks=[callback])
    # On CPU, TRL's generation runs the model under accelerate's bf16 autocast: without
    # these, every token re-casts the frozen weights and sends the head through `bmm`
    # (benchmarks/grpo_generate.py).
    CpuSpeedups.for_training(spec, base, trainer.accelerator.device)
    return trainer, callback
