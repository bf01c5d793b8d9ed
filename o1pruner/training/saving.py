"""Models in Hugging Face format, loadable by transformers and vLLM: plain safetensors in
train.save_dtype (`auto`: the training precision), no DeepSpeed or peft wrappers.

`train/final/` at the end (LoRA runs also keep the adapter in `train/adapter/`), and with
train.save_model_steps the models of intermediate steps in `train/models/step-N/` (the
last one hard-linked to final/). Every folder is written to a temporary folder and renamed,
so an existing folder is a complete one. With several machines, machine 0 writes them (the
others' run directories hold checkpoints only)."""

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

MODELS_DIR = "models"  # train/models/step-N/: the models of train.save_model_steps


def save_dtype(train: Any) -> str:
    """train.save_dtype, with `auto` read as the training precision (bf16 -> bfloat16)."""
    from o1pruner.hardware import DTYPE_OF_PRECISION, resolve_train_precision

    if train.save_dtype != "auto":
        return train.save_dtype
    return DTYPE_OF_PRECISION[resolve_train_precision(train.precision)]


def _replace_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def cast_floats(state_dict: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def record_dtype(folder: Path, name: str) -> None:
    """config.json names the weights' dtype, which transformers (`dtype="auto"`) and vLLM
    load: `dtype`, and `torch_dtype` for readers older than transformers 4.56."""
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(dtype=name, torch_dtype=name)
    atomic_write_json(path, config)


def save_final_model(acc: Any, model: Any, tokenizer: Any, spec: Any, train_dir: Path) -> Path:
    """The final model to train/final/ (LoRA: the adapter to train/adapter/); returns the
    final model folder."""
    return save_model(acc, model, tokenizer, spec, train_dir / "final",
                      adapter_dir=train_dir / "adapter", what="final model")


def step_model_dir(train_dir: Path, step: int) -> Path:
    return train_dir / MODELS_DIR / f"step-{step}"


def save_step_model(acc: Any, model: Any, tokenizer: Any, spec: Any, train_dir: Path,
                    step: int) -> Path:
    """The model of optimizer step `step` to train/models/step-N/ (train.save_model_steps),
    laid out as final/ is: the model (LoRA: merged, with the adapter in step-N/adapter/; or,
    without lora_merge_on_save, the adapter alone)."""
    target = step_model_dir(train_dir, step)
    if acc.is_main_process:  # a save cut off earlier (crash, kill -9) left its temporary folder
        for stale in target.parent.glob(".step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    return save_model(acc, model, tokenizer, spec, target, adapter_dir=None,
                      what=f"model of step {step}")


def link_final_as_step(acc: Any, spec: Any, train_dir: Path, step: int) -> Path:
    """train/models/step-N/ for the last step: the final model (and adapter), hard-linked
    (no second copy on disk) into a temporary folder, then renamed into place."""
    target = step_model_dir(train_dir, step)
    if acc.is_main_process:
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(train_dir / "final", tmp, copy_function=_link_or_copy)
        if spec.train.finetuning == "lora" and spec.train.lora_merge_on_save:
            shutil.copytree(train_dir / "adapter", tmp / "adapter", copy_function=_link_or_copy)
        _replace_dir(tmp, target)
        logger.info("model of step %d: %s (the final model)", step, target)
    acc.wait_for_everyone()
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_model(acc: Any, model: Any, tokenizer: Any, spec: Any, target: Path,
               adapter_dir: Path | None, what: str) -> Path:
    """Gather the weights (ZeRO-3: from all processes) and save them from the main process
    to `target`, through a temporary folder renamed into place. LoRA: `adapter_dir` is the
    adapter's own folder (written the same way), or None to keep it inside `target`."""
    tmp = target.with_name(f".{target.name}.tmp")
    state_dict = acc.get_state_dict(model)  # collective under ZeRO-3: every process calls it
    unwrapped = acc.unwrap_model(model)
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        name = save_dtype(spec.train)
        dtype = getattr(torch, name)
        if spec.train.finetuning == "lora":
            _save_lora(unwrapped, state_dict, tokenizer, spec, tmp, adapter_dir, dtype)
        else:
            training_cache = unwrapped.config.use_cache  # saved on, for generation;
            unwrapped.config.use_cache = True  # training goes on without (a step model)
            try:
                unwrapped.save_pretrained(tmp, state_dict=cast_floats(state_dict, dtype),
                                          safe_serialization=True)
            finally:
                unwrapped.config.use_cache = training_cache
        if (tmp / "config.json").exists():  # not for a copy of the adapter
            record_dtype(tmp, name)
        tokenizer.save_pretrained(tmp)
        _replace_dir(tmp, target)
        logger.info("%s saved (%s): %s", what, name, target)
    elif acc.is_local_main_process:
        logger.info("%s: saved by machine 0 in its run directory", what)
    acc.wait_for_everyone()
    return target


def _save_lora(peft_model: Any, state_dict: dict, tokenizer: Any, spec: Any, tmp: Path,
               adapter_dir: Path | None, dtype: torch.dtype) -> None:
    """The merged model (lora_merge_on_save) to `tmp`, and the adapter to `adapter_dir`
    (renamed into place; without merging also copied to `tmp`) or, with `adapter_dir` None,
    to tmp/adapter/ (without merging: to `tmp` itself); all in `dtype`, the merge itself in
    float32."""
    merge = spec.train.lora_merge_on_save
    if merge:
        merged = merge_lora(peft_model, cast_floats(state_dict, torch.float32)).to(dtype)
        merged.config.use_cache = True
        merged.save_pretrained(tmp, safe_serialization=True)
    if adapter_dir is None:
        adapter_tmp = tmp / "adapter" if merge else tmp
    else:
        adapter_tmp = adapter_dir.with_name(f".{adapter_dir.name}.tmp")
        shutil.rmtree(adapter_tmp, ignore_errors=True)
    peft_model.save_pretrained(adapter_tmp, state_dict=cast_floats(state_dict, dtype),
                               safe_serialization=True)
    tokenizer.save_pretrained(adapter_tmp)
    if adapter_dir is not None:
        _replace_dir(adapter_tmp, adapter_dir)
        logger.info("LoRA adapter saved: %s", adapter_dir)
        if not merge:
            shutil.copytree(adapter_dir, tmp)


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
