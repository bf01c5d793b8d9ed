"""Writing an export: the model of a plan (`o1pruner.export_plan`) as a standalone Hugging
Face folder, complete or absent. A saved model is re-saved in the dtype, a LoRA adapter
cast (or merged into its base model), a resumable checkpoint's weights read without its
optimizer state; the folder is written beside --out and renamed into place.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.export_plan import MARKER, ExportPlan
from o1pruner.files import atomic_write_json


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
