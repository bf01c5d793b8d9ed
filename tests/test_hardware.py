"""The machine decides precision: `auto` is float32 on a CPU that emulates bf16, bfloat16
where bf16 is native and the probe finds it fast; the run records the choice and why."""

from __future__ import annotations

import logging

import pytest
import torch

from o1pruner import hardware
from o1pruner.cli import main as cli_main
from o1pruner.hardware import CpuFacts, choose_cpu_precision
from o1pruner.models import load_tokenizer
from o1pruner.training import run_train
from tests.presample_files import make_spec, write_presample

AVX2 = CpuFacts(model="AMD EPYC", capability="AVX2", avx512_bf16=False, amx=False)
AMX = CpuFacts(model="Intel Xeon", capability="AVX512", avx512_bf16=True, amx=True)


def no_probe() -> tuple[float, float]:
    raise AssertionError("the probe must not run where bf16 is not native")


def test_avx2_cpu_resolves_auto_to_float32_without_probing():
    choice = choose_cpu_precision(AVX2, no_probe)
    assert choice.dtype == "float32" and choice.train_precision == "fp32"
    assert "AVX2" in choice.reason and "no native bf16" in choice.reason


def test_native_bf16_with_a_fast_probe_resolves_to_bfloat16():
    choice = choose_cpu_precision(AMX, lambda: (270.0, 760.0))
    assert choice.dtype == "bfloat16" and choice.train_precision == "bf16"
    assert "760" in choice.reason and "270" in choice.reason


def test_native_bf16_that_probes_slower_than_fp32_resolves_to_float32():
    assert choose_cpu_precision(AMX, lambda: (270.0, 120.0)).dtype == "float32"


def test_the_choice_is_made_once_per_machine_and_kept(tmp_path, monkeypatch):
    """A busy machine's probe can come out either way; the first choice holds for every
    later process (every stage of a run), and deleting its file probes again."""
    monkeypatch.setenv("O1PRUNER_CACHE", str(tmp_path))
    probes = []

    def probe(result):
        return lambda: probes.append(result) or result

    first = hardware.kept_cpu_precision(AMX, probe((270.0, 760.0)))
    again = hardware.kept_cpu_precision(AMX, probe((900.0, 60.0)))  # a later, loaded probe
    assert first.dtype == again.dtype == "bfloat16" and len(probes) == 1
    path = hardware.choice_path(AMX)
    assert path.parent == tmp_path / "hardware" and str(path) in again.reason
    assert "760" in again.reason and "delete it to probe again" in again.reason
    # another CPU has its own choice; a CPU without native bf16 keeps nothing
    other = CpuFacts(model="AMD EPYC", capability="AVX512", avx512_bf16=True, amx=False)
    assert hardware.choice_path(other) != path
    assert hardware.kept_cpu_precision(AVX2, no_probe).dtype == "float32"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    path.unlink()
    assert hardware.kept_cpu_precision(AMX, probe((900.0, 60.0))).dtype == "float32"
    # a damaged file is probed again, not trusted
    path.write_text("{not json")
    assert hardware.kept_cpu_precision(AMX, probe((270.0, 760.0))).dtype == "bfloat16"
    assert len(probes) == 3


def test_the_probe_measures_both_dtypes_on_this_cpu():
    for dtype in ("float32", "bfloat16"):  # the small product: bf16 may be emulated here
        assert hardware.matmul_gflops(dtype, hardware.SMALL_SHAPE, repeats=1) > 0


def test_cpu_line_names_the_capability():
    line = hardware.cpu_facts().line()
    assert torch.backends.cpu.get_cpu_capability() in line and "native bf16" in line


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """Make this process see the given CPU (and probe) until the test ends."""
    if torch.cuda.is_available():
        pytest.skip("auto resolves from the GPU here")

    def use(facts: CpuFacts, probe: tuple[float, float]) -> None:
        monkeypatch.setenv("O1PRUNER_CACHE", str(tmp_path / "cache"))  # no kept choice
        monkeypatch.setattr(hardware, "cpu_facts", lambda: facts)
        monkeypatch.setattr(hardware, "probe_cpu", lambda: probe)
        hardware.auto_precision.cache_clear()

    yield use
    hardware.auto_precision.cache_clear()


