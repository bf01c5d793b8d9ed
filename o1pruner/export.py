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
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import atomic_write_json, read_json
from o1pruner.hardware import DTYPE_OF_PRECISION
from o1pruner.jobs import RunDir

logger = logging.getLogger(__name__)

DTYPES = DTYPE_OF_PRECISION  # --dtype bf16|fp16|fp32 -> the saved dtype
EXPORTS_DIR = "exports"
RESULT_FILE = "export.json"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
STEP = re.compile(r"^step-(\d+)$")
MODEL_FILES = ("config.json", "adapter_config.json")
MARKER = ".o1pruner-export.json"  # written into every export: what --force may replace


@dataclass
class ExportPlan:
    """What an export will do; checked before anything is written."""

    run: RunDir
    spec: Any
    out: Path
    source: Path  # a model folder, or a resumable checkpoint (from_checkpoint)
    from_checkpoint: bool
    step: int | None
    adapter: bool  # a LoRA adapter is exported (LoRA run without --merge-lora)
    dtype: str  # torch dtype name
    force: bool = False
    push_to_hub: str | None = None
    round: int = 1  # the round whose model is exported (run.rounds)
    rounds: int = 1  # the run's rounds
    run_spec: Any = None  # the run's spec; `spec` is the exported round's (its model: round
    # r-1's, the base of a LoRA adapter or of a checkpoint)

    @property
    def label(self) -> str:
        return str(self.source.relative_to(self.run.root))

    @property
    def trained_run(self) -> RunDir:
        """The run directory of the exported round (the run itself for round 1)."""
        from o1pruner.rounds import round_dir

        return round_dir(self.run, self.round)


@dataclass
class ExportResult:
    out: str
    kind: str  # "model" or "adapter"
    source: str
    dtype: str
    files: list[str] = field(default_factory=list)
    message: str = ""
    pushed: str | None = None


# ------------------------------------------------------------------------------ choosing
def _steps(folder: Path, markers: tuple[str, ...]) -> list[int]:
    """N of the complete folder/step-N folders (holding one of `markers`), ascending."""
    found = [int(m.group(1)) for path in (folder.glob("step-*") if folder.is_dir() else [])
             if (m := STEP.match(path.name)) and any((path / f).exists() for f in markers)]
    return sorted(found)


def available_checkpoints(run: RunDir) -> dict[str, list[int]]:
    """The steps a run can be exported at: `models` (train/models/step-N, loadable models)
    and `resumable` (train/checkpoints/step-N, accelerate states)."""
    train = run.root / "train"
    return {"models": _steps(train / "models", MODEL_FILES),
            "resumable": _steps(train / "checkpoints", ("trainer_state.json",))}


def describe_checkpoints(run: RunDir) -> str:
    found = available_checkpoints(run)
    parts = [f"{what}: {', '.join(f'step-{n}' for n in steps)}"
             for what, steps in (("models", found["models"]),
                                 ("resumable checkpoints", found["resumable"])) if steps]
    return "; ".join(parts) if parts else "none"


def open_run(run_dir: str | Path) -> tuple[RunDir, Any]:
    """The run directory (or the run of a spec file) and its spec."""
    from o1pruner.jobs import run_dir_for
    from o1pruner.specio import load_spec

    path = Path(run_dir).expanduser()
    if path.is_file():
        spec = load_spec(path)
        return run_dir_for(spec), spec
    run = RunDir(path)
    if not path.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not run.spec_path.exists():
        raise UserError(f"{run_dir}: not a run directory (no spec.yaml)")
    return run, load_spec(run.spec_path)


