"""`o1pruner export RUN --out DIR`: a run's trained model as a standalone Hugging Face folder
(config, safetensors weights in the chosen dtype, tokenizer and chat template, generation
config, a README.md model card), loadable unchanged by transformers and vLLM; optionally
pushed to the Hugging Face Hub.

Sources: `train/final/` (default), or with `--checkpoint N` the model of step N
(`train/models/step-N/`, train.save_model_steps) or, if there is none, the resumable
checkpoint `train/checkpoints/step-N/`, whose model weights (accelerate's model.safetensors,
fp32 master weights) are read without its optimizer state. A LoRA run exports its adapter
(peft) unless `--merge-lora` asks for the merged full model. A run of several rounds
(`run.rounds`) exports its last round's model, the one evaluated as `trained`, unless
`--round R` picks another round (`rounds/round-R/train/...`; round 1 is the run's own).

An export is a job of its own folder, `<run>/exports/<name>/` (job.json, logs, and
`export.json` with the result), so that the web UI can launch it detached and show its log,
and it never changes the run's own state. The output folder is written to a temporary
folder and renamed, so it is complete or absent. It is never inside a run directory or a
folder the spec refers to, and it holds a marker file (`.o1pruner-export.json`): `--force`
replaces a folder only when it holds that marker, so it never deletes what it did not write.

Here: the export as a job, its result and the hub push; `export_plan` chooses the source
and checks the output folder, `export_write` writes the folder, `export_card` the model card.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.export_plan import (
    MARKER,
    ExportPlan,
    available_checkpoints,
    describe_checkpoints,
    open_run,
    plan_export,
)
from o1pruner.export_write import checkpoint_state_dict, write_export
from o1pruner.files import atomic_write_json, read_json
from o1pruner.jobs import EXPORTS_DIR, RunDir

logger = logging.getLogger(__name__)

RESULT_FILE = "export.json"


@dataclass
class ExportResult:
    out: str
    kind: str  # "model" or "adapter"
    source: str
    dtype: str
    files: list[str] = field(default_factory=list)
    message: str = ""
    pushed: str | None = None


def export_job_dir(run: RunDir, out: Path) -> RunDir:
    """The job folder of an export of `run` to `out`: <run>/exports/<out name>-<hash>/."""
    key = str(out.expanduser().resolve())
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(key).name).strip("-.")[:60] or "export"
    return RunDir(run.root / EXPORTS_DIR / f"{tail}-{hashlib.sha256(key.encode()).hexdigest()[:8]}")


# ------------------------------------------------------------------------------ exporting
def export_model(run_dir: str | Path, out: str | Path, **options: Any) -> ExportResult:
    """Export a run's model (see the module doc; options as plan_export's), as a job of its
    export folder; returns what was written. A failed hub push raises a UserError after the
    export itself is complete."""
    from o1pruner.jobs import job_process

    plan = plan_export(run_dir, out, **options)
    job = export_job_dir(plan.run, plan.out)
    with job_process(job, "export"):
        started = time.time()
        logger.info("export of %s (%s) to %s, %s%s", plan.run.root, plan.label, plan.out,
                    plan.dtype, ", LoRA adapter" if plan.adapter else "")
        files = write_export(plan)
        kind = "adapter" if plan.adapter else "model"
        message = f"exported the {kind} of {plan.label} ({plan.dtype}) to {plan.out}"
        if plan.adapter:
            message += (" as a LoRA adapter (peft): it loads on top of the base model "
                        f"{plan.spec.model.name_or_path}; pass --merge-lora for a standalone "
                        "model")
        result = ExportResult(str(plan.out), kind, plan.label, plan.dtype, files, message)
        atomic_write_json(job.root / RESULT_FILE, asdict(result) | {
            "run": str(plan.run.root), "seconds": round(time.time() - started, 2)})
        logger.info("%s", message)
        if plan.push_to_hub:
            result.pushed = push_folder(plan.out, plan.push_to_hub)
            result.message += f"; pushed to {result.pushed}"
            atomic_write_json(job.root / RESULT_FILE, asdict(result) | {
                "run": str(plan.run.root), "seconds": round(time.time() - started, 2)})
            logger.info("pushed to %s", result.pushed)
    return result


def read_result(job: RunDir) -> dict[str, Any] | None:
    """export.json of an export job folder, or None."""
    return read_json(job.root / RESULT_FILE)


# ------------------------------------------------------------------------------ the hub
def push_folder(folder: Path, repo_id: str) -> str:
    """Create the hub repository (if needed) and upload `folder`; returns its URL. Any
    failure (offline, no network, no token, no permission) is one UserError naming the step
    that failed; the exported folder stays complete."""
    from huggingface_hub import create_repo, upload_folder

    step = "create_repo"
    try:
        url = create_repo(repo_id, repo_type="model", exist_ok=True)
        step = "upload_folder"
        upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                      commit_message="Upload model exported by o1pruner",
                      ignore_patterns=[MARKER])  # it names local paths
    except Exception as err:  # noqa: BLE001 - the hub's errors vary (HTTP, offline, token)
        detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise UserError(
            f"--push-to-hub {repo_id}: {step} failed ({type(err).__name__}: {detail}). "
            f"The export itself is complete in {folder}; check the network, HF_HUB_OFFLINE "
            f"and your token (HF_TOKEN or `hf auth login`), then push it with `hf upload "
            f"{repo_id} {folder}`") from None
    return str(url)


__all__ = ["EXPORTS_DIR", "RESULT_FILE", "ExportPlan", "ExportResult", "available_checkpoints",
           "checkpoint_state_dict", "describe_checkpoints", "export_job_dir", "export_model",
           "open_run", "plan_export", "push_folder", "read_result", "write_export"]
