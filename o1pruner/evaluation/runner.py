"""`o1pruner eval`: generate, grade and score every (model, benchmark), with resume and a
shared cache for the base model.

Methods evaluated:
- `base`: the reference model (spec.model), cached under <output_root>/.cache/eval/;
- `fast_solving` (eval.fast_solving_prompt): the base model with the paper's Fast-Solving
  suffix appended to the user turn, cached the same way;
- `trained`: `--model`, else `<run>/train/final` when it exists (with `run.rounds` N > 1:
  the last round's model, and each earlier round's as `round-1` ... `round-(N-1)` unless
  eval.earlier_rounds is off).

Generations are appended per batch to `<run>/eval/<label>/<benchmark>/generations.jsonl`
(for cached methods: to the cache entry, linked into the run when complete), so an
interrupted evaluation resumes with the problems not yet generated.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.evaluation import cache
from o1pruner.evaluation.difficulty import by_difficulty
from o1pruner.evaluation.intervals import paired_bootstrap
from o1pruner.evaluation.metrics import average_row, benchmark_metrics, compare
from o1pruner.files import JsonlWriter, atomic_write_json, folder_lock, read_json, read_jsonl
from o1pruner.hardware import precision_record
from o1pruner.hardware import summary as precision_summary
from o1pruner.jobs import Progress, RunDir, current_warnings, job_process, run_dir_for
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


# ------------------------------------------------------------------------------ planning
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
            task.todo = _remaining(task, spec.eval.samples_per_problem)
            task.reused = method.cached and not task.todo and cache.is_complete(workdir)
            tasks.append(task)
    return tasks


# ---------------------------------------------------------------------------- generation
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


def _generate(spec: RunSpec, pool: Any, tokenizer: Any, template: Any, task: Task,
              progress: Progress) -> None:
    """Generate, grade and append the task's remaining problems, one batch at a time on the
    pool's replicas (the n = eval.samples_per_problem samples of a problem are written
    together). Sampling seeds each problem from run.seed and its id (o1pruner.sampling.seeds),
    whichever replica runs it.

    Each record carries two times: `gen_s`, its share of its batch's seconds on its replica,
    and `wall_s`, its share of the wall time from the previous batch's end (or the start)
    to its batch's end (generated and graded). Summed over a task they are the
    replica-seconds and the elapsed time: with N replicas at work the first is up to N
    times the second."""
    from o1pruner.grading import grade_many
    from o1pruner.prompts import build_prompt
    from o1pruner.sampling.replicas import Request
    from o1pruner.sampling.seeds import problem_seed
    from o1pruner.thinking import split_completions

    settings = cache.decoding_settings(spec)
    sampling = {k: settings[k] for k in ("temperature", "top_p", "max_new_tokens")}
    n, size, seed = spec.eval.samples_per_problem, spec.eval.batch_size, settings.get("seed")

    def requests() -> Any:
        for start in range(0, len(task.todo), size):
            batch = task.todo[start:start + size]
            prompts = [build_prompt(tokenizer, template, p.problem, task.method.suffix,
                                    thinking=spec.model.thinking) for p in batch]
            yield Request(prompts, n, sampling, tag=batch,
                          seeds=None if seed is None else [problem_seed(seed, p.id)
                                                           for p in batch])

    with JsonlWriter(task.workdir / "generations.jsonl") as out:
        last = time.perf_counter()
        for result in pool.run(requests()):
            batch, prompts = result.request.tag, result.request.prompts
            per_item = result.seconds / (len(batch) * n)
            flat = [(p, prompt, idx, c) for p, prompt, group in zip(batch, prompts,
                                                                    result.groups, strict=True)
                    for idx, c in enumerate(group)]
            parts = split_completions(tokenizer, spec.model.thinking,
                                      [prompt for _, prompt, _, _ in flat],
                                      [c for _, _, _, c in flat])
            grades = grade_many([answer for _, answer in parts], [p.gold for p, *_ in flat],
                                mode=spec.eval.grading,
                                truncated=[c.finish_reason == "length" for *_, c in flat])
            now = time.perf_counter()  # generated and graded: this batch's wall time is done
            wall_per_item, last = (now - last) / (len(batch) * n), now
            out.write_many({
                "problem_id": p.id, "sample_idx": idx, "prompt": prompt, "completion": c.text,
                "num_tokens": c.num_tokens, "thinking_tokens": measured.thinking_tokens,
                "answer_tokens": measured.answer_tokens, "finish_reason": c.finish_reason,
                "extracted": g.extracted, "correct": bool(g.correct and g.extracted is not None),
                "gold": p.gold, "gen_s": round(per_item, 4), "wall_s": round(wall_per_item, 4),
            } for (p, prompt, idx, c), (measured, _), g in zip(flat, parts, grades, strict=True))
            progress.update(len(batch), method=task.method.label, benchmark=task.bench.name,
                            correct=sum(g.correct for g in grades))


def task_records(task: Task) -> list[dict[str, Any]]:
    """The task's generation records for its benchmark's problems, one per (problem,
    sample), in problem order (a sample written twice keeps its first record)."""
    wanted = {p.id for p in task.bench.problems}
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for r in read_jsonl(task.workdir / "generations.jsonl"):
        if r["problem_id"] in wanted:
            records.setdefault((r["problem_id"], int(r.get("sample_idx", 0))), r)
    order = {p.id: i for i, p in enumerate(task.bench.problems)}
    return [records[k] for k in sorted(records, key=lambda k: (order[k[0]], k[1]))]


def _finish(run: RunDir, task: Task) -> dict[str, Any]:
    """Metrics of a completed task from its saved generations (metrics.json); cached
    results are linked into the run directory."""
    metrics_path = task.workdir / cache.COMPLETE_MARKER
    metrics = benchmark_metrics(task_records(task))
    if not task.method.cached or not metrics_path.exists():  # a cache entry is immutable
        atomic_write_json(metrics_path, metrics)
    if task.method.cached:
        cache.link_results(task.workdir, task.rundir)
        if task.reused:
            logger.info("reused cached baseline for %s/%s from %s", task.method.label,
                        task.bench.name, task.workdir)
        run.emit("cache", "eval", method=task.method.label, benchmark=task.bench.name,
                 reused=task.reused, path=str(task.workdir))
    return metrics


def _command(spec_path: Path, model: str | None, benchmarks: list[str] | None) -> str:
    parts = ["o1pruner", "eval", str(spec_path)]
    if model:
        parts += ["--model", model]
    if benchmarks:
        parts += ["--benchmarks", ",".join(benchmarks)]
    return shlex.join(parts)


# ---------------------------------------------------------------------------------- entry
def adhoc_name(model: str) -> str:
    """The folder name of an ad-hoc evaluation of `model`: readable, and unique per model."""
    path = Path(model).expanduser()
    key = str(path.resolve()) if path.exists() else model
    parts = Path(key).parts
    generic = re.compile(r"^(final|adapter|model|checkpoint[s]?|step-\d+|checkpoint-\d+)$")
    if not path.exists():  # a hub id or pypi: model, as written
        tail = model
    elif parts and generic.match(parts[-1]):  # train/final, checkpoints/step-4
        tail = "-".join(parts[-2:])
    else:
        tail = parts[-1] if parts else "model"
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.")[:60] or "model"
    return f"{tail}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def eval_job_dir(run: RunDir, model: str | None, rounds: int = 1) -> RunDir:
    """The job directory of an evaluation of `model` (relative paths from the current
    folder) in `run`.

    The run's own evaluation (no --model, or its own final model) is a stage of the run,
    written to <run>/eval/ and <run>/report/. Any other model is an ad-hoc evaluation: a
    job of its own in <run>/eval/adhoc/<name>/ (its own job.json, logs, results.json and
    report/), so it never changes the run's state, times or results.
    """
    final = final_model(run, rounds)
    if model is None or Path(model).expanduser().resolve() == final.resolve():
        return run
    return run.adhoc(adhoc_name(model))


def run_eval(spec: RunSpec, model: str | None = None,
             benchmarks: list[str] | None = None) -> dict[str, Any]:
    """Evaluate the base model (cached), the Fast-Solving baseline (if asked) and the
    trained model (or `model`) on the benchmarks; write results.json and the report;
    return the results."""
    from o1pruner.evaluation.report import results_rows, write_report
    from o1pruner.models import looks_like_path
    from o1pruner.prompts import load_template

    run = run_dir_for(spec)
    job = eval_job_dir(run, model, spec.run.rounds)
    adhoc = job != run
    eval_dir, report_dir = (job.root, job.root / "report") if adhoc else (
        run.root / "eval", run.root / "report")
    if adhoc and (Path(model).expanduser().exists() or looks_like_path(model)):
        trained_model(run, model)  # a missing or broken local model: refused before any file
    with job_process(job, "eval", spec.to_yaml()):
        started = time.time()
        benches = load_benchmarks(spec, benchmarks)
        template = load_template(spec.model)
        methods = plan_methods(spec, run, model)
        tasks = plan_tasks(spec, eval_dir, methods, benches, template)
        total = sum(len(t.todo) for t in tasks)
        logger.info("eval: %s on %s; %d problem(s) to generate%s", ", ".join(
            m.label for m in methods), ", ".join(b.name for b in benches), total,
            f" (ad-hoc evaluation in {job.root})" if adhoc else "")
        with Progress(job, "eval", total=total, unit="problem") as progress:
            for method in methods:
                todo = [t for t in tasks if t.method is method and t.todo]
                if not todo:
                    continue
                _evaluate_method(spec, job, method, todo, template, progress)
        results = build_results(spec, job, methods, benches, tasks,
                                _command(run.spec_path, model, benchmarks))
        results.update(elapsed_s=round(time.time() - started, 1), eval_dir=str(eval_dir),
                       report_dir=str(report_dir),
                       warnings=[] if adhoc else current_warnings(run.events()))
        atomic_write_json(eval_dir / "results.json", results)
        report = write_report(eval_dir, report_dir, results)
        job.emit("metrics", "eval", table=results_rows(results), report=str(report))
        logger.info("eval done: %s", eval_dir / "results.json")
    return results


def _evaluate_method(spec: RunSpec, job: RunDir, method: Method, todo: list[Task],
                     template: Any, progress: Progress) -> None:
    """Generate the method's unfinished tasks on eval.data_parallel_size replicas of its
    model (started once for all its benchmarks)."""
    from o1pruner.models import load_tokenizer
    from o1pruner.sampling.engines import counting_tokens, resolve_engine
    from o1pruner.sampling.replicas import engine_args, open_pool

    ev = spec.eval
    engine, why = resolve_engine(ev.engine, method.path, spec.model.dtype)
    logger.info("%s: engine %s (%s), %d replica(s)", method.label, engine, why,
                ev.data_parallel_size)
    args = engine_args(spec.model, ev.engine, method.path, batch_size=ev.batch_size,
                       tensor_parallel_size=ev.tensor_parallel_size,
                       gpu_memory_utilization=ev.gpu_memory_utilization, seed=spec.run.seed)
    tokenizer = load_tokenizer(spec.model, method.path)
    with open_pool(args, ev.data_parallel_size, ev.ray_address,
                   on_event=lambda kind, **f: job.emit(kind, "eval", method=method.label,
                                                       **f)) as pool, \
            counting_tokens(progress.tokens):
        job.emit("engine", "eval", method=method.label, engine=engine, reason=why,
                 replicas=pool.size, backend=pool.kind)
        job.emit("precision", "eval", method=method.label, **precision_record(spec.model.dtype))
        for task in todo:
            with folder_lock(task.workdir) if method.cached else nullcontext():
                # another run may have filled it meanwhile
                task.todo = _remaining(task, ev.samples_per_problem)
                _generate(spec, pool, tokenizer, template, task, progress)


def _remaining(task: Task, n: int) -> list[Any]:
    """The problems without all n samples yet."""
    counts: dict[str, set[int]] = {}
    for r in read_jsonl(task.workdir / "generations.jsonl"):
        counts.setdefault(r["problem_id"], set()).add(int(r.get("sample_idx", 0)))
    return [p for p in task.bench.problems if len(counts.get(p.id, ())) < n]


def build_results(spec: RunSpec, run: RunDir, methods: list[Method], benches: list[Benchmark],
                  tasks: list[Task], command: str) -> dict[str, Any]:
    """results.json: every method x benchmark metric, the comparison against the base,
    the models, settings and the command used."""
    ev = spec.eval
    metrics: dict[str, dict[str, Any]] = {m.label: {} for m in methods}
    records: dict[str, dict[str, list[dict[str, Any]]]] = {m.label: {} for m in methods}
    for task in tasks:
        metrics[task.method.label][task.bench.name] = _finish(run, task)
        records[task.method.label][task.bench.name] = task_records(task)
    comparison: dict[str, dict[str, Any]] = {}
    for m in methods:
        if m.label == BASE:
            continue
        comps = {b.name: compare(metrics[m.label][b.name], metrics[BASE][b.name],
                                 ev.aes_alpha, ev.aes_beta, ev.aes_gamma) for b in benches}
        avg = average_row(metrics[m.label], comps)
        comparison[m.label] = {b: c.to_dict() for b, c in comps.items()}
        comparison[m.label]["AVG"] = {k: avg[k] for k in ("d_len", "d_acc", "aes", "note")}
        bootstrap = paired_bootstrap(records[BASE], records[m.label], seed=spec.run.seed)
        for bench, summary in bootstrap.items():
            comparison[m.label][bench]["interval"] = summary
        for b in benches:
            split = by_difficulty(records[BASE][b.name], records[m.label][b.name],
                                  seed=spec.run.seed)
            if split is not None:
                comparison[m.label][b.name]["difficulty"] = split
    averages = {m.label: average_row(metrics[m.label]) for m in methods}
    return {
        "run": str(run.root),
        "command": command,
        "argv": list(sys.argv),
        "benchmarks": {b.name: b.fingerprint | {"n": len(b.problems)} for b in benches},
        "models": {m.label: {"ref": m.ref, "path": m.path, "fingerprint": m.fingerprint,
                             "prompt_suffix": m.suffix, "cached": m.cached} for m in methods},
        "settings": cache.decoding_settings(spec) | {
            "engine": ev.engine, "batch_size": ev.batch_size, "aes_alpha": ev.aes_alpha,
            "aes_beta": ev.aes_beta, "aes_gamma": ev.aes_gamma, "grading": ev.grading,
            "thinking": spec.model.thinking,
            "precision": precision_summary(precision_record(spec.model.dtype))},
        "methods": [m.label for m in sorted(methods, key=lambda m: method_order(m.label))],
        "rounds": spec.run.rounds,
        "metrics": metrics,
        "averages": averages,
        "comparison": comparison,
        "cache": {f"{t.method.label}/{t.bench.name}": {"reused": t.reused, "path": str(t.workdir)}
                  for t in tasks if t.method.cached},
    }