def plan_export(run_dir: str | Path, out: str | Path, *, checkpoint: int | None = None,
                merge_lora: bool = False, dtype: str | None = None, force: bool = False,
                push_to_hub: str | None = None, round: int | None = None) -> ExportPlan:
    """Check the request and choose the source (of the last round unless `round`); a
    UserError says what is wrong."""
    from o1pruner.training.saving import save_dtype

    run, run_spec = open_run(run_dir)
    rounds = run_spec.run.rounds
    chosen, trained, spec = _export_round(run, run_spec, round)
    lora = spec.train.finetuning == "lora"
    if merge_lora and not lora:
        raise UserError(f"--merge-lora: {run.root} was trained with finetuning: "
                        f"{spec.train.finetuning}, not LoRA; its model is already a full "
                        "model: leave out --merge-lora")
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype: {dtype!r}; expected one of {', '.join(DTYPES)}")
    if push_to_hub is not None and not REPO_ID.match(push_to_hub):
        raise UserError(f"--push-to-hub: {push_to_hub!r} is not a repository id; expected "
                        "ORG/NAME (your user name or an organisation, then the model name)")
    train = trained.root / "train"
    if checkpoint is None:
        source, from_ckpt = train / "final", False
        if not any((source / f).exists() for f in MODEL_FILES):
            earlier = (f", or an earlier round with --round {chosen - 1}"
                       if round is None and chosen > 1 else "")
            raise UserError(f"{trained.root}: no trained model ({source} is missing); train "
                            f"it first, or export a checkpoint with --checkpoint N (it has: "
                            f"{describe_checkpoints(trained)}){earlier}")
    else:
        found = available_checkpoints(trained)
        if checkpoint in found["models"]:
            source, from_ckpt = train / "models" / f"step-{checkpoint}", False
        elif checkpoint in found["resumable"]:
            source, from_ckpt = train / "checkpoints" / f"step-{checkpoint}", True
        else:
            raise UserError(f"--checkpoint {checkpoint}: {trained.root} has no "
                            f"step-{checkpoint} (it has: {describe_checkpoints(trained)})")
    target = _check_out(Path(out), run, [run_spec, spec], force)
    if dtype:
        name = DTYPES[dtype]
    else:  # as saved; a resumable checkpoint (fp32 master weights) as train.save_dtype
        name = save_dtype(spec.train) if from_ckpt else _source_dtype(source, spec)
    return ExportPlan(run, spec, target, source, from_ckpt,
                      None if checkpoint is None else checkpoint, lora and not merge_lora,
                      name, force, push_to_hub, chosen, rounds, run_spec)


def _export_round(run: RunDir, run_spec: Any, round: int | None) -> tuple[int, RunDir, Any]:
    """(round, its run directory, its spec): the last round unless `round` says."""
    from o1pruner.rounds import round_dir
    from o1pruner.specio import load_spec

    rounds = run_spec.run.rounds
    chosen = rounds if round is None else round
    if not 1 <= chosen <= rounds:
        raise UserError(f"--round {round}: {run.root} has {rounds} round"
                        f"{'s' if rounds > 1 else ''} (run.rounds); choose 1 to {rounds}")
    folder = round_dir(run, chosen)
    if chosen == 1:
        return chosen, folder, run_spec
    if not folder.spec_path.exists():
        raise UserError(f"{run.root}: round {chosen} has not started ({folder.spec_path} is "
                        f"missing); run `o1pruner run {run.spec_path}` to train it, or export "
                        f"an earlier round with --round {chosen - 1}")
    return chosen, folder, load_spec(folder.spec_path)


def _check_out(out: Path, run: RunDir, specs: list[Any], force: bool) -> Path:
    """The output folder, resolved. Never a run directory or a folder a spec refers to, nor
    inside or holding one; new or empty, or with --force an earlier export (a folder
    holding the marker file an export writes), never a folder the export did not write."""
    target = out.expanduser().resolve()
    for folder, what in _protected_folders(run, specs):
        if target == folder:
            where = "is"
        elif target.is_relative_to(folder):
            where = "inside"
        elif folder.is_relative_to(target):
            where = "holds"
        else:
            continue
        raise UserError(f"--out {out}: {where} {what} {folder}; write the export to a new "
                        "folder of its own, outside every run and every folder the spec uses")
    enclosing = _enclosing_run(target)
    if enclosing is not None:
        where = "is" if enclosing == target else "inside"
        raise UserError(f"--out {out}: {where} the run directory {enclosing}; write the "
                        "export to a new folder of its own, outside every run")
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {out}: is a file; expected a folder")
    if target.is_dir() and any(target.iterdir()):
        if not force:
            raise UserError(f"--out {out}: the folder exists and is not empty; choose a new "
                            "folder, or pass --force to replace an earlier export in it")
        if not (target / MARKER).is_file():
            raise UserError(f"--out {out}: the folder holds files that no export wrote (no "
                            f"{MARKER} in it); --force replaces only an earlier export: "
                            "choose a new folder, or delete this one yourself")
    return target


def _protected_folders(run: RunDir, specs: list[Any]) -> list[tuple[Path, str]]:
    """(folder, what it is) that an export must not write into, replace or hold: the run,
    the other runs under its output root, and the folders the specs refer to: the base
    model when it is a local folder, the model cache (model.cache_dir, or the cache a pypi:
    model is converted into), data.local_dir. Relative paths are taken from the working
    directory, as the stages take them."""
    from o1pruner.models import cache_root

    root = run.root.resolve()
    found = [(root, "the run directory")]
    siblings = [p for p in root.parent.iterdir() if p.is_dir() and not p.is_symlink()]
    found += [(p.resolve(), "the run directory") for p in sorted(siblings)
              if p.resolve() != root and _is_run_folder(p)]
    for spec in specs:
        model = spec.model
        local = Path(model.name_or_path).expanduser()
        if not model.name_or_path.startswith("pypi:") and local.is_dir():
            found.append((local.resolve(), "the base model folder (model.name_or_path)"))
        if model.cache_dir or model.name_or_path.startswith("pypi:"):
            found.append((cache_root(model).resolve(), "the model cache (model.cache_dir)"))
        if spec.data.local_dir:
            found.append((Path(spec.data.local_dir).expanduser().resolve(),
                          "the data folder (data.local_dir)"))
    return found


