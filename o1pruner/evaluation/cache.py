"""Evaluation keys and the shared base-model cache.

Every (model, benchmark) evaluation has a key: what the model is (its fingerprint), what
the problems are (dataset fingerprint, limit, shuffle), how it decodes and which prompt it
sees. Its generations are valid exactly as long as the key matches.

The reference (base) model is the same for every run that starts from it, so its results
live once under `<run.output_root>/.cache/eval/<sha256 of the key>/` (generations.jsonl,
metrics.json, key.json) and are linked into each run directory that uses them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from o1pruner.files import atomic_write_json, read_json
from o1pruner.models import PYPI_PREFIX
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)

KEY_VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
COMPLETE_MARKER = "metrics.json"  # written last: its presence means the evaluation finished


def model_fingerprint(ref: str, path: str, revision: str | None = None) -> dict[str, Any]:
    """What identifies a model's weights: a pypi:/hub id with its revision as given, or for
    a local directory its resolved path plus the size and mtime of its weight files (so a
    retrained model in the same place gets a new fingerprint)."""
    local = Path(path).expanduser()
    if ref.startswith(PYPI_PREFIX) or not local.is_dir():
        return {"id": ref, "revision": revision}
    files = sorted(p for p in local.iterdir()
                   if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"))
    return {
        "path": str(local.resolve()),
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }


def prompt_fingerprint(template: Any, extra_suffix: str) -> dict[str, Any]:
    """The parts of a prompt template that change what the model sees."""
    return {"template": template.name, "system": template.system, "user": template.user,
            "suffix": template.suffix, "extra_suffix": extra_suffix}


def decoding_settings(spec: RunSpec) -> dict[str, Any]:
    """Generation settings of the eval section, as passed to the engine."""
    ev = spec.eval
    if ev.decoding == "greedy":
        return {"decoding": "greedy", "temperature": 0.0, "top_p": 1.0,
                "max_new_tokens": ev.max_new_tokens}
    return {"decoding": "sample", "temperature": ev.temperature, "top_p": ev.top_p,
            "max_new_tokens": ev.max_new_tokens, "seed": spec.run.seed}


def eval_key(spec: RunSpec, model_fp: dict[str, Any], benchmark: dict[str, Any],
             prompt: dict[str, Any]) -> dict[str, Any]:
    """The full key of one (model, benchmark) evaluation, written as key.json."""
    return {
        "version": KEY_VERSION,
        "model": model_fp,
        "dtype": spec.model.dtype,
        "engine": spec.eval.engine,
        "benchmark": benchmark,
        "decoding": decoding_settings(spec),
        "prompt": prompt,
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


@contextmanager
def locked(workdir: Path) -> Iterator[None]:
    """Exclusive lock on a cache entry, so two runs never generate the same baseline into
    one file at once (the second waits, then finds it complete)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
