"""On-policy sampling on CPU: a group of completions generated as TRL's GRPOTrainer does
(the fp32 training model, its forward under accelerate's autocast, `generate` on the
unwrapped model with sampling), with and without the CPU speed-ups of
`o1pruner/training/cpu_speed.py`, in one process, interleaved over the repeats (the same
machine state for both).

    .venv/bin/python benchmarks/grpo_generate.py
    .venv/bin/python benchmarks/grpo_generate.py --spec templates/quickstart.yaml \\
        --problems 2 --group 8 --max-new-tokens 128 --repeats 2 --dtype bf16

`plain` is the GRPO path before 2026-12-07 (frozen weights re-cast to bf16 at every token,
the output head through `bmm`). Prints the CPU line, one JSON line per variant (seconds,
new tokens per second, speed-up of fast over plain) and how many completions the two paths
sampled alike (the same seed; the products agree up to float rounding, so a long sample may
part ways at a near tie).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="templates/quickstart.yaml",
                        help="The run spec whose model, fine-tuning type and prompts are used.")
    parser.add_argument("--problems", type=int, default=2, help="Training problems timed.")
    parser.add_argument("--group", type=int, default=8,
                        help="Completions per problem, generated in one call (TRL's G).")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                        help="train.precision for both paths (auto: as the machine decides).")
    args = parser.parse_args()

    import torch
    from accelerate import Accelerator

    from o1pruner.hardware import cpu_facts, resolve_train_precision
    from o1pruner.models import load_tokenizer, resolve_model
    from o1pruner.sampling.engines import stop_token_ids
    from o1pruner.specio import load_spec
    from o1pruner.training.cpu_speed import CpuSpeedups, keep_large_buffers
    from o1pruner.training.finetuning import load_training_model
    from o1pruner.training.grpo import training_problems

    spec = load_spec(args.spec)
    precision = resolve_train_precision(args.dtype)
    print(cpu_facts().line(), f"; train.precision {args.dtype} -> {precision}", flush=True)
    path = resolve_model(spec.model)
    tokenizer = load_tokenizer(spec.model, path)
    tokenizer.padding_side = "left"
    prompts = [r["prompt"] for r in training_problems(spec, tokenizer)[: args.problems]]
    model = load_training_model(spec, path)
    model.generation_config.eos_token_id = stop_token_ids(tokenizer, path)
    accelerator = Accelerator(mixed_precision=precision if precision == "bf16" else "no",
                              cpu=True)
    model = accelerator.unwrap_model(accelerator.prepare(model))  # forward under autocast
    speedups = CpuSpeedups(model, torch.bfloat16 if precision == "bf16" else None)

    def timed(fast: bool) -> tuple[float, int, list[list[int]]]:
        if fast:
            speedups.install()
        keep_large_buffers(fast)
        torch.manual_seed(0)
        t0, tokens, samples = time.perf_counter(), 0, []
        with torch.no_grad():
            for prompt in prompts:
                inputs = tokenizer([prompt] * args.group, return_tensors="pt", padding=True)
                out = model.generate(**inputs, do_sample=True, use_cache=True,
                                     temperature=spec.train.grpo_temperature, top_p=1.0,
                                     top_k=0, max_new_tokens=args.max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id)
                new = out[:, inputs["input_ids"].shape[1]:]
                tokens += int((new != tokenizer.pad_token_id).sum())
                samples += new.tolist()
        seconds = time.perf_counter() - t0
        if fast:
            speedups.remove()
        return seconds, tokens, samples

    timed(True)  # warm-up
    results: dict[str, list[tuple]] = {"plain": [], "fast": []}
    for _ in range(args.repeats):
        for name in results:
            results[name].append(timed(name == "fast"))
    plain = statistics.median(r[0] / r[1] for r in results["plain"])
    for name, runs in results.items():
        per_token = statistics.median(r[0] / r[1] for r in runs)
        print(json.dumps({"variant": name, "precision": precision,
                          "completions": len(prompts) * args.group,
                          "new_tokens": runs[0][1],
                          "seconds": round(statistics.median(r[0] for r in runs), 1),
                          "tokens_per_s": round(1 / per_token, 1),
                          "speedup": round(plain / per_token, 2)}), flush=True)
    same = sum(a == b for a, b in zip(results["plain"][0][2], results["fast"][0][2],
                                      strict=True))
    print(json.dumps({"check": "same completions", "same": same,
                      "of": len(results["plain"][0][2])}))


if __name__ == "__main__":
    main()
