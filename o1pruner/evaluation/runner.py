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

Here: the stage (`run_eval`, its job folder) and results.json; `tasks` plans the methods,
benchmarks and what is left to do, `generation` generates and grades.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from o1pruner.evaluation import cache
from o1pruner.evaluation.difficulty import by_difficulty
from o1pruner.evaluation.generation import evaluate_method
from o1pruner.evaluation.intervals import paired_bootstrap
from o1pruner.evaluation.metrics import average_row, benchmark_metrics, compare
from o1pruner.evaluation.tasks import (
    BASE,
    FAST,
    METHOD_ORDER,
    TRAINED,
    Benchmark,
    Method,
    Task,
    load_benchmarks,
    method_order,
    plan_methods,
    plan_tasks,
    trained_model,
)
from o1pruner.files import atomic_write_json, read_jsonl
from o1pruner.hardware import precision_record
from o1pruner.hardware import summary as precision_summary
from o1pruner.jobs import Progress, RunDir, current_warnings, job_process, run_dir_for
from o1pruner.rounds import final_model
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)


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
                evaluate_method(spec, job, method, todo, template, progress)
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


# ---------------------------------------------------------------------------- results.json
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


def _command(spec_path: Path, model: str | None, benchmarks: list[str] | None) -> str:
    parts = ["o1pruner", "eval", str(spec_path)]
    if model:
        parts += ["--model", model]
    if benchmarks:
        parts += ["--benchmarks", ",".join(benchmarks)]
    return shlex.join(parts)


__all__ = ["BASE", "FAST", "METHOD_ORDER", "TRAINED", "Benchmark", "Method", "Task",
           "adhoc_name", "build_results", "eval_job_dir", "load_benchmarks", "method_order",
           "plan_methods", "plan_tasks", "run_eval", "task_records", "trained_model"]