@pytest.mark.parametrize("facts, probe, precision", [
    (AVX2, (149.0, 1.1), "fp32"),
    (AMX, (270.0, 760.0), "bf16"),
])
def test_a_run_records_what_auto_resolved_to(machine, tiny_model_dir, tmp_path, capsys,
                                             facts, probe, precision):
    machine(facts, probe)
    spec = make_spec(tiny_model_dir, tmp_path, name=precision, train={"epochs": 1})
    assert spec.model.dtype == "auto" and spec.train.precision == "auto"
    write_presample(tmp_path / precision, load_tokenizer(spec.model, str(tiny_model_dir)),
                    n_problems=2, k=4)
    run = run_train(spec)
    [event] = [e for e in run.events() if e["kind"] == "precision"]
    assert event["precision"] == precision and event["precision_spec"] == "auto"
    assert facts.capability in event["reason"] and facts.model in event["machine"]
    summary = (run.root / "train" / "summary.json").read_text()
    assert f'"precision": "{precision}"' in summary
    assert cli_main(["status", str(run.root)]) == 0
    assert f"training {precision} (auto: " in capsys.readouterr().out


def test_explicit_bfloat16_on_an_emulating_cpu_warns_once(machine, caplog):
    machine(AVX2, (149.0, 1.1))
    hardware._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="o1pruner.hardware"):
        assert hardware.resolve_dtype("bfloat16") == "bfloat16"
        assert hardware.resolve_dtype("bfloat16") == "bfloat16"
    [record] = caplog.records
    assert "emulated" in record.message and "slower than float32" in record.message
    assert "model.dtype: auto" in record.message


def test_auto_is_the_default_of_both_fields():
    from o1pruner.spec import ModelSpec, TrainSpec

    assert ModelSpec(name_or_path="x").dtype == "auto"
    assert TrainSpec().precision == "auto"


EPYC_BF16 = CpuFacts(model="AMD EPYC", capability="AVX512", avx512_bf16=True, amx=False)


@pytest.mark.parametrize("facts, dtype, table, engine, says", [
    (AMX, "bfloat16", None, "vllm", "measured 3.9x transformers' throughput"),
    # native bf16 without AMX is its own class: the AMX figure is not quoted there
    (EPYC_BF16, "bfloat16", None, "vllm", "measured 2.5x transformers' throughput"),
    (AVX2, "float32", None, "vllm", "measured 4.8x"),
    # a class and dtype not measured keeps vLLM and says so; one measured slower takes hf
    (EPYC_BF16, "bfloat16", {}, "vllm", "not yet measured against transformers on this CPU "
     "class (AVX512_BF16) in bfloat16"),
    (EPYC_BF16, "float32", {("AVX512_BF16", "float32"): (0.8, "a slower machine")}, "hf",
     "measured 0.8x transformers' throughput on this CPU class and dtype (a slower machine)"),
])
def test_engine_auto_quotes_the_measurement_of_this_cpu_class(monkeypatch, tiny_model_dir,
                                                              facts, dtype, table, engine, says):
    from o1pruner.sampling import engines

    if torch.cuda.is_available():
        pytest.skip("auto resolves from the GPU here")
    monkeypatch.setattr(hardware, "cpu_facts", lambda: facts)
    monkeypatch.setattr(engines, "_RESOLVED", {})
    monkeypatch.setattr(engines, "vllm_support", lambda path: (True, "vllm supports it"))
    if table is not None:
        monkeypatch.setattr(engines, "VLLM_CPU_SPEEDUP", table)
    chosen, why = engines.resolve_engine("auto", str(tiny_model_dir), dtype)
    assert chosen == engine and says in why
