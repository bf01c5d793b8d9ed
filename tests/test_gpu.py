"""The GPU path, on a tiny real model: training in bf16 on CUDA with full, freeze and LoRA
fine-tuning (the ratio exactly 1 at the first step), transformers generation on CUDA, and
vLLM generation where vLLM is installed. Marked `gpu`; skipped where CUDA is absent.

Run on a GPU machine with `scripts/gpu_check.sh` (it brings the few dependencies such a
machine may lack)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _train(tiny_model_dir: Path, tmp_path: Path, finetuning: str, **train) -> tuple:
    from o1pruner.files import read_json
    from o1pruner.jobs import run_dir_for
    from o1pruner.models import load_tokenizer
    from o1pruner.training import run_train
    from tests.presample_files import make_spec, write_presample

    extra = {"freeze": {"freeze_trainable_layers": 1}, "lora": {"lora_rank": 4}}.get(
        finetuning, {})
    spec = make_spec(tiny_model_dir, tmp_path, name=f"gpu-{finetuning}",
                     train={"precision": "bf16", "finetuning": finetuning, "logging_steps": 1,
                            "learning_rate": 1e-3, **extra, **train})
    run = run_dir_for(spec)
    write_presample(run.root, load_tokenizer(spec.model, str(tiny_model_dir)), with_ids=True)
    torch.cuda.reset_peak_memory_stats()
    run_train(spec)
    summary = read_json(run.root / "train" / "summary.json")
    metrics = [e for e in run.events() if e["kind"] == "metrics" and e["stage"] == "train"]
    return run, summary, metrics


@pytest.mark.parametrize("finetuning", ["full", "freeze", "lora"])
def test_training_on_cuda_in_bf16(tiny_model_dir: Path, tmp_path: Path,
                                  finetuning: str) -> None:
    from transformers import AutoModelForCausalLM

    run, summary, metrics = _train(tiny_model_dir, tmp_path, finetuning)
    assert torch.cuda.max_memory_allocated() > 0  # it ran on the GPU
    assert summary["steps"] >= 3 and summary["trainable_params"] > 0
    first = metrics[0]
    assert first["ratio/min"] == first["ratio/max"] == 1.0  # r = 1 exactly at step 0
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    # saved in the training precision (save_dtype auto); the base rounded the same way
    trained = AutoModelForCausalLM.from_pretrained(run.root / "train" / "final")
    assert {p.dtype for p in trained.parameters()} == {torch.bfloat16}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    changed = [not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters(),
                                                     strict=True)]
    assert any(changed)
    if finetuning == "freeze":  # only the last layer (and what follows it) changed
        names = [n for (n, _), c in zip(trained.named_parameters(), changed, strict=True) if c]
        assert all(".layers.0." not in n for n in names)


def test_transformers_generation_on_cuda(tmp_path: Path) -> None:
    from o1pruner.prompts import PromptTemplate, build_prompt
    from o1pruner.sampling import create_engine
    from o1pruner.sampling.engines import stop_token_ids
    from o1pruner.spec import ModelSpec
    from tests.tiny_model import build_stopping_model

    model = ModelSpec(name_or_path=str(build_stopping_model(tmp_path / "m")), dtype="bfloat16")
    engine = create_engine(model, "hf", batch_size=8, seed=0)
    try:
        assert next(engine.model.parameters()).is_cuda
        template = PromptTemplate(name="t", system=None, user="{problem}")
        prompts = [build_prompt(engine.tokenizer, template, f"{i} + {i}?") for i in range(4)]
        groups = engine.generate(prompts, 4, temperature=1.0, top_p=1.0, max_new_tokens=32)
        stops = set(stop_token_ids(engine.tokenizer))
        assert [len(g) for g in groups] == [4] * 4
        for c in (c for g in groups for c in g):
            assert c.num_tokens == len(c.token_ids) <= 32
            assert (c.finish_reason == "stop") == (c.token_ids[-1] in stops)
        assert any(c.finish_reason == "stop" for g in groups for c in g)
    finally:
        engine.close()


def test_vllm_generation_on_cuda(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    from o1pruner.sampling import create_engine
    from o1pruner.spec import ModelSpec
    from tests.tiny_model import build_stopping_model

    model = ModelSpec(name_or_path=str(build_stopping_model(tmp_path / "m")), dtype="bfloat16")
    engine = create_engine(model, "vllm", seed=0, gpu_memory_utilization=0.3)
    try:
        groups = engine.generate(["1 + 1?", "2 + 2?"], 4, temperature=1.0, top_p=1.0,
                                 max_new_tokens=32, seed=7)
        assert [len(g) for g in groups] == [4, 4]
    finally:
        engine.close()


def _presample_spec(model_dir: Path, root: Path, engine: str, **presample):
    from o1pruner.specio import spec_from_dict

    return spec_from_dict({
        "model": {"name_or_path": str(model_dir), "dtype": "bfloat16"},
        "data": {"train": "arithmetic_train", "train_limit": 12},
        "presample": {"k": 4, "engine": engine, "max_new_tokens": 24, "temperature": 1.0,
                      "top_p": 1.0, "batch_size": 2, "gpu_memory_utilization": 0.3,
                      **presample},
        "reward": {"samples_per_problem": 2},
        "run": {"name": "dp", "output_root": str(root)},
    })


def test_a_replica_process_gets_its_gpu_and_samples_like_the_stage_process(
        tmp_path: Path) -> None:
    """A local replica (a spawned process with its own CUDA_VISIBLE_DEVICES) on CUDA gives
    the same seeded samples as the engine in this process."""
    from o1pruner.sampling.replicas import LocalPool, Request, engine_args, open_pool
    from o1pruner.spec import ModelSpec
    from tests.tiny_model import build_stopping_model

    path = str(build_stopping_model(tmp_path / "m"))
    args = engine_args(ModelSpec(name_or_path=path, dtype="bfloat16"), "hf", path,
                       batch_size=8)
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 24}
    requests = [Request(["1 + 1?", "2 + 2?"], 4, sampling, seeds=[10, 20], tag=0),
                Request(["3 + 3?"], 4, sampling, seeds=[30], tag=1)]
    events: list[dict] = []
    with open_pool(args, 1) as pool:
        here = {r.request.tag: r.groups for r in pool.run(requests)}
    with LocalPool(args, 1, on_event=lambda kind, **f: events.append({"kind": kind, **f})) \
            as pool:
        there = {r.request.tag: r.groups for r in pool.run(requests)}
    assert [e["gpus"] for e in events if e["kind"] == "replica"] == ["0"]
    assert {t: [[c.token_ids for c in g] for g in gs] for t, gs in there.items()} == \
        {t: [[c.token_ids for c in g] for g in gs] for t, gs in here.items()}


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_vllm_replicas_presample_the_same_as_one(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    from o1pruner.sampling import run_presample
    from tests.tiny_model import build_stopping_model

    model = build_stopping_model(tmp_path / "m")
    one = run_presample(_presample_spec(model, tmp_path / "one", "vllm"))
    two = run_presample(_presample_spec(model, tmp_path / "two", "vllm",
                                        data_parallel_size=2))
    for name in ("samples.jsonl", "problem_stats.jsonl"):
        assert (two.root / "presample" / name).read_text() == \
            (one.root / "presample" / name).read_text()
    replicas = [e for e in two.events() if e["kind"] == "replica"]
    assert sorted(e["gpus"] for e in replicas) == ["0", "1"]


def test_o1pruner_run_end_to_end_on_cuda_records_auto(tmp_path: Path) -> None:
    """`o1pruner run` of a tiny spec on the GPU with model.dtype and train.precision `auto`
    and engine `auto`: pre-sample, train, evaluate, report; prints what auto chose."""
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib")
    import subprocess
    import sys

    import yaml

    from o1pruner.files import read_json
    from o1pruner.jobs import RunDir
    from tests.test_pipeline import write_spec
    from tests.tiny_model import build_stopping_model

    path = write_spec(tmp_path, build_stopping_model(tmp_path / "model"))
    spec = yaml.safe_load(path.read_text())
    spec["model"]["dtype"] = "auto"
    spec["train"]["precision"] = "auto"
    spec["presample"]["engine"] = spec["eval"]["engine"] = "auto"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run([sys.executable, "-m", "o1pruner.cli", "run", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunDir(tmp_path / "runs" / "e2e")
    status = subprocess.run([sys.executable, "-m", "o1pruner.cli", "status", str(run.root)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120).stdout
    print(status)  # the resolved precision and engine, for the check's output
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    precision = [e for e in run.events() if e["kind"] == "precision"]
    assert {e["stage"] for e in precision} >= {"presample", "train", "eval"}
    assert all(e["dtype"] == expected for e in precision if e["stage"] != "train")
    assert "precision (" in status and "engine (" in status
    results = read_json(run.root / "eval" / "results.json")
    assert expected in results["settings"]["precision"]
    assert (run.root / "report" / "report.md").exists()
