"""Per-logging-step training metrics, under stable names (TRL's): loss, reward/mean,
ratio/mean|min|max, clip_ratio, grad_norm, learning_rate, tokens_per_s, epoch,
completion_length (and reward/chosen|rejected|margin|accuracy for DPO)."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

logger = logging.getLogger(__name__)


class MetricsWindow:
    """Collects micro-batch statistics between two logging steps (all processes)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.stats: dict[str, list[torch.Tensor]] = {}
        self.tokens = 0
        self.started = time.time()

    def add(self, loss: torch.Tensor, stats: dict[str, torch.Tensor],
            batch: dict[str, torch.Tensor]) -> None:
        self.losses.append(loss.float().reshape(1).cpu())
        for key, value in stats.items():
            self.stats.setdefault(key, []).append(value.detach().float().reshape(-1).cpu())
        self.tokens += int(batch["attention_mask"].sum().item())

    def flush(self, acc: Any, grad_norm: float | None, lr: float, epoch: float) -> dict[str, Any]:
        """The window's metrics (gathered over processes), then start a new window."""
        def gather(values: list[torch.Tensor]) -> torch.Tensor:
            local = torch.cat(values).to(acc.device)
            return (acc.gather(local) if acc.num_processes > 1 else local).float().cpu()

        elapsed = max(time.time() - self.started, 1e-9)
        tokens = gather([torch.tensor([float(self.tokens)])]).sum().item()
        out: dict[str, Any] = {"loss": gather(self.losses).mean().item()}
        s = {k: gather(v) for k, v in self.stats.items()}
        if "ratio" in s:
            out.update({"reward/mean": s["reward"].mean().item(),
                        "ratio/mean": s["ratio"].mean().item(),
                        "ratio/min": s["ratio"].min().item(),
                        "ratio/max": s["ratio"].max().item(),
                        "clip_ratio": s["clipped"].mean().item()})
        if "margin" in s:
            out.update({"reward/chosen": s["chosen"].mean().item(),
                        "reward/rejected": s["rejected"].mean().item(),
                        "reward/margin": s["margin"].mean().item(),
                        "reward/accuracy": (s["margin"] > 0).float().mean().item()})
        out.update({"grad_norm": grad_norm, "learning_rate": lr,
                    "tokens_per_s": round(tokens / elapsed, 2), "epoch": round(epoch, 4),
                    "completion_length": s["completion_length"].mean().item(),
                    "_tokens": int(tokens)})
        if out["grad_norm"] is None:
            out.pop("grad_norm")
        self._reset()
        return out
