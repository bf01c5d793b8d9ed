"""Training-step speed on CPU: how the completion log-probs are computed, the micro-batch
size and the frozen prefix, on real pre-samples of a run, in one process (the same machine
state for every variant, interleaved over the repeats).

    .venv/bin/python benchmarks/train_step.py --run runs/quickstart            # its spec, its rows
    .venv/bin/python benchmarks/train_step.py --run runs/quickstart --rows 12 --repeats 2

The run must use freeze tuning (the quickstart does). Variants, each the forward and backward
of the length-harmonizing loss under the run's precision (bf16 autocast), like the trainer:
    before        logits at every position (the code before 2026-11-23), at micro-batch
                  --micro-batch (default 4, the former quickstart's)
    logits        logits only from the first completion position (`completion_logprobs`)
    logits mb1    the same at micro-batch 1 (no padding)
    prefix mb1    + the frozen prefix replayed from the reference pass (the trainer's path)
and, for scale, the reference pass's forward (no gradient) at micro-batch 1. Prints one JSON
line per variant: seconds per sample, tokens per second, speed-up against `before` measured
in this run.
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
    parser.add_argument("--rows", type=int, default=16, help="Training rows timed per variant.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=4,
                        help="Micro-batch of `before` and `logits` (the former quickstart's 4).")
    args = parser.parse_args()

    from contextlib import nullcontext
    from pathlib import Path

    import torch

    from o1pruner.files import read_jsonl
    from o1pruner.models import load_tokenizer, resolve_model
    from o1pruner.specio import load_spec
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
    bf16 = spec.train.precision == "bf16"
    prefix = FrozenPrefix.for_training(spec, model, n_tokens, world_size=1)
    if prefix is None:
        raise SystemExit(f"{run}: its spec cannot use the frozen prefix (see docs/training.md)")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(len(items)):  # what the reference pass records
            batch = make_batch(items, [i], pad, pairs=False)
            with prefix.recording([i], batch["attention_mask"].sum(-1).tolist()):
                completion_logprobs(model, batch)

    def timed(fn, batch_size: int, replay: bool = False, grad: bool = True) -> float:
        t0 = time.perf_counter()
        for start in range(0, len(items), batch_size):
            idx = list(range(start, min(start + batch_size, len(items))))
            batch = make_batch(items, idx, pad, pairs=False)
            context = (prefix.replaying(idx, batch["input_ids"].shape[1], "cpu") if replay
                       else nullcontext())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), context, \
                    torch.set_grad_enabled(grad):
                logp, n = fn(model, batch)
                if grad:
                    loss, _ = length_harmonizing_loss(logp, logp.detach() - 0.01, n,
                                                      torch.ones(len(idx)), 0.2)
            if grad:
                loss.backward()
                model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    mb = args.micro_batch
    variants = {
        "before": lambda: timed(full_logits, mb),
        "logits": lambda: timed(completion_logprobs, mb),
        "logits mb1": lambda: timed(completion_logprobs, 1),
        "prefix mb1": lambda: timed(completion_logprobs, 1, replay=True),
        "reference mb1": lambda: timed(completion_logprobs, 1, grad=False),
    }
    variants["prefix mb1"]()  # warm-up
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, run_variant in variants.items():
            times.setdefault(name, []).append(run_variant())
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    for name, t in medians.items():
        base = medians["before"]
        print(json.dumps({"variant": name, "micro_batch": 1 if "mb1" in name else mb,
                          "rows": len(items), "s_per_sample": round(t / len(items), 3),
                          "tokens_per_s": round(n_tokens / t, 1),
                          "speedup": round(base / t, 2)}), flush=True)


if __name__ == "__main__":
    main()
