"""The pre-sampling stage: K graded solutions per training problem from the reference model.

Generations are shared by content (`o1pruner.sampling.shared`): a run whose pre-samples
another run already made (same model, problems, prompts and sampling) generates nothing.
Each run grades them into `<run>/presample/`:
- `problems.jsonl`: {problem_id, problem, gold, prompt, prompt_tokens, prompt_token_ids},
  written atomically before sampling (training uses exactly these prompt ids);
- `samples.jsonl`: {problem_id, sample_idx, completion, token_ids, num_tokens,
  thinking_tokens, answer_tokens, finish_reason, extracted, correct}, one line per sample;
- `problem_stats.jsonl`: {problem_id, k, mean_length, mean_thinking_tokens,
  mean_answer_tokens, mean_accuracy, min_length, max_length, truncated}, one line per
  problem, after its samples (a problem is done when its stats line exists);
- `source.json`: the shared entry, grading mode and grader version they were graded from.

A re-run (also after `kill -9`) keeps every finished problem, in the shared entry and in
the run's files, and samples only the missing ones: no sample is lost or duplicated. A
change of grading mode (or of the grader) grades the shared generations again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import (
    JsonlWriter,
    atomic_write_json,
    atomic_write_text,
    folder_lock,
    read_json,
    read_jsonl,
)
from o1pruner.jobs import Progress, RunDir, job_process, run_dir_for
from o1pruner.sampling import shared
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)

STAGE = "presample"
PROBLEMS_FILE = "problems.jsonl"
SAMPLES_FILE = "samples.jsonl"
STATS_FILE = "problem_stats.jsonl"
SOURCE_FILE = "source.json"


def _jsonl_text(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def problem_stats(problem_id: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The stats line of one problem from its K sample lines: L_ref (mean_length, and its
    thinking / answer parts), A_ref (mean_accuracy), the length range and how many samples
    hit the token limit."""
    lengths = [s["num_tokens"] for s in samples]
    thinking = [s.get("thinking_tokens", 0) for s in samples]
    return {
        "problem_id": problem_id,
        "k": len(samples),
        "mean_length": sum(lengths) / len(lengths),
        "mean_thinking_tokens": sum(thinking) / len(thinking),
        "mean_answer_tokens": sum(n - t for n, t in zip(lengths, thinking, strict=True))
        / len(lengths),
        "mean_accuracy": sum(bool(s["correct"]) for s in samples) / len(samples),
        "min_length": min(lengths),
        "max_length": max(lengths),
        "truncated": sum(s["finish_reason"] == "length" for s in samples),
    }


# ----------------------------------------------------------------------------- problems
def _build_problem_lines(spec: RunSpec) -> tuple[list[dict[str, Any]], Any]:
    """The training problems with their prompts rendered by the model's tokenizer (the
    tokenizer is returned too: grading splits thinking by its token ids)."""
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
        prompt = build_prompt(tokenizer, template, p.problem, thinking=spec.model.thinking)
        ids = encode_prompt(tokenizer, prompt)  # exactly what the engines are given
        lines.append({"problem_id": p.id, "problem": p.problem, "gold": p.gold,
                      "prompt": prompt, "prompt_tokens": len(ids), "prompt_token_ids": ids})
    return lines, tokenizer


def _legacy_kept(out: Path, problems: list[dict[str, Any]], k: int) -> bool:
    """A complete presample/ folder written before pre-samples were shared (no
    source.json) is kept as it is; an incomplete one is moved aside."""
    if (out / SOURCE_FILE).exists() or not (out / STATS_FILE).exists():
        return False
    old = read_jsonl(out / PROBLEMS_FILE)
    stats = read_jsonl(out / STATS_FILE)
    same = [(r["problem_id"], r["prompt"]) for r in old] == \
        [(p["problem_id"], p["prompt"]) for p in problems]
    if same and len(stats) == len(problems) and all(s.get("k") == k for s in stats):
        logger.warning("%s was pre-sampled by an older version (no token ids, no thinking "
                       "counts); it is complete and kept. Delete it to pre-sample again.", out)
        return True
    aside = out.with_name(f"presample.legacy-{int(time.time())}")
    out.rename(aside)
    out.mkdir()
    logger.warning("an incomplete pre-sample folder of an older version was moved to %s", aside)
    return False


