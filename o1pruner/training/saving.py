"""The final model in Hugging Face format (`train/final/`), loadable by transformers and
vLLM: plain safetensors, float32 weights, no DeepSpeed or peft wrappers. LoRA runs also keep
the adapter in `train/adapter/`. Both are written to a temporary folder and renamed, so an
existing folder is a complete one."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def _replace_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def save_final_model(acc: Any, model: Any, tokenizer: Any, spec: Any, train_dir: Path) -> Path:
    """Gather the weights (ZeRO-3: from all processes), save them from the main process;
    returns the final model folder."""
    final, tmp = train_dir / "final", train_dir / ".final.tmp"
    state_dict = acc.get_state_dict(model)  # collective under ZeRO-3: every process calls it
    unwrapped = acc.unwrap_model(model)
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
        if spec.train.finetuning == "lora":
            _save_lora(unwrapped, state_dict, tokenizer, spec, train_dir, tmp)
        else:
            base = unwrapped
            base.config.use_cache = True
            base.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _replace_dir(tmp, final)
        logger.info("final model saved: %s", final)
    acc.wait_for_everyone()
    return final


def _save_lora(peft_model: Any, state_dict: dict, tokenizer: Any, spec: Any, train_dir: Path,
               tmp: Path) -> None:
    """The adapter to train/adapter/; the merged model (or, without merging, a copy of the
    adapter) to `tmp`."""
    adapter, adapter_tmp = train_dir / "adapter", train_dir / ".adapter.tmp"
    shutil.rmtree(adapter_tmp, ignore_errors=True)
    peft_model.save_pretrained(adapter_tmp, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(adapter_tmp)
    _replace_dir(adapter_tmp, adapter)
    logger.info("LoRA adapter saved: %s", adapter)
    if not spec.train.lora_merge_on_save:
        shutil.copytree(adapter, tmp)
        return
    merged = peft_model.merge_and_unload()
    merged = merged.to(torch.float32)
    merged.config.use_cache = True
    merged.save_pretrained(tmp, safe_serialization=True)
