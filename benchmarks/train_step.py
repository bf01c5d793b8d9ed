"""Training speed on CPU: the reference pass and the training step as the trainer runs them
(micro-batch 1, bf16 autocast, the frozen prefix replayed), with and without the CPU
speed-ups of `o1pruner/training/cpu_speed.py`, on real pre-samples of a run, in one
process, interleaved over the repeats (the same machine state for both).

    .venv/bin/python benchmarks/train_step.py --run runs/quickstart
    .venv/bin/python benchmarks/train_step.py --run runs/quickstart --rows 12 --repeats 3
    .venv/bin/python benchmarks/train_step.py --run runs/quickstart --dtype fp32   # or bf16

The run must use freeze tuning (the quickstart does). Variants:
    reference plain / fast   the reference pass's forward (no gradient)
    step plain / fast        forward and backward of the length-harmonizing loss
`plain` is the code before 2026-11-26 (head through bmm, autocast casts of frozen weights,
glibc's default mmap threshold). Prints one JSON line per variant: seconds per sample,
tokens per second, user and system CPU seconds, speed-up of fast over plain; and the
largest difference of the per-sample log-probs between the two paths.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="A run directory with train/dataset.jsonl.")
    parser.add_argument("--rows", type=int, default=16, help="Training rows timed per variant.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                        help="train.precision for both paths (auto: as the machine decides).")
    args = parser.parse_args()

    import os
    from pathlib import Path

    import torch

    from o1pruner.files import read_jsonl
    from o1pruner.hardware import cpu_facts, resolve_train_precision
    from o1pruner.models import load_tokenizer, resolve_model
    from o1pruner.specio import load_spec
    from o1pruner.training.cpu_speed import CpuSpeedups, keep_large_buffers
    from o1pruner.training.dataset import make_batch, tokenize_rows
    from o1pruner.training.finetuning import load_training_model
    from o1pruner.training.loss import completion_logprobs, length_harmonizing_loss
    from o1pruner.training.prefix import FrozenPrefix

    run = Path(args.run)
    spec = load_spec(run / "spec.yaml")
    if spec.train.finetuning != "freeze":
        raise SystemExit(f"{run}: this benchmark needs a freeze-tuning run")
    rows = list(read_jsonl(run / "train" / "dataset.jsonl"))[: args.rows]
    path = resolve_model(spec.model)
    tokenizer = load_tokenizer(spec.model, path)
    items = tokenize_rows(tokenizer, rows, spec.train.max_length)
    pad = tokenizer.pad_token_id
    n_tokens = sum(len(i["chosen"].input_ids) for i in items)
    model = load_training_model(spec, path).train()
    precision = resolve_train_precision(args.dtype)
    bf16 = precision == "bf16"
    print(cpu_facts().line(), f"; train.precision {args.dtype} -> {precision}", flush=True)
    prefix = FrozenPrefix.for_training(spec, model, n_tokens, world_size=1)
    if prefix is None:
        raise SystemExit(f"{run}: its spec cannot use the frozen prefix (see docs/training.md)")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(len(items)):  # what the reference pass records
            batch = make_batch(items, [i], pad, pairs=False)
            with prefix.recording([i], batch["attention_mask"].sum(-1).tolist()):
                completion_logprobs(model, batch)

    speedups = CpuSpeedups(model, torch.bfloat16 if bf16 else None)

    def timed(fast: bool, grad: bool) -> tuple[float, float, float, list[float]]:
        if fast:
            speedups.install()
        keep_large_buffers(fast)
        cpu0, t0, logps = os.times(), time.perf_counter(), []
        for i in range(len(items)):
            batch = make_batch(items, [i], pad, pairs=False)
            context = (prefix.replaying([i], batch["input_ids"].shape[1], "cpu") if grad else
                       prefix.recording([i], batch["attention_mask"].sum(-1).tolist()))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), context, \
                    torch.set_grad_enabled(grad):
                logp, n = completion_logprobs(model, batch)
                logps.append(float(logp[0]))
                if grad:
                    loss, _ = length_harmonizing_loss(logp, logp.detach() - 0.01, n,
                                                      torch.ones(1), 0.2)
            if grad:
                loss.backward()
                model.zero_grad(set_to_none=True)
        seconds, cpu1 = time.perf_counter() - t0, os.times()
        if fast:
            speedups.remove()
        return seconds, cpu1.user - cpu0.user, cpu1.system - cpu0.system, logps

    variants = {f"{kind} {path}": (path == "fast", kind == "step")
                for kind in ("reference", "step") for path in ("plain", "fast")}
    timed(True, True)  # warm-up
    results: dict[str, list[tuple]] = {}
    for _ in range(args.repeats):
        for name, (fast, grad) in variants.items():
            results.setdefault(name, []).append(timed(fast, grad))
    for name, runs in results.items():
        t = statistics.median(r[0] for r in runs)
        kind = name.split()[0]
        plain = statistics.median(r[0] for r in results[f"{kind} plain"])
        print(json.dumps({"variant": name, "precision": precision, "rows": len(items),
                          "tokens": n_tokens,
                          "s_per_sample": round(t / len(items), 3),
                          "tokens_per_s": round(n_tokens / t, 1),
                          "user_s": round(statistics.median(r[1] for r in runs), 2),
                          "system_s": round(statistics.median(r[2] for r in runs), 2),
                          "speedup": round(plain / t, 2)}), flush=True)
    for kind in ("reference", "step"):
        plain, fast = results[f"{kind} plain"][0][3], results[f"{kind} fast"][0][3]
        print(json.dumps({"check": kind, "max_abs_logp_diff": max(
            abs(a - b) for a, b in zip(plain, fast, strict=True)), "max_abs_logp": max(map(abs, plain))}))


if __name__ == "__main__":
    main()
