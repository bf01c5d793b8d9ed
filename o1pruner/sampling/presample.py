"""The pre-sampling stage: K graded solutions per training problem from the reference model.

Writes, in `<run>/presample/`:
- `problems.jsonl`: {problem_id, problem, gold, prompt, prompt_tokens}, once, atomically,
  before sampling (training reuses the exact prompt string);
- `samples.jsonl`: {problem_id, sample_idx, completion, num_tokens, finish_reason,
  extracted, correct}, one line per completion, appended as problems finish;
- `problem_stats.jsonl`: {problem_id, k, mean_length, mean_accuracy, min_length,
  max_length, truncated}, one line per problem, appended after the problem's samples.

A problem is done only when its stats line exists. A re-run (also after `kill -9`) drops
the samples of unfinished problems (rewriting samples.jsonl atomically) and samples only
the missing problems, so no sample is ever lost or duplicated.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import JsonlWriter, atomic_write_text, read_jsonl
from o1pruner.job import job_process
from o1pruner.progress import Progress
from o1pruner.rundir import RunDir, run_dir_for
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)

STAGE = "presample"
PROBLEMS_FILE = "problems.jsonl"
SAMPLES_FILE = "samples.jsonl"
STATS_FILE = "problem_stats.jsonl"


def _jsonl_text(records: list[dict[str, Any]]) -> str:
    import json

    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def problem_stats(problem_id: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The stats line of one problem from its K sample lines: L_ref (mean_length),
    A_ref (mean_accuracy), the length range and how many samples hit the token limit."""
    lengths = [s["num_tokens"] for s in samples]
    return {
        "problem_id": problem_id,
        "k": len(samples),
        "mean_length": sum(lengths) / len(lengths),
        "mean_accuracy": sum(bool(s["correct"]) for s in samples) / len(samples),
        "min_length": min(lengths),
        "max_length": max(lengths),
        "truncated": sum(s["finish_reason"] == "length" for s in samples),
    }


# ----------------------------------------------------------------------------- problems
def _build_problem_lines(spec: RunSpec) -> list[dict[str, Any]]:
    """Load the training problems and render their prompts with the model's tokenizer."""
    from o1pruner.data import load_problems
    from o1pruner.models import load_tokenizer
    from o1pruner.prompts import build_prompt, load_template
    from o1pruner.sampling.engines import encode_prompt

    problems = load_problems(spec.data.train, spec.data.local_dir, spec.data.train_limit,
                             spec.data.shuffle_seed)
    if not problems:
        raise UserError(f"data.train: {spec.data.train.name} has no problems")
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise UserError(f"data.train: problem id {p.id!r} occurs twice; ids must be unique")
        seen.add(p.id)
    template = load_template(spec.model)
    tokenizer = load_tokenizer(spec.model)
    lines = []
    for p in problems:
        prompt = build_prompt(tokenizer, template, p.problem)
        ids = encode_prompt(tokenizer, prompt)  # exactly what the engines are given
        lines.append({"problem_id": p.id, "problem": p.problem, "gold": p.gold,
                      "prompt": prompt, "prompt_tokens": len(ids), "prompt_token_ids": ids})
    return lines


def _load_or_write_problems(out: Path, spec: RunSpec) -> list[dict[str, Any]]:
    """problems.jsonl as it exists (checked against the spec's data) or freshly written."""
    lines = _build_problem_lines(spec)
    path = out / PROBLEMS_FILE
    existing = read_jsonl(path)
    if existing:
        old = [(r["problem_id"], r["prompt"]) for r in existing]
        new = [(r["problem_id"], r["prompt"]) for r in lines]
        if old != new:
            raise UserError(
                f"{path}: was written for other problems or prompts than this spec gives "
                "(data, limit, shuffle or prompt template changed); use another run.name or "
                f"delete {out} to pre-sample again")
        if any("prompt_token_ids" not in r for r in existing):  # written before ids were kept
            atomic_write_text(path, _jsonl_text(lines))
            return lines
        return existing
    atomic_write_text(path, _jsonl_text(lines))
    return lines


# ------------------------------------------------------------------------------- resume
def _resume_state(out: Path, problems: list[dict[str, Any]], k: int) -> set[str]:
    """Ids of finished problems; drops samples (and stats) of unfinished ones so that the
    files hold exactly the K samples and one stats line of each finished problem."""
    known = {p["problem_id"] for p in problems}
    stats = read_jsonl(out / STATS_FILE)
    samples = read_jsonl(out / SAMPLES_FILE)
    for line in stats:
        if line["problem_id"] not in known:
            raise UserError(f"{out / STATS_FILE}: problem {line['problem_id']!r} is not in "
                            f"{PROBLEMS_FILE}; delete {out} to pre-sample again")
        if line["k"] != k:
            raise UserError(f"{out / STATS_FILE}: problem {line['problem_id']!r} has k="
                            f"{line['k']} samples but presample.k is {k}; use another "
                            f"run.name or delete {out}")
    by_problem: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for s in samples:
        by_problem[s["problem_id"]][s["sample_idx"]] = s  # a duplicate keeps the last line
    done: set[str] = set()
    kept_stats = []
    for line in stats:
        pid = line["problem_id"]
        if pid not in done and sorted(by_problem.get(pid, {})) == list(range(k)):
            done.add(pid)
            kept_stats.append(line)
    kept = [by_problem[s["problem_id"]][s["sample_idx"]] for s in samples
            if s["problem_id"] in done and by_problem[s["problem_id"]][s["sample_idx"]] is s]
    if len(kept) != len(samples) or _has_torn_tail(out / SAMPLES_FILE):
        logger.info("resume: dropping %d sample lines of unfinished problems",
                    len(samples) - len(kept))
        atomic_write_text(out / SAMPLES_FILE, _jsonl_text(kept))
    if len(kept_stats) != len(stats) or _has_torn_tail(out / STATS_FILE):
        atomic_write_text(out / STATS_FILE, _jsonl_text(kept_stats))
    return done


