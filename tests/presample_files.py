"""Hand-written pre-sample outputs (`<run>/presample/*.jsonl`) for training tests, with
lengths counted by the tiny model's tokenizer, as the pre-sampling stage would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from o1pruner.specio import spec_from_dict

SOLUTIONS = [
    "12 + 7 = 19. \\boxed{{{a}}}",
    "Let me think step by step. First, 12 + 7 = 19. The answer is \\boxed{{{a}}}.",
    "Let me think step by step. First, 12 + 7 = 19. Then 19 - 5 = 14. Wait, let me "
    "double-check: 3 times 5 is 15, plus 2 is 17. So the answer is \\boxed{{{a}}}.",
    "Each box holds 6 pens. 6 * 4 = 24. Wait, let me double-check. 6 * 4 = 24. Let me "
    "think step by step again. First, 6 + 6 = 12, 12 + 12 = 24. Final answer: \\boxed{{{a}}}",
]


def write_presample(run_root: Path, tokenizer: Any, n_problems: int = 6, k: int = 4,
                    with_ids: bool = False) -> Path:
    """Write problems/samples/problem_stats JSONL for n_problems problems x k samples.
    Sample j of problem i is solution j % 4 (longer with j); every third one is wrong.
    `with_ids`: also the prompt and sample token ids, as pre-sampling writes them."""
    out = run_root / "presample"
    out.mkdir(parents=True, exist_ok=True)
    problems, samples, stats = [], [], []
    for i in range(n_problems):
        gold = str(10 + i)
        text = f"Mia has {i + 3} apples and buys {7 + i} more. How many apples now?"
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                               tokenize=False, add_generation_prompt=True)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        problems.append({"problem_id": f"p{i}", "problem": text, "gold": gold,
                         "prompt": prompt, "prompt_tokens": n_prompt})
        if with_ids:
            problems[-1]["prompt_token_ids"] = tokenizer(prompt, add_special_tokens=False)[
                "input_ids"]
        group = []
        for j in range(k):
            correct = (i + j) % 3 != 0
            completion = SOLUTIONS[j % len(SOLUTIONS)].format(a=gold if correct else "99")
            n = len(tokenizer(completion, add_special_tokens=False)["input_ids"]) + 1  # + EOS
            group.append({"problem_id": f"p{i}", "sample_idx": j, "completion": completion,
                          "num_tokens": n, "finish_reason": "stop",
                          "extracted": gold if correct else "99", "correct": correct})
            if with_ids:
                group[-1]["token_ids"] = tokenizer(completion, add_special_tokens=False)[
                    "input_ids"] + [tokenizer.eos_token_id]
        samples += group
        stats.append({"problem_id": f"p{i}", "k": k,
                      "mean_length": sum(s["num_tokens"] for s in group) / k,
                      "mean_accuracy": sum(s["correct"] for s in group) / k})
    for name, rows in (("problems", problems), ("samples", samples), ("problem_stats", stats)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def make_spec(model_dir: Path, root: Path, name: str = "t", k: int = 4, **sections: Any):
    """A RunSpec for the tiny model, run dir <root>/<name>; `sections` override spec
    sections, e.g. train={"method": "sft"}."""
    data: dict[str, Any] = {
        "model": {"name_or_path": str(model_dir)},
        "presample": {"k": k},
        "reward": {"samples_per_problem": 2},
        "train": {"learning_rate": 1e-3, "batch_size": 2, "gradient_accumulation_steps": 1,
                  "max_length": 64, "warmup_ratio": 0.0, "lr_scheduler": "constant",
                  "gradient_checkpointing": False},
        "run": {"name": name, "output_root": str(root), "seed": 1},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return spec_from_dict(data)
