"""Training-step speed: how the completion log-probs are computed, and the micro-batch size,
on real pre-samples of a run, in one process (same machine state for every variant).

    .venv/bin/python benchmarks/train_step.py --run runs/quickstart            # its spec, its rows
    .venv/bin/python benchmarks/train_step.py --run runs/quickstart --rows 48 --repeats 2

Variants (forward + backward of the length-harmonizing loss, freeze tuning as in the run's
spec, bf16 autocast over fp32 weights like the trainer):
    full-logits   logits at every position, then gather - logsumexp (the code before
                  2026-11-23's change)
    completion    o1pruner.training.loss.completion_logprobs: logits only from the first
                  completion token on (`logits_to_keep`), cross-entropy in fp32
Each is timed at the run's micro-batch size and at micro-batch 1 (no padding). Prints one
JSON line per variant (seconds per sample, tokens per second) and the ratios against
full-logits at the run's batch size, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def full_logits(model, batch):
    """The former completion_logprobs: fp32 logits at every position."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    token_logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    mask = batch["completion_mask"][:, 1:].to(token_logp.dtype)
    return (token_logp * mask).sum(-1), mask.sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="A run directory with train/dataset.jsonl.")
    parser.add_argument("--rows", type=int, default=32, help="Training rows timed per variant.")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from pathlib import Path

    import torch
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from o1pruner.runs import read_jsonl
    from o1pruner.models import resolve_model
    from o1pruner.specio import load_spec
    from o1pruner.training.dataset import make_batch, tokenize_rows
    from o1pruner.training.finetuning import load_training_model
    from o1pruner.training.loss import completion_logprobs, length_harmonizing_loss

    run = Path(args.run)
    spec = load_spec(run / "spec.yaml")
    rows = list(read_jsonl(run / "train" / "dataset.jsonl"))[: args.rows]
    path = resolve_model(spec.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    items = tokenize_rows(tokenizer, rows, spec.train.max_length)
    model = load_training_model(spec, path)
    acc = Accelerator(mixed_precision="bf16" if spec.train.precision == "bf16" else "no",
                      cpu=True)
    model = acc.prepare(model)
    model.train()
    pad = tokenizer.pad_token_id
    n_tokens = sum(len(i["chosen"].input_ids) for i in items)

    def step(fn, batch_size: int) -> float:
        t0 = time.perf_counter()
        for start in range(0, len(items), batch_size):
            idx = list(range(start, min(start + batch_size, len(items))))
            batch = make_batch(items, idx, pad, pairs=False)
            with acc.autocast():
                logp, n = fn(model, batch)
            loss, _ = length_harmonizing_loss(logp, logp.detach() - 0.01, n,
                                              torch.ones(len(idx)), 0.2)
            acc.backward(loss)
            model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    variants = [("full-logits", full_logits, spec.train.batch_size),
                ("completion", completion_logprobs, spec.train.batch_size),
                ("full-logits", full_logits, 1), ("completion", completion_logprobs, 1)]
    step(completion_logprobs, spec.train.batch_size)  # warm-up
    times = {}
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour hits all variants
        for name, fn, bs in variants:
            times.setdefault((name, bs), []).append(step(fn, bs))
    base = statistics.median(times[("full-logits", spec.train.batch_size)])
    for (name, bs), ts in times.items():
        t = statistics.median(ts)
        print(json.dumps({"variant": name, "micro_batch": bs, "rows": len(items),
                          "s_per_sample": round(t / len(items), 3),
                          "tokens_per_s": round(n_tokens / t, 1),
                          "speedup_vs_full_logits": round(base / t, 2)}), flush=True)


if __name__ == "__main__":
    main()
