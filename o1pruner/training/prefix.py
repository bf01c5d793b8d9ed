"""Freeze tuning's frozen prefix, computed once: the input of the first trainable decoder
layer for every training sample is recorded during the reference pass and fed back in the
training steps, so the frozen layers below it are not run again at every step.

Every parameter below that layer (embeddings, the frozen layers) is frozen, so its input
depends on the sample only; recording it in the reference pass (same micro-batches, same
autocast) gives exactly the values the training forward would compute. In the training
forward the frozen layers are replaced by pass-throughs and a pre-hook on the first
trainable layer swaps in the recorded input; gradients stop there, as they did before.

Used for freeze tuning on one process without DeepSpeed or gradient checkpointing (which
would recompute the first trainable layer from its original input) when the records fit in
the memory budget (`MAX_BYTES`, a quarter of the available memory at most); otherwise the
trainer runs the whole model as usual. After a resume the records are rebuilt on first use
(a forward of the frozen layers only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from o1pruner.training.finetuning import LAYER_RE

logger = logging.getLogger(__name__)

MAX_BYTES = 4 * 1024**3


class _PassThrough(torch.nn.Module):
    """Stands in for a frozen decoder layer: returns its hidden states unchanged."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class _Recorded(Exception):
    """Stops a forward once the first trainable layer's input is recorded."""


def _decoder_layers(model: Any) -> torch.nn.ModuleList | None:
    """The model's decoder layer list (model.layers, transformer.h, ...), or None."""
    for name, _ in model.named_parameters():
        match = LAYER_RE.match(name)
        if match:
            module = model.get_submodule((match.group(1) or "") + match.group(2))
            return module if isinstance(module, torch.nn.ModuleList) else None
    return None


class FrozenPrefix:
    """Records and replays the input of decoder layer `first` (the first trainable one)."""

    def __init__(self, layers: torch.nn.ModuleList, first: int, hidden_size: int) -> None:
        self.layers, self.first, self.hidden_size = layers, first, hidden_size
        self.states: dict[int, torch.Tensor] = {}  # row -> [T_row, H] (unpadded)

    @classmethod
    def for_training(cls, spec: Any, model: Any, n_tokens: int,
                     world_size: int) -> FrozenPrefix | None:
        """A FrozenPrefix when this run can use one, else None (only a memory refusal is
        logged; the other conditions are in the module docstring)."""
        train = spec.train
        if (train.finetuning != "freeze" or train.method != "lh"
                or train.deepspeed_stage or world_size > 1 or train.gradient_checkpointing):
            return None
        layers = _decoder_layers(model)
        if layers is None:
            return None
        trainable = [i for i, layer in enumerate(layers)
                     if any(p.requires_grad for p in layer.parameters())]
        first = trainable[0] if trainable else 0
        if first == 0 or not _only_output_side_trains(model):
            return None
        hidden = getattr(model.config, "hidden_size", None)
        if not hidden:
            return None
        size = n_tokens * hidden * 4
        budget = min(MAX_BYTES, _available_memory() // 4)
        if size > budget:
            logger.info("frozen prefix: %.1f GB of recorded layer inputs would exceed the "
                        "%.1f GB budget; running every layer at every step",
                        size / 1e9, budget / 1e9)
            return None
        logger.info("frozen prefix: layers 0-%d run once per sample (in the reference pass, "
                    "or at first use after a resume); training steps start at layer %d "
                    "(%.2f GB recorded)", first - 1, first, size / 1e9)
        return cls(layers, first, hidden)

    @contextmanager
    def recording(self, rows: list[int], lengths: list[int]) -> Iterator[None]:
        """Inside: a forward records layer `first`'s input for `rows` (unpadded)."""
        def hook(_module: Any, args: tuple, kwargs: dict) -> None:
            states = (args[0] if args else kwargs["hidden_states"]).detach()
            for b, row in enumerate(rows):
                self.states[row] = states[b, :lengths[b]].cpu().clone()

        handle = self.layers[self.first].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def ensure(self, model: Any, batch: dict[str, torch.Tensor], rows: list[int]) -> None:
        """Record the rows missing after a resume: a forward stopped at layer `first`."""
        if all(r in self.states for r in rows):
            return
        lengths = batch["attention_mask"].sum(-1).tolist()

        def stop(_module: Any, _args: tuple, _kwargs: dict) -> None:
            raise _Recorded

        with torch.no_grad(), self.recording(rows, lengths):
            handle = self.layers[self.first].register_forward_pre_hook(stop, with_kwargs=True)
            try:
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            except _Recorded:
                pass
            finally:
                handle.remove()

    @contextmanager
    def replaying(self, rows: list[int], width: int, device: Any) -> Iterator[None]:
        """Inside: a forward skips layers below `first` and feeds the recorded inputs."""
        dtype = self.states[rows[0]].dtype
        states = torch.zeros(len(rows), width, self.hidden_size, dtype=dtype)
        for b, row in enumerate(rows):
            seq = self.states[row]
            states[b, :seq.shape[0]] = seq
        states = states.to(device)

        def feed(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (states, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": states}

        frozen = [self.layers[i] for i in range(self.first)]
        handle = self.layers[self.first].register_forward_pre_hook(feed, with_kwargs=True)
        try:
            for i in range(self.first):
                self.layers[i] = _PassThrough()
            yield
        finally:
            for i, layer in enumerate(frozen):
                self.layers[i] = layer
            handle.remove()


FINAL_NORMS = ("norm", "ln_f", "norm_f", "final_layernorm", "final_layer_norm")


def _only_output_side_trains(model: Any) -> bool:
    """True when every trainable parameter outside the decoder layers sits after them (the
    output embeddings, the final norm) and none is shared with the input embeddings."""
    embeddings = model.get_input_embeddings()
    inputs = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
    output = model.get_output_embeddings()
    outputs = {id(p) for p in output.parameters()} if output is not None else set()
    for name, param in model.named_parameters():
        if not param.requires_grad or LAYER_RE.match(name):
            continue
        module = name.rsplit(".", 2)[-2] if name.count(".") else ""
        if id(param) in inputs or (id(param) not in outputs and module not in FINAL_NORMS):
            return False
    return True


def _available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        return MAX_BYTES * 4
