"""The README.md model card of an exported model: what it is, how it was trained (the run's
spec in short), and how it did against its base model (the run's eval/results.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from o1pruner.files import read_json

METHODS = {
    "lh": "length-harmonizing fine-tuning (O1-Pruner: PPO-clip on the length-harmonizing "
          "reward over pre-sampled solutions)",
    "sft": "supervised fine-tuning on the shortest correct pre-sampled solutions (a baseline "
           "of O1-Pruner)",
    "dpo": "DPO with the shortest correct pre-sample as chosen and the longest as rejected "
           "(a baseline of O1-Pruner)",
    "grpo_length": "on-policy GRPO (TRL) on accuracy plus a group-relative length reward for "
                   "correct answers (Kimi k1.5's length penalty)",
    "thinkprune": "on-policy GRPO (TRL) on accuracy under a token cap lowered over rounds "
                  "(ThinkPrune)",
}
# Spec fields left out of the card: local paths of the machine that trained it.
PRIVATE = {"model": {"cache_dir"}, "data": {"local_dir"}, "run": {"output_root"}}


def model_card(plan: Any) -> str:
    """Markdown with a YAML header, for the hub and for people."""
    spec, run = plan.spec, plan.run
    run_spec = plan.run_spec or spec
    base = _public(run_spec.model.name_or_path)
    summary = read_json(plan.trained_run.root / "train" / "summary.json", {}) or {}
    header = {"library_name": "peft" if plan.adapter else "transformers",
              "pipeline_tag": "text-generation",
              "tags": ["o1pruner", "length-harmonizing", "reasoning", spec.train.method]}
    if _hub_id(base):
        header["base_model"] = base
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# {plan.out.name}", "",
             f"`{base}` fine-tuned with {METHODS[spec.train.method]}, to think shorter "
             "without getting worse. Trained and exported with o1pruner.", "",
             f"- run: `{run.root.name}`, exported from `{plan.label}`"
             + (f" (step {plan.step})" if plan.step is not None else "")
             + (f", round {plan.round} of {plan.rounds} (each round trained from the "
                "previous round's model)" if plan.rounds > 1 else "")
             + (f", {summary['steps']} optimizer steps in all" if summary.get("steps") else ""),
             f"- weights: {plan.dtype}"
             + (", a LoRA adapter (peft) for the base model" if plan.adapter else
                ", a standalone model (no custom code, no adapter)"), ""]
    lines += ["## Training", "", *_training_table(spec, summary), ""]
    lines += ["## Evaluation", "", *_evaluation(plan), ""]
    lines += ["## Use", "", *_usage(plan), ""]
    kept = _public(run_spec.model_dump(mode="json", by_alias=True, exclude=PRIVATE))
    lines += ["<details><summary>The run's spec (o1pruner)</summary>", "", "```yaml",
              yaml.safe_dump(kept, sort_keys=False, allow_unicode=True).strip(), "```", "",
              "</details>", ""]
    return "\n".join(lines)


def _public(value: Any) -> Any:
    """`value` with absolute local paths cut to their last part: the card may be pushed to
    the hub, and the training machine's folders are nobody's business there."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public(v) for v in value]
    if isinstance(value, str) and value.startswith(("/", "~")):
        return f"{Path(value).name} (a local folder)"
    return value


