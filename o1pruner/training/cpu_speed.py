"""Training on CPU without three measured wastes (benchmarks/train_step.py); the numbers
computed are those of the plain path up to float rounding (tests/test_cpu_speed.py).

1. **The output head's batched matmul.** Under CPU autocast, PyTorch 2.13's `linear` runs a
   3-D input through `bmm`, which first copies the transposed [hidden, vocabulary] weight
   (152k x 896 for Qwen2.5-0.5B: 0.4 s per forward here) and then multiplies 5-10x slower
   than `mm` (a bf16 model without autocast, as in generation, takes `mm`). The head is
   called on the 2-D view of its input instead.
2. **Casting frozen weights at every forward.** Autocast casts every fp32 weight to bf16 at
   each use; a frozen weight never changes, so its bf16 copy is made once and used while
   autocast is on (outside autocast the fp32 weight is used as before). Autocast would cast
   to exactly this copy, so the products are the same.
3. **Returning large buffers to the kernel.** The fp32 [positions, vocabulary] logits and
   their gradients (hundreds of MB) exceed glibc's mmap threshold: every step maps and
   unmaps them, and page faults took 20-30 % of the time as system time. The threshold and
   the trim threshold are raised so freed buffers are reused.

Used on one or several CPU processes without DeepSpeed (whose parameters are partitioned
and whose engine casts weights itself); on a GPU none of this applies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

#: glibc mallopt parameters (malloc.h) and the values set: 1 GiB, and "never trim".
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_LARGE_MMAP, _NO_TRIM = 1 << 30, (1 << 31) - 1
#: glibc's defaults (the dynamic mmap threshold starts at 128 KiB).
_DEFAULT_MMAP, _DEFAULT_TRIM = 128 * 1024, 128 * 1024


def keep_large_buffers(enabled: bool = True) -> bool:
    """Make glibc keep freed large blocks for reuse (or restore its defaults); False where
    the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mmap, trim = (_LARGE_MMAP, _NO_TRIM) if enabled else (_DEFAULT_MMAP, _DEFAULT_TRIM)
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))


class CpuSpeedups:
    """The head on 2-D inputs and the bf16 copies of frozen linear weights, installed on a
    model (`install`) and removed again (`remove`: the model is as before)."""

    def __init__(self, model: Any, dtype: torch.dtype | None) -> None:
        self.model, self.dtype = model, dtype
        self._patched: list[torch.nn.Module] = []

    @classmethod
    def for_training(cls, spec: Any, model: Any, device: Any) -> CpuSpeedups | None:
        """Installed speed-ups for this run, or None (GPU, DeepSpeed)."""
        if torch.device(device).type != "cpu" or spec.train.deepspeed_stage:
            return None
        from o1pruner.hardware import resolve_train_precision

        bf16 = resolve_train_precision(spec.train.precision) == "bf16"
        dtype = torch.bfloat16 if bf16 else None
        speedups = cls(model, dtype)
        speedups.install()
        keep_large_buffers()
        return speedups

    def install(self) -> None:
        if self._patched:  # already installed
            return
        head = self.model.get_output_embeddings()
        frozen = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear)
                  and not m.weight.requires_grad
                  and (m.bias is None or not m.bias.requires_grad)] if self.dtype else []
        copies = 0
        for module in {id(m): m for m in [*frozen, head] if m is not None}.values():
            low = module in frozen
            weight = module.weight.detach().to(self.dtype) if low else None
            bias = (module.bias.detach().to(self.dtype)
                    if low and module.bias is not None else None)
            copies += low
            module.forward = _linear_forward(module, weight, bias, self.dtype,
                                             flat=module is head)
            self._patched.append(module)
        logger.info("CPU speed-ups: output head on 2-D inputs%s", (
            f", bf16 copies of {copies} frozen linear weights" if copies else ""))

    def remove(self) -> None:
        for module in self._patched:
            del module.forward  # back to the class's forward
        self._patched = []


def _linear_forward(module: torch.nn.Linear, weight: torch.Tensor | None,
                    bias: torch.Tensor | None, dtype: torch.dtype | None, flat: bool) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if flat and x.dim() > 2:
            x = x.reshape(-1, shape[-1])                              # [B*T, H]
        if weight is not None and torch.is_autocast_enabled("cpu") and (
                torch.get_autocast_dtype("cpu") == dtype):
            out = F.linear(x, weight, bias)
        else:
            out = F.linear(x, module.weight, module.bias)
        return out.view(*shape[:-1], out.shape[-1]) if flat else out
    return forward
