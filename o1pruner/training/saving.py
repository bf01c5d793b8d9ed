"""The final model in Hugging Face format (`train/final/`), loadable by transformers and
vLLM: plain safetensors in train.save_dtype (`auto`: the training precision), no DeepSpeed or
peft wrappers. LoRA runs also keep the adapter in `train/adapter/`. Both are written to a
temporary folder and renamed, so an existing folder is a complete one. With several
machines, machine 0 writes them (the others' run directories hold checkpoints only)."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from o1pruner.files import atomic_write_json

logger = logging.getLogger(__name__)

PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def save_dtype(train: Any) -> str:
    """train.save_dtype, with `auto` read as the training precision (bf16 -> bfloat16)."""
    return PRECISION_DTYPES[train.precision] if train.save_dtype == "auto" else train.save_dtype


def _replace_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _cast(state_dict: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def _record_dtype(folder: Path, name: str) -> None:
    """config.json names the weights' dtype, which transformers (`dtype="auto"`) and vLLM
    load: `dtype`, and `torch_dtype` for readers older than transformers 4.56."""
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(dtype=name, torch_dtype=name)
    atomic_write_json(path, config)


def save_final_model(acc: Any, model: Any, tokenizer: Any, spec: Any, train_dir: Path) -> Path:
    """Gather the weights (ZeRO-3: from all processes), save them from the main process;
    returns the final model folder."""
    final, tmp = train_dir / "final", train_dir / ".final.tmp"
    state_dict = acc.get_state_dict(model)  # collective under ZeRO-3: every process calls it
    unwrapped = acc.unwrap_model(model)
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        name = save_dtype(spec.train)
        dtype = getattr(torch, name)
        if spec.train.finetuning == "lora":
            _save_lora(unwrapped, state_dict, tokenizer, spec, train_dir, tmp, dtype)
        else:
            unwrapped.config.use_cache = True
            unwrapped.save_pretrained(tmp, state_dict=_cast(state_dict, dtype),
                                      safe_serialization=True)
        if (tmp / "config.json").exists():  # not for a copy of the adapter
            _record_dtype(tmp, name)
        tokenizer.save_pretrained(tmp)
        _replace_dir(tmp, final)
        logger.info("final model saved (%s): %s", name, final)
    elif acc.is_local_main_process:
        logger.info("final model: saved by machine 0 in its run directory")
    acc.wait_for_everyone()
    return final


def _save_lora(peft_model: Any, state_dict: dict, tokenizer: Any, spec: Any, train_dir: Path,
               tmp: Path, dtype: torch.dtype) -> None:
    """The adapter to train/adapter/; the merged model (or, without merging, a copy of the
    adapter) to `tmp`, both in `dtype` (the merge itself in float32)."""
    adapter, adapter_tmp = train_dir / "adapter", train_dir / ".adapter.tmp"
    shutil.rmtree(adapter_tmp, ignore_errors=True)
    peft_model.save_pretrained(adapter_tmp, state_dict=_cast(state_dict, dtype),
                               safe_serialization=True)
    tokenizer.save_pretrained(adapter_tmp)
    _replace_dir(adapter_tmp, adapter)
    logger.info("LoRA adapter saved: %s", adapter)
    if not spec.train.lora_merge_on_save:
        shutil.copytree(adapter, tmp)
        return
    merged = merge_lora(peft_model, _cast(state_dict, torch.float32)).to(dtype)
    merged.config.use_cache = True
    merged.save_pretrained(tmp, safe_serialization=True)


def merge_lora(peft_model: Any, state_dict: dict[str, torch.Tensor]) -> Any:
    """The base model with the LoRA adapter merged in (peft's merge_and_unload), made from
    `state_dict`: the full weights, base and adapter, as gathered for saving. Not from the
    trained model itself, whose parameters under ZeRO-3 are each process's empty shards.

    A copy of the model is built on the meta device (no memory, no hub) and takes the
    tensors of `state_dict`, which the merge then changes in place. Its non-persistent
    buffers (rotary frequencies) stay on the meta device: the copy is for saving."""
    from peft import get_peft_model

    base, name = peft_model.get_base_model(), peft_model.active_adapter
    with torch.device("meta"):
        fresh = get_peft_model(type(base)(copy.deepcopy(base.config)),
                               copy.deepcopy(peft_model.peft_config[name]), adapter_name=name)
    fresh.load_state_dict(state_dict, strict=False, assign=True)
    fresh.get_base_model().tie_weights()  # a tied head absent from the state dict
    empty = [n for n, p in fresh.named_parameters() if p.is_meta]
    if empty:
        raise RuntimeError(f"LoRA merge: the gathered weights lack {empty[:5]}")
    return fresh.merge_and_unload()