def _has_torn_tail(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


# -------------------------------------------------------------------------------- stage
def run_presample(spec: RunSpec) -> RunDir:
    """Stage entry (`o1pruner presample SPEC.yaml`): pre-sample, grade and summarise K
    solutions per training problem into <run>/presample/, resuming unfinished work."""
    run = run_dir_for(spec)
    with job_process(run, STAGE, spec.to_yaml()):
        summary = _presample(spec, run)
        if not summary.get("skipped"):
            run.update_stage(STAGE, totals=summary["presample"])
    return run


def _presample(spec: RunSpec, run: RunDir) -> dict[str, Any]:
    cfg = spec.presample
    out = run.stage_dir(STAGE)
    problems = _load_or_write_problems(out, spec)
    done = _resume_state(out, problems, cfg.k)
    todo = [(i, p) for i, p in enumerate(problems) if p["problem_id"] not in done]
    if not todo:
        logger.info("presample: all %d problems already done; stage skipped", len(problems))
        run.emit("skipped", STAGE, reason="all problems already sampled")
        return {"skipped": True}
    logger.info("presample: %d problems, %d done, %d to sample (K=%d)",
                len(problems), len(done), len(todo), cfg.k)

    from o1pruner.sampling.engines import create_engine

    engine = create_engine(
        spec.model, cfg.engine, batch_size=cfg.batch_size,
        max_model_len=max(p["prompt_tokens"] for _, p in todo) + cfg.max_new_tokens,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization, seed=cfg.seed)
    run.emit("engine", STAGE, engine=engine.name, reason=engine.reason)
    gen_tokens, gen_seconds = 0, 0.0
    try:
        with JsonlWriter(out / SAMPLES_FILE) as samples_out, \
                JsonlWriter(out / STATS_FILE) as stats_out, \
                Progress(run, STAGE, total=len(problems), initial=len(done),
                         unit="problem") as progress:
            for start in range(0, len(todo), cfg.batch_size):
                batch = todo[start:start + cfg.batch_size]
                t0 = time.perf_counter()
                # seed by problem position so a problem's samples do not depend on batching
                groups = engine.generate(
                    [p["prompt"] for _, p in batch], cfg.k, temperature=cfg.temperature,
                    top_p=cfg.top_p, top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens,
                    seed=cfg.seed + batch[0][0] * cfg.k)
                elapsed = time.perf_counter() - t0
                tokens = sum(c.num_tokens for g in groups for c in g)
                gen_tokens, gen_seconds = gen_tokens + tokens, gen_seconds + elapsed
                sample_lines, stats_lines = _grade_batch(batch, groups)
                samples_out.write_many(sample_lines)  # all K samples of a problem first,
                stats_out.write_many(stats_lines)  # then its stats line (= done)
                progress.update(len(batch), tokens_per_s=round(tokens / max(elapsed, 1e-9), 1))
    except KeyboardInterrupt:
        kept = len(read_jsonl(out / STATS_FILE))
        run.update_stage(STAGE, resume=f"{kept} of {len(problems)} problems sampled and kept; "
                         "Start resumes with the rest")
        raise
    finally:
        engine.close()
    return _emit_totals(run, out, engine.name, gen_tokens, gen_seconds)


def _grade_batch(batch: list[tuple[int, dict[str, Any]]],
                 groups: list[list[Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from o1pruner.grading import grade_many

    flat = [(p, idx, c) for (_, p), group in zip(batch, groups, strict=True)
            for idx, c in enumerate(group)]
    grades = grade_many([c.text for _, _, c in flat], [p["gold"] for p, _, _ in flat])
    sample_lines = []
    for (p, idx, c), g in zip(flat, grades, strict=True):
        sample_lines.append({
            "problem_id": p["problem_id"], "sample_idx": idx, "completion": c.text,
            "token_ids": c.token_ids,  # as generated, with the token that ended the sample
            "num_tokens": c.num_tokens, "finish_reason": c.finish_reason,
            "extracted": g.extracted,
            # no final answer within the token limit means wrong (METHOD.md)
            "correct": bool(g.correct and g.extracted is not None)})
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in sample_lines:
        by_problem[line["problem_id"]].append(line)
    stats_lines = [problem_stats(p["problem_id"], by_problem[p["problem_id"]]) for _, p in batch]
    return sample_lines, stats_lines


def _emit_totals(run: RunDir, out: Path, engine: str, gen_tokens: int,
                 gen_seconds: float) -> dict[str, Any]:
    """The `metrics` event of the stage, over all finished problems (resumed ones too)."""
    samples = read_jsonl(out / SAMPLES_FILE)
    stats = read_jsonl(out / STATS_FILE)
    n = max(len(samples), 1)
    totals = {
        "n_problems": len(stats),
        "n_samples": len(samples),
        "mean_length": round(sum(s["num_tokens"] for s in samples) / n, 2),
        "mean_accuracy": round(sum(bool(s["correct"]) for s in samples) / n, 4),
        "truncation_rate": round(sum(s["finish_reason"] == "length" for s in samples) / n, 4),
        "tokens_per_s": round(gen_tokens / gen_seconds, 1) if gen_seconds else None,
        "engine": engine,
    }
    run.emit("metrics", STAGE, **totals)
    logger.info("presample done: %s", totals)
    return {"presample": totals}
