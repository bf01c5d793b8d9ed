"""Shared fixtures: the benchmark data folder and a tiny real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_model import build_tiny_model

# Under pytest-xdist (`-n auto` in pyproject.toml) each worker gets its share of the cores:
# N workers each running torch on every core would oversubscribe them (OpenMP threads spin
# while they wait). Set before torch is imported; subprocesses inherit it.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

# Tests never reach a model or dataset hub: everything they load is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    env = os.environ.get("O1PRUNER_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data (or $O1PRUNER_DATA_DIR); tests that need it skip when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("benchmark data folder ../shared/data not found (set O1PRUNER_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama + trained BPE tokenizer with a ChatML template (HF format)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture
def requested_sample_seeds(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[int]]:
    """Per prompt, the sample seeds (seeds[i] + j) that in-process stages ask engines for."""
    from o1pruner.sampling.replicas import Request

    seen: dict[str, set[int]] = {}
    run = Request.run

    def recording(self: Request, engine: object) -> object:
        for prompt, seed in zip(self.prompts, self.seeds or [], strict=bool(self.seeds)):
            seen.setdefault(prompt, set()).update(range(seed, seed + self.n))
        return run(self, engine)

    monkeypatch.setattr(Request, "run", recording)
    return seen
