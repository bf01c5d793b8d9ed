"""Generating an evaluation's tasks: a method's model on eval.data_parallel_size replicas,
started once for all its benchmarks, fed batch by batch; every batch graded and appended
to its task's generations.jsonl with its share of the replica's and of the wall time.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from typing import Any

from o1pruner.evaluation import cache
from o1pruner.evaluation.tasks import Method, Task, remaining
from o1pruner.files import JsonlWriter, folder_lock
from o1pruner.hardware import precision_record
from o1pruner.jobs import Progress, RunDir
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)


def evaluate_method(spec: RunSpec, job: RunDir, method: Method, todo: list[Task],
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
                task.todo = remaining(task, ev.samples_per_problem)
                _generate(spec, pool, tokenizer, template, task, progress)


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
