"""The machine decides precision: `model.dtype: auto` and `train.precision: auto` resolve
from the hardware, with the reason, so a run can record what it chose.

- CUDA: bfloat16 where the GPU supports it, else float16.
- CPU: bfloat16 only where it is native (AVX512_BF16 or AMX) **and** a short probe (one
  matmul of a realistic shape in both dtypes, tens of milliseconds) shows bfloat16 at least
  as fast as float32; otherwise float32. Without native bf16, PyTorch emulates it: on a
  2-core AMD EPYC with AVX2 only, fp32 ran 149 GFLOP/s and bf16 1.1 (ENVIRONMENT.md).

On a CPU the choice is made once per machine and kept (`<cache>/hardware/precision-*.json`,
the cache being $O1PRUNER_CACHE or ~/.cache/o1pruner, one file per CPU, torch version and
thread count): every stage of a run and every run of this machine then load models in the
same dtype, and share cached evaluations, even where a probe on a busy machine would come
out the other way (seen under load: bf16 59 GFLOP/s against fp32 67 in one process, bf16
ahead in the next). Delete the file to probe again.

An explicit `bfloat16` on a CPU without native bf16 still runs, with one warning per process
that says how much slower it is there (measured on a small shape) and what to set.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: spec dtype name <-> train.precision name
TRAIN_PRECISION = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
DTYPE_OF_PRECISION = {v: k for k, v in TRAIN_PRECISION.items()}
#: the probe's shape: a Qwen2.5-0.5B MLP product over 256 positions (0.94 GFLOP)
PROBE_SHAPE = (256, 896, 2048)
#: the shape that measures an emulated bf16 for the warning (8 MFLOP: ~8 ms at 1 GFLOP/s)
SMALL_SHAPE = (64, 256, 256)


@dataclass(frozen=True)
class CpuFacts:
    """What the CPU offers: its model name, PyTorch's kernel level (`AVX2`, `AVX512`, ...)
    and whether bf16 arithmetic is native (AVX512_BF16 or AMX tiles)."""

    model: str
    capability: str
    avx512_bf16: bool
    amx: bool

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx

    @property
    def bf16_class(self) -> str:
        """The CPU's class for measured engine speeds: `AMX`, `AVX512_BF16` (native bf16
        without AMX tiles) or `no native bf16`."""
        return "AMX" if self.amx else "AVX512_BF16" if self.avx512_bf16 else "no native bf16"

    def line(self) -> str:
        """One line naming the CPU, for logs, benchmarks and reports."""
        extras = [name for name, has in (("AVX512_BF16", self.avx512_bf16), ("AMX", self.amx))
                  if has]
        return (f"CPU: {self.model}; torch capability {self.capability}"
                f"{' + ' + ' + '.join(extras) if extras else ''}; native bf16: "
                f"{'yes' if self.native_bf16 else 'no'}")


@dataclass(frozen=True)
class Precision:
    """The resolved dtype of `auto`, where and why."""

    dtype: str  # bfloat16 | float16 | float32
    device: str  # cuda | cpu
    reason: str

    @property
    def train_precision(self) -> str:
        return TRAIN_PRECISION[self.dtype]

    def as_event(self) -> dict[str, Any]:
        return asdict(self)


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def cpu_facts() -> CpuFacts:
    import torch

    def supported(name: str) -> bool:
        check = getattr(torch.cpu, name, None)
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:
            return False

    return CpuFacts(model=cpu_model_name(),
                    capability=torch.backends.cpu.get_cpu_capability(),
                    avx512_bf16=supported("_is_avx512_bf16_supported"),
                    amx=supported("_is_amx_tile_supported"))


def matmul_gflops(dtype_name: str, shape: tuple[int, int, int] = PROBE_SHAPE,
                  repeats: int = 5) -> float:
    """GFLOP/s of `a @ b` ([m, k] x [k, n]) in this dtype on the CPU: the best of `repeats`
    timed products after two warm-ups."""
    import torch

    m, k, n = shape
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - began)
    return 2 * m * k * n / max(best, 1e-9) / 1e9


def probe_cpu(rounds: int = 3) -> tuple[float, float]:
    """(float32, bfloat16) GFLOP/s on the probe's shape: the best of `rounds` alternating
    measurements of each, so a passing load slows both alike."""
    best = {"float32": 0.0, "bfloat16": 0.0}
    for _ in range(rounds):
        for name in best:
            best[name] = max(best[name], matmul_gflops(name, repeats=3))
    return best["float32"], best["bfloat16"]


def choose_cpu_precision(facts: CpuFacts,
                         probe: Callable[[], tuple[float, float]] = probe_cpu) -> Precision:
    """bfloat16 where it is native and the probe finds it at least as fast as float32, else
    float32. The probe runs only where bf16 is native."""
    if not facts.native_bf16:
        return Precision("float32", "cpu", f"no native bf16 on this CPU (torch capability "
                         f"{facts.capability}, no AVX512_BF16 or AMX): bf16 would be emulated")
    fp32, bf16 = probe()
    speeds = f"probe {PROBE_SHAPE[0]}x{PROBE_SHAPE[1]}x{PROBE_SHAPE[2]}: bf16 {bf16:.0f} " \
             f"GFLOP/s, fp32 {fp32:.0f} GFLOP/s"
    if bf16 >= fp32:
        return Precision("bfloat16", "cpu", f"native bf16 ({facts.capability}"
                         f"{', AMX' if facts.amx else ''}); {speeds}")
    return Precision("float32", "cpu", f"native bf16 but slower than fp32 here; {speeds}")


def choice_path(facts: CpuFacts) -> Path:
    """Where this machine's CPU choice is kept: one file per CPU, torch version and number
    of threads (each can change the outcome of the probe)."""
    import hashlib
    import json

    import torch

    from o1pruner.models import cache_root

    key = json.dumps([asdict(facts), torch.__version__, torch.get_num_threads()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "hardware" / f"precision-{digest}.json"


def kept_cpu_precision(facts: CpuFacts,
                       probe: Callable[[], tuple[float, float]] = probe_cpu) -> Precision:
    """This machine's CPU choice: the one kept from an earlier process, or (the first time)
    choose_cpu_precision's, then kept. A CPU without native bf16 needs no probe and keeps
    nothing."""
    from o1pruner.files import atomic_write_json, read_json

    if not facts.native_bf16:
        return choose_cpu_precision(facts, probe)
    path = choice_path(facts)
    kept = read_json(path)
    if isinstance(kept, dict) and kept.get("dtype") in ("bfloat16", "float32") \
            and isinstance(kept.get("reason"), str):
        return Precision(kept["dtype"], "cpu", f"{kept['reason']} (probed {kept.get('when')}, "
                         f"kept in {path}; delete it to probe again)")
    choice = choose_cpu_precision(facts, probe)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"dtype": choice.dtype, "reason": choice.reason,
                                 "when": time.strftime("%Y-%m-%d %H:%M"),
                                 "cpu": facts.line()})
    except OSError as err:  # a read-only cache: this process still has its choice
        logger.warning("could not keep the precision choice in %s: %s", path, err)
    return choice


@functools.cache
def auto_precision() -> Precision:
    """What `auto` means on this machine (on a CPU, kept across processes)."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported():
            return Precision("bfloat16", "cuda", f"{name} supports bf16")
        return Precision("float16", "cuda", f"{name} has no bf16")
    choice = kept_cpu_precision(cpu_facts(), probe_cpu)
    logger.info("precision auto -> %s: %s (%s)", choice.dtype, choice.reason,
                cpu_facts().line())
    return choice