def _enclosing_run(target: Path) -> Path | None:
    """The nearest folder at or above `target` that is a run directory, or None."""
    return next((p for p in (target, *target.parents) if _is_run_folder(p)), None)


def _is_run_folder(path: Path) -> bool:
    """A run (or job) directory that has started: spec.yaml with job.json or events.jsonl,
    or a job.json alone (an ad-hoc evaluation's or an export's job). A spec.yaml alone is
    not enough: a workspace may keep its spec files at its top."""
    if (path / "job.json").is_file():
        return True
    return (path / "spec.yaml").is_file() and (path / "events.jsonl").is_file()


def _source_dtype(folder: Path, spec: Any) -> str:
    """The dtype a saved model folder is in (its config), else the run's save_dtype."""
    from o1pruner.training.saving import save_dtype

    config = read_json(folder / "config.json", {}) or {}
    name = config.get("dtype") or config.get("torch_dtype")
    return name if name in DTYPES.values() else save_dtype(spec.train)


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


def write_export(plan: ExportPlan) -> list[str]:
    """Write the export to a new temporary folder beside --out (with the model card and the
    marker file), then rename it into place; an earlier export there (its marker checked
    again now) is set aside first and removed only once the new one is in place. Returns
    the files written (relative names)."""
    from o1pruner.export_card import model_card

    plan.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.out.with_name(f".{plan.out.name}.export-{secrets.token_hex(4)}")
    tmp.mkdir()  # a new folder of ours: the only one removed on failure
    old = None
    try:
        if plan.adapter:
            _write_adapter(plan, tmp)
        else:
            _write_model(plan, tmp)
        (tmp / "README.md").write_text(model_card(plan), encoding="utf-8")
        atomic_write_json(tmp / MARKER, {
            "written_by": "o1pruner export", "run": str(plan.run.root), "source": plan.label,
            "round": plan.round, "kind": "adapter" if plan.adapter else "model",
            "dtype": plan.dtype, "written_at": time.time()})
        old = _set_aside(plan.out)
        try:
            os.replace(tmp, plan.out)
        except OSError:
            if old is not None:
                os.replace(old, plan.out)
                old = None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old)  # the earlier export, renamed aside by _set_aside
    return sorted(str(p.relative_to(plan.out)) for p in plan.out.rglob("*") if p.is_file())


def _set_aside(out: Path) -> Path | None:
    """Make room for the new export at `out`: nothing there, or an empty folder (removed),
    or an earlier export (renamed to a hidden sibling, returned). Anything else appeared
    after the check and is left untouched: a UserError."""
    if not out.exists():
        return None
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        return None
    if out.is_dir() and (out / MARKER).is_file():
        aside = out.with_name(f".{out.name}.replaced-{secrets.token_hex(4)}")
        os.replace(out, aside)
        return aside
    raise UserError(f"--out {out}: the folder now holds files that no export wrote (no "
                    f"{MARKER} in it); choose a new folder, or delete this one yourself")


def _write_model(plan: ExportPlan, tmp: Path) -> None:
    """A full model: the saved (merged) model re-saved in the dtype, or merged from an
    adapter, or built from a resumable checkpoint."""
    import torch

    from o1pruner.training.saving import record_dtype

    dtype = getattr(torch, plan.dtype)
    if plan.from_checkpoint:
        model, tokenizer = _model_from_checkpoint(plan)
    elif (plan.source / "config.json").exists():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        remote = plan.spec.model.trust_remote_code
        model = AutoModelForCausalLM.from_pretrained(plan.source, dtype=dtype,
                                                     trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(plan.source, trust_remote_code=remote)
    else:  # a LoRA run saved without merging: merge its adapter now (in float32)
        model, tokenizer = _merged_from_adapter(plan, _adapter_folder(plan))
    model = model.to(dtype)
    model.config.use_cache = True
    model.save_pretrained(tmp, safe_serialization=True)
    record_dtype(tmp, plan.dtype)
    tokenizer.save_pretrained(tmp)


def _adapter_folder(plan: ExportPlan) -> Path:
    """The LoRA adapter of a saved source: final/ -> train/adapter/ (or final/ itself when
    saved without merging); models/step-N/ -> step-N/adapter/ (or step-N/ itself)."""
    candidates = [plan.source / "adapter", plan.source]
    if plan.source.name == "final":
        candidates.insert(0, plan.trained_run.root / "train" / "adapter")
    for folder in candidates:
        if (folder / "adapter_config.json").exists():
            return folder
    raise UserError(f"{plan.source}: no LoRA adapter (adapter_config.json) found for this "
                    "LoRA run; its saved files are incomplete")


def _write_adapter(plan: ExportPlan, tmp: Path) -> None:
    """The LoRA adapter (peft): its config, weights cast to the dtype, the tokenizer."""
    if plan.from_checkpoint:
        model, tokenizer = _model_from_checkpoint(plan, merge=False)
        _save_adapter(model, tokenizer, tmp, plan.dtype)
        return
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    adapter = _adapter_folder(plan)
    tmp.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, plan.dtype)
    for path in adapter.iterdir():
        if path.suffix == ".safetensors":
            tensors = {k: v.to(dtype) if v.is_floating_point() else v
                       for k, v in load_file(path).items()}
            save_file(tensors, tmp / path.name, metadata={"format": "pt"})
        elif path.name == "adapter_config.json":
            shutil.copy2(path, tmp / path.name)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(tmp)


