"""`o1pruner train SPEC`: reward and selection -> train/dataset.jsonl -> reference pass ->
training -> train/final/ and train/summary.json.

Re-running resumes: a finished stage (final/ present, summary.json for the same data and
spec) is skipped, an interrupted one continues from its last checkpoint. With several
machines, machine 0's run directory decides and holds the results (training/distributed.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import atomic_write_json, atomic_write_text, read_json
from o1pruner.jobs import RunDir, job_process, register_process, run_dir_for, stage_logging
from o1pruner.spec import GRPO_FIELDS, GRPO_METHODS, TrainSpec
from o1pruner.training.distributed import (
    is_launched_worker,
    launch_workers,
    main_process_value,
    make_accelerator,
    needs_launch,
    prepare_environment,
)
from o1pruner.training.trackers import check_trackers

logger = logging.getLogger(__name__)

DATASET_FIELDS = ("problem_id", "sample_idx", "prompt", "completion", "num_tokens", "correct",
                  "length_term", "accuracy_term", "reward_raw", "reward", "truncated",
                  "finish_reason", "rejected")
# Not what is trained: where this machine is and how it reaches machine 0 (they differ
# between the machines of one run), the dtype of final/ (a change saves it again), which
# intermediate models are written and where the metrics are reported.
UNTRAINED_FIELDS = ("machine_rank", "main_process_ip", "main_process_port", "save_dtype",
                    "save_model_steps", "keep_last_checkpoint", "report_to")
# Fields added after runs were trained, with the value that trains as before they existed:
# at that value they stay out of the fingerprint, so those runs are not trained again.
# The on-policy methods' fields (issue #31) join at their defaults: lh/sft/dpo never read them.
LATER_FIELDS = {"train": {"num_machines": 1, **{
    f: TrainSpec.model_fields[f].get_default(call_default_factory=True)
    for f in (*GRPO_FIELDS, "grpo_length_weight", "thinkprune_cap_schedule")}},
    "reward": {"skip_unsolved": False}}


def run_train(spec: Any) -> RunDir:
    """Train the spec's model: on its run's pre-samples (train.method: lh, sft or dpo), or
    on-policy on TRL's GRPOTrainer (grpo_length, thinkprune: training/grpo.py)."""
    run = run_dir_for(spec)
    if is_launched_worker():  # one rank of several processes: the launcher records the job
        register_process(run, f"train rank {os.environ.get('RANK', '?')}")
        prepare_environment(spec.train)
        local_main = os.environ.get("LOCAL_RANK", "0") == "0"  # one log per machine
        with stage_logging(run, "train") if local_main else nullcontext():
            _train(spec, run)
        return run
    with job_process(run, "train", spec.to_yaml()) as lock:
        check_trackers(spec.train.report_to)
        if needs_launch(spec.train):
            _run_launched(spec, run, lock)
        else:
            prepare_environment(spec.train)
            _train(spec, run)
    return run


