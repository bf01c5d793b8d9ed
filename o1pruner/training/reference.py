"""The reference pass: log pi_ref(y|x) of every training sample, computed once by the
training code itself and stored, so no second model copy is held while training.

It runs the prepared (wrapped) model before the first optimizer step, in train mode with
every dropout off (as the policy trains: `finetuning.disable_dropout`), over exactly the
micro-batches of the first training pass (same rows, same padding, same precision), so the
first step sees r = 1 exactly. Results are appended per micro-batch to
`train/reference_logprobs.jsonl` (by the main process, on machine 0); an interrupted pass
resumes at the first missing batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from o1pruner.errors import UserError
from o1pruner.files import JsonlWriter, atomic_write_json, read_json, read_jsonl
from o1pruner.jobs import Progress, RunDir
from o1pruner.training.dataset import BatchPlan, make_batch
from o1pruner.training.distributed import main_process_value
from o1pruner.training.loss import completion_logprobs

logger = logging.getLogger(__name__)


def reference_pass(acc: Any, model: Any, plan: BatchPlan, items: list, rows: list[dict],
                   pad_id: int, pairs: bool, run: RunDir, fingerprint: str,
                   started_training: bool, prefix: Any = None) -> dict[int, dict[str, float]]:
    """{row index: {sum_logprob, n_tokens[, rejected_sum_logprob, rejected_n_tokens]}}.
    With a FrozenPrefix, the input of its first trainable layer is recorded on the way.
    The main process keeps the file and sends what it holds to the others."""
    train_dir = run.stage_dir("train")
    path, meta_path = train_dir / "reference_logprobs.jsonl", train_dir / "reference_meta.json"
    found = _batches_to_compute(path, meta_path, fingerprint, plan, len(rows),
                                started_training) if acc.is_main_process else None
    problem, todo = main_process_value(acc, found)
    if problem:
        raise UserError(problem)
    if todo:
        logger.info("reference pass: %d of %d micro-batches to compute", len(todo),
                    plan.micro_per_pass)
        _compute(acc, model, plan, items, rows, pad_id, pairs, run, path, todo, prefix)
    else:
        logger.info("reference log-probs complete (%s); reusing them", path)
    problem, values = None, {}
    if acc.is_main_process:
        for rec in read_jsonl(path):
            values.setdefault(rec["row"], rec)
        missing = [i for i in range(len(rows)) if i not in values]
        if missing:
            problem = f"{path}: reference log-probs missing for rows {missing[:5]}..."
    problem, values = main_process_value(acc, (problem, values))
    if problem:
        raise UserError(problem)
    return values


def _batches_to_compute(path: Path, meta_path: Path, fingerprint: str, plan: BatchPlan,
                        n_rows: int, started_training: bool) -> tuple[str | None, list[int]]:
    """(problem, micro-batches of the first pass whose log-probs the file lacks); a file of
    another training set is started again, unless training has started."""
    meta = read_json(meta_path, {}) or {}
    if meta.get("fingerprint") != fingerprint:
        if started_training:
            return (f"{path} does not match the training checkpoints; delete {path.parent} to "
                    "train again from the start"), []
        path.unlink(missing_ok=True)
        atomic_write_json(meta_path, {"fingerprint": fingerprint, "rows": n_rows,
                                      "micro_batches": plan.micro_per_pass})
    counts = Counter(r["batch"] for r in read_jsonl(path))
    per_batch = plan.batch_size * plan.world_size
    todo = [i for i in range(plan.micro_per_pass) if counts.get(i, 0) < per_batch]
    if todo and started_training:
        return (f"{path} is incomplete but training has started; delete {path.parent} to train "
                "again from the start"), []
    return None, todo


def _compute(acc: Any, model: Any, plan: BatchPlan, items: list, rows: list[dict],
             pad_id: int, pairs: bool, run: RunDir, path: Path, todo: list[int],
             prefix: Any) -> None:
    from accelerate.utils import gather_object

    writer = JsonlWriter(path) if acc.is_main_process else None
    progress = Progress(run if acc.is_main_process else None, "train", total=len(todo),
                        unit="batch", desc="reference pass")
    model.train()  # the training code path; dropout is off (trainer: disable_dropout)
    try:
        with torch.no_grad():
            for i in todo:
                idx = plan.micro_batch(i, acc.process_index)
                batch = {k: v.to(acc.device) for k, v in
                         make_batch(items, idx, pad_id, pairs).items()}
                if prefix is None:
                    logp, n = completion_logprobs(model, batch)
                else:
                    with prefix.recording(idx, batch["attention_mask"].sum(-1).tolist()):
                        logp, n = completion_logprobs(model, batch)
                records = []
                for b, row in enumerate(idx):
                    rec = {"batch": i, "row": row, "problem_id": rows[row]["problem_id"],
                           "sample_idx": rows[row]["sample_idx"],
                           "sum_logprob": logp[b].item(), "n_tokens": int(n[b].item())}
                    rec["mean_logprob"] = rec["sum_logprob"] / max(rec["n_tokens"], 1)
                    if pairs:
                        k = b + len(idx)
                        rec["rejected_sample_idx"] = rows[row]["rejected"]["sample_idx"]
                        rec["rejected_sum_logprob"] = logp[k].item()
                        rec["rejected_n_tokens"] = int(n[k].item())
                    records.append(rec)
                if acc.num_processes > 1:
                    records = gather_object(records)
                if writer is not None:
                    writer.write_many(records)
                progress.update(1)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