def _save_adapter(peft_model: Any, tokenizer: Any, tmp: Path, dtype_name: str) -> None:
    import torch
    from peft import get_peft_model_state_dict

    dtype = getattr(torch, dtype_name)
    state = {k: v.to(dtype) for k, v in get_peft_model_state_dict(peft_model).items()}
    peft_model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(tmp)


def _merged_from_adapter(plan: ExportPlan, adapter: Path) -> tuple[Any, Any]:
    """The base model (float32) with the adapter merged in (peft's merge_and_unload)."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from o1pruner.models import load_causal_lm, resolve_model

    base = load_causal_lm(plan.spec.model, resolve_model(plan.spec.model), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    return merged, AutoTokenizer.from_pretrained(adapter)


def _model_from_checkpoint(plan: ExportPlan, merge: bool = True) -> tuple[Any, Any]:
    """The model of a resumable checkpoint: the run's architecture (the base model's
    config; LoRA: with the spec's adapters) built on the meta device, taking the
    checkpoint's weights (no optimizer state read, no base weights loaded); LoRA merged
    unless `merge` is False (then the peft model)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from o1pruner.models import load_tokenizer, resolve_model
    from o1pruner.training.finetuning import apply_lora

    spec, train = plan.spec, plan.spec.train
    base_path = resolve_model(spec.model)
    config = AutoConfig.from_pretrained(base_path, trust_remote_code=spec.model.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            config, trust_remote_code=spec.model.trust_remote_code)
        if train.finetuning == "lora":
            model = apply_lora(model, train.lora_rank, train.lora_alpha, train.lora_dropout,
                               train.lora_target)
    state = checkpoint_state_dict(plan.source)
    wanted = set(model.state_dict())
    unexpected = sorted(set(state) - wanted)
    if unexpected:
        raise UserError(f"{plan.source}: its weights do not fit this run's model (e.g. "
                        f"{unexpected[:3]}); was the spec changed after training?")
    model.load_state_dict(state, strict=False, assign=True)
    base = model.get_base_model() if train.finetuning == "lora" else model
    base.tie_weights()  # a tied head absent from the checkpoint
    empty = [n for n, p in model.named_parameters() if p.is_meta]
    if empty:
        raise UserError(f"{plan.source}: the checkpoint lacks weights of the model, e.g. "
                        f"{empty[:3]}")
    try:
        base.generation_config = GenerationConfig.from_pretrained(base_path)
    except OSError:
        pass  # the base model has no generation_config.json: the config's defaults
    tokenizer = load_tokenizer(spec.model, base_path)
    if train.finetuning == "lora" and merge:
        model = model.merge_and_unload()
    return model, tokenizer


def checkpoint_state_dict(ckpt: Path) -> dict[str, Any]:
    """The model weights (fp32 master weights) of an accelerate checkpoint folder, without
    its optimizer state: model.safetensors (or pytorch_model.bin). Under DeepSpeed ZeRO the
    fp32 weights exist only in the optimizer partitions, which DeepSpeed's zero_to_fp32
    gathers."""
    import torch

    if (ckpt / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(ckpt / "model.safetensors")
    if (ckpt / "pytorch_model.bin").exists():
        return torch.load(ckpt / "pytorch_model.bin", map_location="cpu", weights_only=True)
    if (ckpt / "pytorch_model").is_dir():  # DeepSpeed
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return dict(get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="pytorch_model"))
    raise UserError(f"{ckpt}: no model weights (model.safetensors, pytorch_model.bin or a "
                    "DeepSpeed pytorch_model/ folder)")


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
