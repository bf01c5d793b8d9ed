"""What the playground offers to compare: the model folders of the workspace, the run's
data sets and their problems (as its stages load them), and a starting token limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.spec import DatasetRef, RunSpec

SKIP_DIRS = {"node_modules", "__pycache__", "checkpoints", "site-packages"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def find_model_dirs(root: str | Path, max_depth: int = 4) -> list[Path]:
    """Folders under `root` holding a Hugging Face model (config.json and weights), not
    looking inside hidden folders, checkpoints/ (training states) or a model folder."""
    root = Path(root)
    found = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        names = {e.name for e in entries}
        if "config.json" in names and any(n.endswith(WEIGHT_SUFFIXES) for n in names):
            found.append(folder)
            return
        if depth >= max_depth:
            return
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith(".") \
                    and entry.name not in SKIP_DIRS:
                walk(entry, depth + 1)

    walk(root, 0)
    return found


def _short(name: str) -> str:
    return Path(name).name if ("/" in name and Path(name).suffix) else name


def problem_sources(spec: RunSpec) -> dict[str, tuple[DatasetRef, int | None]]:
    """The run's data sets by label (`train: <name>`, `eval: <name>`) with their limit."""
    sources = {f"train: {_short(spec.data.train.name)}": (spec.data.train,
                                                          spec.data.train_limit)}
    for ref in spec.eval.benchmarks:
        sources.setdefault(f"eval: {_short(ref.name)}", (ref, spec.data.eval_limit))
    return sources


def source_problems(spec: RunSpec, label: str) -> list[Any]:
    """The problems of one of the run's data sets, as its stage loads them (limit and
    shuffle included)."""
    from o1pruner.data import load_problems

    sources = problem_sources(spec)
    if label not in sources:
        raise UserError(f"data set {label!r}: expected one of {', '.join(sources)}")
    ref, limit = sources[label]
    return load_problems(ref, spec.data.local_dir, limit, spec.data.shuffle_seed)


def default_max_new_tokens(spec: RunSpec, cap: int = 512) -> int:
    """The playground's starting token limit: the spec's eval.max_new_tokens, at most
    `cap` on CPU (a long-thought model's 8192 would take many minutes there)."""
    import torch

    if torch.cuda.is_available():
        return spec.eval.max_new_tokens
    return min(spec.eval.max_new_tokens, cap)