# ------------------------------------------------------------------------------ grading
def _grade(problems: list[dict[str, Any]], groups: list[list[Any]], tokenizer: Any,
           spec: RunSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Sample lines (thinking and answer tokens, graded answer) and stats lines of problems
    and their K completions (objects with text, token_ids, num_tokens, finish_reason)."""
    from o1pruner.grading import grade_many
    from o1pruner.thinking import split_completions

    flat = [(p, idx, c) for p, group in zip(problems, groups, strict=True)
            for idx, c in enumerate(group)]
    parts = split_completions(tokenizer, spec.model.thinking, [p["prompt"] for p, _, _ in flat],
                              [c for _, _, c in flat])
    grades = grade_many([answer for _, answer in parts], [p["gold"] for p, _, _ in flat],
                        mode=spec.presample.grading,
                        truncated=[c.finish_reason == "length" for _, _, c in flat])
    sample_lines = []
    for (p, idx, c), (measured, _), g in zip(flat, parts, grades, strict=True):
        sample_lines.append({
            "problem_id": p["problem_id"], "sample_idx": idx, "completion": c.text,
            "token_ids": c.token_ids,  # as generated, with the token that ended the sample
            "num_tokens": c.num_tokens, "thinking_tokens": measured.thinking_tokens,
            "answer_tokens": measured.answer_tokens, "finish_reason": c.finish_reason,
            "extracted": g.extracted,
            # no final answer within the token limit (or the thinking) means wrong
            "correct": bool(g.correct and g.extracted is not None)})
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in sample_lines:
        by_problem[line["problem_id"]].append(line)
    stats_lines = [problem_stats(p["problem_id"], by_problem[p["problem_id"]]) for p in problems]
    return sample_lines, stats_lines


def _as_completions(lines: list[dict[str, Any]]) -> list[Any]:
    from o1pruner.sampling.engines import Completion

    return [Completion(x["completion"], x["token_ids"], x["num_tokens"], x["finish_reason"])
            for x in lines]


def _sync_run_files(out: Path, problems: list[dict[str, Any]],
                    done: dict[str, list[dict[str, Any]]], source: dict[str, Any],
                    tokenizer: Any, spec: RunSpec) -> int:
    """Make the run's graded files hold exactly the shared entry's finished problems, graded
    as `source` says (graded afresh when the grading or the entry changed); return how many
    problems were graded now."""
    if read_json(out / SOURCE_FILE) != source:
        for name in (SAMPLES_FILE, STATS_FILE):
            (out / name).unlink(missing_ok=True)
    all_stats, all_samples = read_jsonl(out / STATS_FILE), read_jsonl(out / SAMPLES_FILE)
    counts: dict[str, set[int]] = defaultdict(set)
    for s in all_samples:
        counts[s["problem_id"]].add(s["sample_idx"])
    graded = {s["problem_id"] for s in all_stats if s["problem_id"] in done
              and len(counts[s["problem_id"]]) == spec.presample.k}
    first: dict[tuple[str, int], dict[str, Any]] = {}
    for s in all_samples:
        if s["problem_id"] in graded:
            first.setdefault((s["problem_id"], s["sample_idx"]), s)
    samples = list(first.values())
    stats = list({s["problem_id"]: s for s in all_stats if s["problem_id"] in graded}.values())
    if len(samples) != len(all_samples) or len(stats) != len(all_stats):
        logger.info("presample: keeping %d of %d graded problems in %s (the rest are graded "
                    "again)", len(stats), len(all_stats), out)
        atomic_write_text(out / SAMPLES_FILE, _jsonl_text(samples))
        atomic_write_text(out / STATS_FILE, _jsonl_text(stats))
    if read_json(out / SOURCE_FILE) != source:
        atomic_write_json(out / SOURCE_FILE, source)
    missing = [p for p in problems if p["problem_id"] in done and p["problem_id"] not in graded]
    if missing:
        logger.info("presample: grading %d shared problems into %s", len(missing), out)
        sample_lines, stats_lines = _grade(
            missing, [_as_completions(done[p["problem_id"]]) for p in missing], tokenizer, spec)
        with JsonlWriter(out / SAMPLES_FILE) as samples_out, \
                JsonlWriter(out / STATS_FILE) as stats_out:
            samples_out.write_many(sample_lines)
            stats_out.write_many(stats_lines)
    return len(missing)


# -------------------------------------------------------------------------------- stage
def run_presample(spec: RunSpec) -> RunDir:
    """Stage entry (`o1pruner presample SPEC.yaml`): pre-sample (or reuse the shared
    pre-samples), grade and summarise K solutions per training problem into
    <run>/presample/, resuming unfinished work."""
    run = run_dir_for(spec)
    with job_process(run, STAGE, spec.to_yaml()):
        summary = _presample(spec, run)
        _in_problem_order(run.stage_dir(STAGE), read_jsonl(run.stage_dir(STAGE) / PROBLEMS_FILE))
        if not summary.get("skipped"):
            run.update_stage(STAGE, totals=summary["presample"])
    return run


def _presample(spec: RunSpec, run: RunDir) -> dict[str, Any]:
    from o1pruner.grading import GRADER_VERSION
    from o1pruner.models import model_fingerprint, resolve_model
    from o1pruner.sampling.engines import resolve_engine, stop_token_ids

    cfg = spec.presample
    out = run.stage_dir(STAGE)
    problems, tokenizer = _build_problem_lines(spec)
    if _legacy_kept(out, problems, cfg.k):
        run.emit("skipped", STAGE, reason="pre-sampled by an older version")
        return {"skipped": True}
    if [(r["problem_id"], r["prompt_token_ids"]) for r in read_jsonl(out / PROBLEMS_FILE)] != \
            [(p["problem_id"], p["prompt_token_ids"]) for p in problems]:
        atomic_write_text(out / PROBLEMS_FILE, _jsonl_text(problems))
    path = resolve_model(spec.model)
    engine_name = resolve_engine(cfg.engine, path, spec.model.dtype)[0]
    key = shared.presample_key(spec, model_fingerprint(spec.model.name_or_path, path,
                                                       spec.model.revision), engine_name,
                               stop_token_ids(tokenizer, path))
    folder = shared.shared_dir(spec, key)
    problem_set = hashlib.sha256(json.dumps(
        [[p["problem_id"], shared.prompt_sha(p), p["gold"]] for p in problems]).encode())
    source = {"shared": str(folder), "key": shared.key_digest(key), "grading": cfg.grading,
              "grader_version": GRADER_VERSION, "thinking": spec.model.thinking,
              "problems": problem_set.hexdigest()}
    with folder_lock(folder, waiting=f"waiting for another job that is generating the same "
                                     f"pre-samples ({folder})"):
        shared.open_entry(folder, key)
        done = shared.complete_generations(folder, cfg.k, problems)
        newly = _sync_run_files(out, problems, done, source, tokenizer, spec)
        todo = [(i, p) for i, p in enumerate(problems) if p["problem_id"] not in done]
        if not todo:
            logger.info("presample: all %d problems sampled (%s); nothing to generate",
                        len(problems), folder)
            run.emit("shared", STAGE, path=str(folder), graded_now=newly)
            if not newly:
                run.emit("skipped", STAGE, reason="all problems already sampled and graded")
                return {"skipped": True}
            return _emit_totals(run, out, engine_name, 0, 0.0)
        logger.info("presample: %d problems, %d done, %d to sample (K=%d) into %s",
                    len(problems), len(done), len(todo), cfg.k, folder)
        return _generate(spec, run, out, folder, problems, todo, tokenizer, path)


def _generate(spec: RunSpec, run: RunDir, out: Path, folder: Path,
              problems: list[dict[str, Any]], todo: list[tuple[int, dict[str, Any]]],
              tokenizer: Any, path: str) -> dict[str, Any]:
    """Sample the `todo` problems in batches on presample.data_parallel_size replicas: each
    finished batch is appended to the shared entry (all K samples of a problem together),
    then graded into the run's files. Each problem is sampled with its own seed (from
    presample.seed and its id, o1pruner.sampling.seeds), so its samples do not depend on the
    batch or replica it lands in, nor on its place in the list."""
    from o1pruner.hardware import precision_record
    from o1pruner.sampling.engines import counting_tokens, resolve_engine
    from o1pruner.sampling.replicas import Request, engine_args, open_pool
    from o1pruner.sampling.seeds import problem_seed

    cfg = spec.presample
    args = engine_args(
        spec.model, cfg.engine, path, batch_size=cfg.batch_size,
        max_model_len=max(p["prompt_tokens"] for _, p in todo) + cfg.max_new_tokens,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization, seed=cfg.seed)
    sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k,
                "max_new_tokens": cfg.max_new_tokens}
    requests = (Request([p["prompt"] for _, p in batch], cfg.k, sampling,
                        seeds=[problem_seed(cfg.seed, p["problem_id"]) for _, p in batch],
                        tag=batch)
                for batch in (todo[s:s + cfg.batch_size]
                              for s in range(0, len(todo), cfg.batch_size)))
    engine_name, why = resolve_engine(cfg.engine, path, spec.model.dtype)
    gen_tokens, began = 0, None
    try:
        with open_pool(args, cfg.data_parallel_size, cfg.ray_address,
                       on_event=lambda kind, **f: run.emit(kind, STAGE, **f)) as pool, \
                JsonlWriter(folder / shared.GENERATIONS_FILE) as shared_out, \
                JsonlWriter(out / SAMPLES_FILE) as samples_out, \
                JsonlWriter(out / STATS_FILE) as stats_out, \
                Progress(run, STAGE, total=len(problems), initial=len(problems) - len(todo),
                         unit="problem") as progress, counting_tokens(progress.tokens):
            run.emit("engine", STAGE, engine=engine_name, reason=why, replicas=pool.size,
                     backend=pool.kind)
            run.emit("precision", STAGE, **precision_record(spec.model.dtype))
            began = time.perf_counter()
            for result in pool.run(requests):
                batch, groups = result.request.tag, result.groups
                tokens = sum(c.num_tokens for g in groups for c in g)
                gen_tokens += tokens
                shared_out.write_many(shared.generation_line(p, idx, c)
                                      for (_, p), group in zip(batch, groups, strict=True)
                                      for idx, c in enumerate(group))
                sample_lines, stats_lines = _grade([p for _, p in batch], groups, tokenizer,
                                                   spec)
                samples_out.write_many(sample_lines)  # all K samples of a problem first,
                stats_out.write_many(stats_lines)  # then its stats line (= done)
                progress.update(len(batch), tokens_per_s=round(
                    gen_tokens / max(time.perf_counter() - began, 1e-9), 1))
    except KeyboardInterrupt:
        kept = len(read_jsonl(out / STATS_FILE))
        run.update_stage(STAGE, resume=f"{kept} of {len(problems)} problems sampled and kept; "
                         "Start resumes with the rest")
        raise
    seconds = time.perf_counter() - began if began is not None else 0.0
    return _emit_totals(run, out, engine_name, gen_tokens, seconds)


def _in_problem_order(out: Path, problems: list[dict[str, Any]]) -> None:
    """Rewrite samples.jsonl and problem_stats.jsonl in problem order (and sample order)
    when batches finished out of order (replicas) or a resume graded problems late: the
    files are then the same whatever data_parallel_size and resume history."""
    order = {p["problem_id"]: i for i, p in enumerate(problems)}
    for name, key in ((SAMPLES_FILE, lambda r: (order[r["problem_id"]], r["sample_idx"])),
                      (STATS_FILE, lambda r: order[r["problem_id"]])):
        lines = read_jsonl(out / name)
        ordered = sorted(lines, key=key)
        if ordered != lines:
            atomic_write_text(out / name, _jsonl_text(ordered))


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
        "mean_thinking_tokens": round(sum(s.get("thinking_tokens", 0) for s in samples) / n, 2),
        "mean_answer_tokens": round(sum(s.get("answer_tokens", s["num_tokens"])
                                        for s in samples) / n, 2),
        "mean_accuracy": round(sum(bool(s["correct"]) for s in samples) / n, 4),
        "truncation_rate": round(sum(s["finish_reason"] == "length" for s in samples) / n, 4),
        "tokens_per_s": round(gen_tokens / gen_seconds, 1) if gen_seconds else None,
        "engine": engine,
    }
    run.emit("metrics", STAGE, **totals)
    logger.info("presample done: %s", totals)
    return {"presample": totals}