def _run_launched(spec: Any, run: RunDir, lock: Any) -> None:
    """Start this machine's `train.devices` worker processes under accelerate and wait for
    them; a stop reaches every rank, and raises KeyboardInterrupt once they have saved and
    exited."""
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
    """Hash of what the trained model depends on: the rows, model, reward, train (less
    UNTRAINED_FIELDS, and LATER_FIELDS at their former value), seed. train.precision counts
    as resolved on this machine (`auto` is the precision it trains in); model.dtype changes
    only the pre-samples, which are in the rows."""
    from o1pruner.hardware import resolve_train_precision

    def section(name: str, exclude: tuple[str, ...] = ()) -> dict:
        part = getattr(spec, name)
        later = {f for f, value in LATER_FIELDS.get(name, {}).items()
                 if getattr(part, f) == value}
        return part.model_dump(mode="json", exclude=set(exclude) | later)

    model, train = section("model"), section("train", UNTRAINED_FIELDS)
    train["precision"] = resolve_train_precision(spec.train.precision)
    text = json.dumps({"rows": rows, "model": model, "reward": section("reward"),
                       "train": train, "seed": spec.run.seed},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _train(spec: Any, run: RunDir) -> dict[str, Any]:
    from o1pruner.hardware import precision_record, resolve_train_precision
    from o1pruner.models import load_tokenizer, resolve_model
    from o1pruner.reward import build_training_set
    from o1pruner.training.dataset import tokenize_rows
    from o1pruner.training.saving import save_dtype
    from o1pruner.training.trackers import make_trackers
    from o1pruner.training.trainer import train_model

    if spec.train.method in GRPO_METHODS:  # on-policy: no pre-samples, TRL's trainer
        from o1pruner.training.grpo import train_grpo

        return train_grpo(spec, run)
    started = time.time()
    train_dir = run.root / "train"
    check_trackers(spec.train.report_to)  # a launched rank checks too (before any work)
    rows = build_training_set(spec, run.root / "presample")
    fingerprint = training_fingerprint(spec, rows)
    acc = make_accelerator(spec.train, make_trackers(spec.train.report_to, train_dir,
                                                     run.root.name))
    main = acc.is_main_process
    _check_same_training_set(acc, fingerprint)
    summary_path = train_dir / "summary.json"
    summary = read_json(summary_path, {}) or {}
    done = ((train_dir / "final").is_dir() and summary.get("fingerprint") == fingerprint
            and summary.get("save_dtype", "float32") == save_dtype(spec.train))
    if main_process_value(acc, done):
        if main:
            logger.info("train: %s already holds the trained model for this spec; skipped",
                        train_dir / "final")
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
        _warn_about_learning(spec, run, rows)
        run.emit("precision", "train", **precision_record("float32", spec.train.precision))

    model_path = resolve_model(spec.model)
    tokenizer = load_tokenizer(spec.model, model_path)
    if tokenizer.pad_token_id is None:
        raise UserError(f"model.name_or_path: the tokenizer of {model_path} has no pad or "
                        "eos token")
    items = tokenize_rows(tokenizer, rows, spec.train.max_length)
    result = train_model(spec, run, acc, rows, items, tokenizer, model_path, fingerprint)
    summary = {
        "method": spec.train.method, "finetuning": spec.train.finetuning,
        "steps": result["steps"], "samples": len(rows), "truncated": truncated,
        "wall_s": round(time.time() - started, 2), "train_s": result["train_s"],
        "tokens": result["tokens"], "tokens_per_s": result["tokens_per_s"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trainable_params": result["trainable_params"], "total_params": result["total_params"],
        "world_size": acc.num_processes, "final_model": result["final_model"],
        "save_dtype": save_dtype(spec.train), "fingerprint": fingerprint,
        "precision": resolve_train_precision(spec.train.precision),
    }
    if main:
        atomic_write_json(summary_path, summary)
        run.emit("summary", "train", **{k: v for k, v in summary.items() if k != "fingerprint"})
        logger.info("train done: %s", summary)
    if not spec.train.keep_last_checkpoint:
        acc.wait_for_everyone()  # the summary is written: the run is complete without it
        if acc.is_local_main_process:  # every machine, in its own run directory
            _drop_checkpoints(train_dir)
    return summary


def _warn_about_learning(spec: Any, run: RunDir, rows: list[dict[str, Any]]) -> None:
    """Emit the `warnings` event that the status line, the Samples explorer and the results
    read: a training set that cannot change the model (every reward 0) or cannot make it
    more accurate (no correct pre-sample), with the cause and the fix; else an empty one."""
    from o1pruner.analysis import learning_warning, warning_text
    from o1pruner.jobs import emit_warnings
    from o1pruner.reward import read_presample

    _, samples, _ = read_presample(run.root / "presample")
    warning = learning_warning(samples, [r["reward"] for r in rows], spec.train.method,
                               spec.presample.max_new_tokens)
    if warning:
        logger.warning("%s", warning_text(warning))
    emit_warnings(run, "train", [warning] if warning else [])


def _drop_checkpoints(train_dir: Path) -> None:
    """Delete the finished run's resumable checkpoints (train.keep_last_checkpoint off)."""
    folder = train_dir / "checkpoints"
    if folder.is_dir():
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("train: deleted the resumable checkpoint %s (%.1f GB; the model is "
                    "train/final; train.keep_last_checkpoint keeps it)", folder, size / 1e9)


def _check_same_training_set(acc: Any, fingerprint: str) -> None:
    """Every process must train on the same rows: with several machines each reads the
    pre-samples of its own run directory."""
    if acc.num_processes == 1:
        return
    from accelerate.utils import gather_object

    prints = gather_object([fingerprint])
    if len(set(prints)) > 1:
        raise UserError(f"train: the processes' training sets differ (fingerprints {prints} "
                        "by process): every machine needs the same spec and a copy of machine "
                        "0's presample/ folder in its own run directory")