def _hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def _training_table(spec: Any, summary: dict[str, Any]) -> list[str]:
    train, reward = spec.train, spec.reward
    rows = [("method", train.method), ("fine-tuning", train.finetuning),
            ("training data", spec.data.train.name),
            ("pre-samples per problem (K)", spec.presample.k),
            ("samples trained per problem (m)", reward.samples_per_problem)]
    if train.method == "lh":
        rows += [("lambda (accuracy weight)", reward.lambda_),
                 ("length measured", reward.length), ("PPO clip epsilon", train.epsilon)]
    if train.method == "dpo":
        rows.append(("DPO beta", train.dpo_beta))
    if train.method in ("grpo_length", "thinkprune"):
        rows += [("completions per problem (G)", train.grpo_num_generations),
                 ("token limit", summary.get("token_limit", train.grpo_max_completion_length))]
    if train.finetuning == "lora":
        rows.append(("LoRA rank / alpha / target", f"{train.lora_rank} / {train.lora_alpha} "
                     f"/ {', '.join(train.lora_target)}"))
    rows += [("learning rate", f"{train.learning_rate:g} ({train.lr_scheduler})"),
             ("epochs", train.epochs),
             ("effective batch", f"{train.batch_size} x {train.gradient_accumulation_steps} "
                                 f"x {summary.get('world_size', train.devices)} processes"),
             ("max length", train.max_length),
             ("precision", _precision(train.precision, summary.get("precision")))]
    for key, label in (("samples", "training samples"), ("steps", "optimizer steps"),
                       ("train_s", "training time (s)")):
        if summary.get(key) is not None:
            rows.append((label, summary[key]))
    return ["| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _evaluation(plan: Any) -> list[str]:
    from o1pruner.rounds import round_label

    results = read_json(plan.run.root / "eval" / "results.json") or {}
    # the evaluated label of the exported round's model: its last round is `trained`
    method = "trained" if plan.round == results.get("rounds", 1) else round_label(plan.round)
    final = str(plan.source.parent / "final" if plan.step is not None else plan.source)
    final = str(Path(final).relative_to(plan.run.root))
    if method not in results.get("metrics", {}):
        return [f"No evaluation results of this model (`{final}`) in this run "
                f"(eval/results.json). Evaluate it with "
                f"`o1pruner eval {plan.run.root.name}/spec.yaml`."]
    lines = []
    if plan.step is not None:
        lines += [f"These results are those of the final model (`{final}`), not of the "
                  f"exported `{plan.label}`.", ""]
    lines += ["Greedy decoding, base model vs trained model on the same problems; changes "
              "with 95% paired bootstrap intervals over problems"
              + (f" (`{method}` in the run's eval/results.json)." if plan.rounds > 1 else "."),
              "",
              "| benchmark | n | accuracy base | accuracy trained | change (points) "
              "| mean tokens base | mean tokens trained | change (% tokens) |",
              "|---|---|---|---|---|---|---|---|"]
    base, trained = results["metrics"]["base"], results["metrics"][method]
    comparison = results.get("comparison", {}).get(method, {})
    for bench in [*trained, "AVG"]:
        b = results["averages"]["base"] if bench == "AVG" else base.get(bench)
        t = results["averages"][method] if bench == "AVG" else trained[bench]
        if not b:
            continue
        ci = (comparison.get(bench) or {}).get("interval") or {}
        lines.append(f"| {bench} | {t.get('n', '')} | {_pct(b['accuracy'])} | "
                     f"{_pct(t['accuracy'])} | {_ci(ci, 'accuracy_points', '')} | "
                     f"{_num(b['mean_tokens'])} | {_num(t['mean_tokens'])} | "
                     f"{_ci(ci, 'length_pct', '%')} |")
    return lines


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _precision(asked: str, used: str | None) -> str:
    """train.precision as the run trained: `fp32 (auto)` where auto resolved on its machine."""
    if asked == "auto":
        return f"{used} (auto)" if used else "auto (resolved value not recorded)"
    return asked


def _ci(summary: dict[str, Any], key: str, unit: str) -> str:
    if summary.get(key) is None:
        return ""
    text = f"{summary[key]:+.1f}{unit}"
    ci = summary.get(f"{key}_ci")
    if ci:
        text += f" [{ci[0]:+.1f}, {ci[1]:+.1f}]"
    significant = summary.get("accuracy_significant" if key == "accuracy_points"
                              else "length_significant")
    return text + (" (ns)" if significant is False else "")


def _usage(plan: Any) -> list[str]:
    name = plan.out.name
    if plan.adapter:
        return ["```python", "from peft import AutoPeftModelForCausalLM",
                "from transformers import AutoTokenizer", "",
                f'model = AutoPeftModelForCausalLM.from_pretrained("{name}")',
                f'tokenizer = AutoTokenizer.from_pretrained("{name}")', "```", "",
                f"The adapter needs its base model, `{_public(plan.spec.model.name_or_path)}` "
                "(adapter_config.json: base_model_name_or_path). vLLM serves it as a LoRA "
                f"module: `vllm serve BASE --enable-lora --lora-modules {name}=PATH`."]
    return ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'model = AutoModelForCausalLM.from_pretrained("{name}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
            "messages = [{\"role\": \"user\", \"content\": \"What is 12 + 7?\"}]",
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, "
            "return_tensors=\"pt\", return_dict=True)",
            "output = model.generate(**inputs, max_new_tokens=2048)",
            "print(tokenizer.decode(output[0][inputs[\"input_ids\"].shape[1]:]))", "```", "",
            f"vLLM: `vllm serve {name}` (or `vllm.LLM(model=\"{name}\")`)."]
