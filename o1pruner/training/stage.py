"""`o1pruner train SPEC`: reward and selection -> train/dataset.jsonl -> reference pass ->
training -> train/final/ and train/summary.json.

Re-running resumes: a finished stage (final/ present, summary.json for the same data and
spec) is skipped, an interrupted one continues from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import time
from contextlib import nullcontext
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import atomic_write_json, atomic_write_text, read_json
from o1pruner.job import job_process, register_process
from o1pruner.progress import stage_logging
from o1pruner.rundir import RunDir, run_dir_for
from o1pruner.training.distributed import is_launched_worker, launch_workers, prepare_environment

logger = logging.getLogger(__name__)

DATASET_FIELDS = ("problem_id", "sample_idx", "prompt", "completion", "num_tokens", "correct",
                  "length_term", "accuracy_term", "reward_raw", "reward", "truncated",
                  "finish_reason", "rejected")


def run_train(spec: Any) -> RunDir:
    """Train the spec's model on its run's pre-samples (train.method: lh, sft or dpo)."""
    run = run_dir_for(spec)
    if is_launched_worker():  # one rank of `train.devices` processes: the launcher records
        register_process(run, f"train rank {os.environ.get('RANK', '?')}")
        prepare_environment(spec.train)
        main = int(os.environ.get("RANK", "0")) == 0
        with stage_logging(run, "train") if main else nullcontext():
            _train(spec, run, main)
        return run
    with job_process(run, "train", spec.to_yaml()) as lock:
        if spec.train.devices > 1:
            _run_launched(spec, run, lock)
        else:
            prepare_environment(spec.train)
            _train(spec, run, main=True)
    return run


def _run_launched(spec: Any, run: RunDir, lock: Any) -> None:
    """Start `train.devices` worker processes under accelerate and wait for them; a stop
    reaches every rank, and raises KeyboardInterrupt once they have saved and exited."""
    started = time.time()
    code, asked = launch_workers(spec.train, run, lock)
    stopped = asked or any(e.get("kind") == "stopped" and e.get("time", 0) >= started
                           for e in run.events() if e.get("stage") == "train")
    if stopped and code != 0:
        raise KeyboardInterrupt(f"training processes stopped (exit code {code})")
    if code != 0:
        raise UserError(f"training processes exited with code {code}; see "
                        f"{run.log_path('train')} and the output above")


def training_fingerprint(spec: Any, rows: list[dict]) -> str:
    """Hash of what the trained model depends on: the rows, model, reward, train, seed."""
    text = json.dumps({"rows": rows, "model": spec.model.model_dump(mode="json"),
                       "reward": spec.reward.model_dump(mode="json"),
                       "train": spec.train.model_dump(mode="json"), "seed": spec.run.seed},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _train(spec: Any, run: RunDir, main: bool) -> dict[str, Any]:
    from o1pruner.models import load_tokenizer, resolve_model
    from o1pruner.reward import build_training_set
    from o1pruner.training.dataset import tokenize_rows
    from o1pruner.training.trainer import train_model

    started = time.time()
    train_dir = run.root / "train"
    rows = build_training_set(spec, run.root / "presample")
    fingerprint = training_fingerprint(spec, rows)
    summary_path = train_dir / "summary.json"
    summary = read_json(summary_path, {}) or {}
    if (train_dir / "final").is_dir() and summary.get("fingerprint") == fingerprint:
        logger.info("train: %s already holds the trained model for this spec; skipped",
                    train_dir / "final")
        if main:
            run.emit("skipped", "train", reason="final model exists", final_model=summary.get(
                "final_model"))
        return summary

    truncated = sum(bool(r["truncated"]) for r in rows)
    if main:
        text = "".join(json.dumps({k: r[k] for k in DATASET_FIELDS if k in r},
                                  ensure_ascii=False) + "\n" for r in rows)
        path = train_dir / "dataset.jsonl"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
        problems = len({str(r["problem_id"]) for r in rows})
        logger.info("training set: %d samples from %d problems (method %s), %d longer than "
                    "train.max_length=%d (truncated for the loss; rewards use full lengths)",
                    len(rows), problems, spec.train.method, truncated, spec.train.max_length)
        run.emit("dataset", "train", samples=len(rows), problems=problems,
                 truncated=truncated, max_length=spec.train.max_length)

    model_path = resolve_model(spec.model)
    tokenizer = load_tokenizer(spec.model, model_path)
    if tokenizer.pad_token_id is None:
        raise UserError(f"model.name_or_path: the tokenizer of {model_path} has no pad or "
                        "eos token")
    items = tokenize_rows(tokenizer, rows, spec.train.max_length)
    result = train_model(spec, run, rows, items, tokenizer, model_path, fingerprint)
    summary = {
        "method": spec.train.method, "finetuning": spec.train.finetuning,
        "steps": result["steps"], "samples": len(rows), "truncated": truncated,
        "wall_s": round(time.time() - started, 2), "train_s": result["train_s"],
        "tokens": result["tokens"], "tokens_per_s": result["tokens_per_s"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trainable_params": result["trainable_params"], "total_params": result["total_params"],
        "final_model": result["final_model"], "fingerprint": fingerprint,
    }
    if main:
        atomic_write_json(summary_path, summary)
        run.emit("summary", "train", **{k: v for k, v in summary.items() if k != "fingerprint"})
        logger.info("train done: %s", summary)
    return summary
