"""Which parameters train: `full`, `freeze` (LLaMA-Factory's meaning) or `lora` (peft)."""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from o1pruner.errors import UserError

logger = logging.getLogger(__name__)

LAYER_RE = re.compile(r"^(.*\.)?(layers|h|blocks)\.(\d+)\.(.+)$")


def load_training_model(spec: Any, path: str) -> Any:
    """The reference model in fp32 master weights, with the spec's fine-tuning type applied
    and gradient checkpointing turned on if asked."""
    from o1pruner.models import load_causal_lm

    model = load_causal_lm(spec.model, path, dtype=torch.float32)
    model.config.use_cache = False
    train = spec.train
    if train.finetuning == "freeze":
        apply_freeze(model, train.freeze_trainable_layers, train.freeze_trainable_modules,
                     train.freeze_extra_modules)
    elif train.finetuning == "lora":
        model = apply_lora(model, train.lora_rank, train.lora_alpha, train.lora_dropout,
                           train.lora_target)
    if train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable, total = count_parameters(model)
    logger.info("fine-tuning %s: %d of %d parameters trainable (%.2f%%)", train.finetuning,
                trainable, total, 100.0 * trainable / max(total, 1))
    return model


def disable_dropout(model: Any) -> int:
    """Turn off every dropout of `model` (its own, e.g. attention_dropout, and LoRA's) while
    it stays in train mode (gradient checkpointing needs train mode); returns how many were
    on. With dropout, the reference pass and the policy would drop different units, and the
    ratio pi_theta / pi_ref would not be 1 at step 0 but dropout noise. The saved config
    keeps its values."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            module.p, changed = 0.0, changed + 1
        for name, value in list(vars(module).items()):  # rates used functionally (attention)
            if name.endswith("dropout") and type(value) is float and value > 0:
                setattr(module, name, 0.0)
                changed += 1
    return changed


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts (shared tensors counted once; ZeRO-3
    partitioned parameters by their full size)."""
    sizes = [(getattr(p, "ds_numel", None) or p.numel(), p.requires_grad)
             for p in model.parameters()]
    return sum(n for n, grad in sizes if grad), sum(n for n, _ in sizes)


def _split_names(model: Any) -> tuple[dict[int, list[tuple[str, str]]], dict[str, str]]:
    """Parameters inside decoder layers {layer: [(full name, name within layer)]} and the
    others {full name: module path}."""
    layers: dict[int, list[tuple[str, str]]] = {}
    others: dict[str, str] = {}
    for name, _ in model.named_parameters(remove_duplicate=False):
        match = LAYER_RE.match(name)
        if match:
            layers.setdefault(int(match.group(3)), []).append((name, match.group(4)))
        else:
            others[name] = name.rsplit(".", 1)[0] if "." in name else name
    return layers, others


def apply_freeze(model: Any, n_layers: int, modules: list[str], extra: list[str]) -> list[str]:
    """Train the last n_layers decoder layers (first |n| if negative), only their parameters
    whose module names are listed in `modules` (`all`: whole layers), plus the top-level
    `extra` modules (e.g. lm_head, norm, embed_tokens). Returns the trainable names."""
    layers, others = _split_names(model)
    if not layers:
        raise UserError("train.finetuning: freeze needs a model with numbered decoder layers "
                        "(model.layers.N); this model has none, use full or lora")
    count = len(layers)
    if abs(n_layers) > count:
        raise UserError(f"train.freeze_trainable_layers: {n_layers} but the model has {count} "
                        f"decoder layers; use a value in [-{count}, {count}] (not 0)")
    chosen = sorted(layers)[-n_layers:] if n_layers > 0 else sorted(layers)[:-n_layers]

    inner = sorted({part for names in layers.values() for _, rel in names
                    for part in rel.split(".")[:-1] if not part.isdigit()})
    bad = [m for m in modules if m != "all" and m not in inner]
    if bad:
        raise UserError(f"train.freeze_trainable_modules: unknown module name(s) {bad}; "
                        f"valid names inside a decoder layer: all, {', '.join(inner)}")
    tops = sorted({p for path in others.values() for p in (path, path.split(".")[-1])})
    bad = [m for m in extra if m not in tops]
    if bad:
        raise UserError(f"train.freeze_extra_modules: unknown module name(s) {bad}; valid "
                        f"top-level modules of this model: {', '.join(tops)}")

    trainable: list[str] = []
    for layer in chosen:
        for name, rel in layers[layer]:
            parts = rel.split(".")[:-1]
            if "all" in modules or any(m in parts for m in modules):
                trainable.append(name)
    for name, path in others.items():
        if any(path == m or path.endswith("." + m) for m in extra):
            trainable.append(name)
    wanted = set(trainable)
    for param in model.parameters():
        param.requires_grad_(False)
    for name, param in model.named_parameters(remove_duplicate=False):
        if name in wanted:
            param.requires_grad_(True)
    logger.info("freeze: training layers %s (modules %s) and extra modules %s: %d tensors",
                chosen, modules, extra or "none", len(trainable))
    return trainable


def apply_lora(model: Any, rank: int, alpha: float, dropout: float, target: list[str]) -> Any:
    """Wrap `model` with LoRA adapters (peft) on the `target` linear modules."""
    from peft import LoraConfig, get_peft_model

    linear = sorted({n.split(".")[-1] for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear)})
    targets: str | list[str] = "all-linear" if target == ["all-linear"] else list(target)
    bad = [t for t in target if t != "all-linear" and t not in linear]
    if bad or ("all-linear" in target and len(target) > 1):
        raise UserError(f"train.lora_target: unknown module name(s) {bad or target}; use "
                        f"`all-linear` alone or names from: {', '.join(linear)}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)