def resolve_dtype(name: str) -> str:
    """A spec dtype (`model.dtype`, or the eval/playground loaders') as used on this
    machine: `auto` resolved; an explicit bfloat16 on an emulating CPU warned about once."""
    if name == "auto":
        return auto_precision().dtype
    if name == "bfloat16":
        warn_emulated_bf16("model.dtype", "float32")
    return name


def resolve_train_precision(name: str) -> str:
    """train.precision as used on this machine (bf16, fp16 or fp32)."""
    if name == "auto":
        return auto_precision().train_precision
    if name == "bf16":
        warn_emulated_bf16("train.precision", "fp32")
    return name


def precision_record(model_dtype: str, train_precision: str | None = None) -> dict[str, Any]:
    """What a stage records in its `precision` event: the dtype it loads the model in (and
    the training precision), each as resolved and as the spec said, the reason, and the
    machine."""
    import torch

    record: dict[str, Any] = {"dtype": resolve_dtype(model_dtype), "dtype_spec": model_dtype}
    if train_precision is not None:
        record.update(precision=resolve_train_precision(train_precision),
                      precision_spec=train_precision)
    auto = "auto" in (model_dtype, train_precision)
    record["reason"] = auto_precision().reason if auto else "set in the spec"
    record["machine"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                         else cpu_facts().line())
    return record


def summary(record: dict[str, Any]) -> str:
    """A `precision` event as one line: `float32 (auto: no native bf16 ...)`."""
    what = record.get("dtype", "?")
    if record.get("precision"):
        what += f", training {record['precision']}"
    spec = "auto" if "auto" in (record.get("dtype_spec"), record.get("precision_spec")) \
        else "spec"
    return f"{what} ({spec}: {record.get('reason', '')})"


_WARNED: set[str] = set()


def warn_emulated_bf16(field: str, instead: str) -> None:
    """One warning per field and process when bf16 is asked for on a CPU that emulates it."""
    import torch

    if field in _WARNED or torch.cuda.is_available() or cpu_facts().native_bf16:
        return
    _WARNED.add(field)
    fp32 = matmul_gflops("float32", SMALL_SHAPE, repeats=2)
    bf16 = matmul_gflops("bfloat16", SMALL_SHAPE, repeats=2)
    logger.warning("%s: bfloat16 is emulated on this CPU (%s): matmuls run %.0fx slower than "
                   "float32 here (%.1f against %.1f GFLOP/s); set %s: auto (or %s) to run in "
                   "float32", field, cpu_facts().capability, fp32 / max(bf16, 1e-9), bf16,
                   fp32, field, instead)


#: the events choice_lines reads (the Runs tab keeps the latest of each for its status line)
CHOICE_EVENTS = ("precision", "engine", "stages")


def choice_lines(events: list[dict[str, Any]]) -> list[str]:
    """What the run chose, from its latest `precision`, `engine` and `stages` events:
    `precision (train): float32, training fp32 (auto: ...)`, `engine (presample): vllm (...)`,
    `stages: train, eval; no presample, analyze (train.method grpo_length samples ...)`."""
    latest: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("kind") in CHOICE_EVENTS:
            latest[event["kind"]] = event
    lines = []
    if "stages" in latest:
        event = latest["stages"]
        lines.append(f"stages: {', '.join(event.get('stages') or [])}; no "
                     f"{', '.join(event.get('skipped') or [])} ({event.get('reason', '')})")
    if "precision" in latest:
        event = latest["precision"]
        lines.append(f"precision ({event.get('stage', '?')}): {summary(event)}")
    if "engine" in latest:
        event = latest["engine"]
        lines.append(f"engine ({event.get('stage', '?')}): {event.get('engine', '?')} "
                     f"({event.get('reason', '')})")
    return lines
