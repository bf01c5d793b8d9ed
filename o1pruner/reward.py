"""The length-harmonizing reward and the choice of training samples (METHOD.md steps 3-4).

    R_LH(x, y) = L_ref(x) / L(y) - 1 + lambda * (A(x, y) - A_ref(x))

L(y) is the sample's full token count (also for samples that training truncates), L_ref and
A_ref are the per-problem means over the K pre-samples (`problem_stats.jsonl`).
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

from o1pruner.errors import DataError, UserError
from o1pruner.files import iter_jsonl
from o1pruner.spec import GRPO_METHODS

logger = logging.getLogger(__name__)

PRESAMPLE_FILES = ("problems.jsonl", "samples.jsonl", "problem_stats.jsonl")

#: The clip of `reward.length: thinking` when reward.reward_clip is null: the published
#: code's [-2, 4]. A thinking part can be one token long (just `</think>`), and L_ref/L - 1
#: then reaches L_ref - 1 (799 against a mean of 800): it would dominate the loss or,
#: standardised, flatten every other reward. Total lengths keep the paper's unclipped reward.
THINKING_REWARD_CLIP = (-2.0, 4.0)


def length_harmonizing_reward(
    L_ref: float, L: float, lam: float, A: float, A_ref: float  # noqa: N803 (paper names)
) -> tuple[float, float, float]:
    """R_LH = L_ref/L - 1 + lam*(A - A_ref), returned with its two terms:
    (reward, length_term, accuracy_term). A zero length counts as one token."""
    length_term = L_ref / max(L, 1) - 1.0
    accuracy_term = lam * (A - A_ref)
    return length_term + accuracy_term, length_term, accuracy_term


def effective_reward_clip(reward: Any) -> tuple[float, float] | None:
    """The clip applied to the rewards: reward.reward_clip, else with `length: thinking`
    THINKING_REWARD_CLIP (a near-empty thinking must not get a reward of L_ref - 1)."""
    if reward.reward_clip is not None:
        return reward.reward_clip
    return THINKING_REWARD_CLIP if reward.length == "thinking" else None


# ---------------------------------------------------------------------------- reading
def _read_rows(path: Path, required: dict[str, type | tuple[type, ...]]) -> list[dict[str, Any]]:
    """Rows of a pre-sample JSONL file, each checked for the required fields and types."""
    rows = []
    try:
        for line_no, row in enumerate(iter_jsonl(path), start=1):
            for name, kind in required.items():
                if name not in row:
                    raise DataError(f"{path}, line {line_no}: missing field {name!r}")
                if not isinstance(row[name], kind) or isinstance(row[name], bool) and kind is int:
                    raise DataError(f"{path}, line {line_no}: field {name!r} should be "
                                    f"{getattr(kind, '__name__', kind)}, got {row[name]!r}")
            rows.append(row)
    except ValueError as err:  # json.JSONDecodeError
        raise DataError(f"{path}: not valid JSON lines ({err})") from None
    return rows


def read_presample(presample_dir: Path) -> tuple[list[dict], dict[str, list[dict]], dict[str, dict]]:
    """(problems, samples by problem id, stats by problem id) from a presample/ folder."""
    missing = [name for name in PRESAMPLE_FILES if not (presample_dir / name).exists()]
    if missing:
        raise UserError(f"pre-sample outputs missing in {presample_dir}: {', '.join(missing)}; "
                        "run `o1pruner presample SPEC` first")
    problems = _read_rows(presample_dir / "problems.jsonl",
                          {"problem_id": (str, int), "prompt": str, "prompt_tokens": int})
    samples = _read_rows(presample_dir / "samples.jsonl", {
        "problem_id": (str, int), "sample_idx": int, "completion": str, "num_tokens": int,
        "finish_reason": str, "correct": bool})
    stats = _read_rows(presample_dir / "problem_stats.jsonl", {
        "problem_id": (str, int), "mean_length": (int, float), "mean_accuracy": (int, float)})
    by_problem: dict[str, list[dict]] = {}
    for s in samples:
        by_problem.setdefault(str(s["problem_id"]), []).append(s)
    for group in by_problem.values():
        group.sort(key=lambda s: s["sample_idx"])
    return problems, by_problem, {str(s["problem_id"]): s for s in stats}


# -------------------------------------------------------------------------- selection
def build_training_set(spec: Any, presample_dir: Path) -> list[dict[str, Any]]:
    """The training rows for spec.train.method, with each sample's reward and its terms.

    - `lh`: m = reward.samples_per_problem samples per problem drawn at random (run.seed),
      rewards clipped (reward_clip; with length thinking [-2, 4] when it is null, see
      THINKING_REWARD_CLIP) and then standardised over the chosen set
      (reward_normalize); with reward.skip_unsolved, problems with no correct pre-sample
      are left out (after the draw, so the other problems' draws stay the same);
    - `sft`: the m shortest correct samples per problem;
    - `dpo`: the m shortest correct samples (chosen), each paired with the longest sample
      of the problem (`rejected`).
    Problems without enough samples (correct ones, for sft/dpo) are skipped and counted.
    """
    if spec.train.method in GRPO_METHODS:
        raise UserError(f"train.method {spec.train.method} trains on-policy on completions it "
                        "samples itself, not on a selection of the pre-samples")
    problems, samples, stats = read_presample(Path(presample_dir))
    if spec.reward.length == "thinking":
        _check_thinking(presample_dir, samples, stats)
    m, method = spec.reward.samples_per_problem, spec.train.method
    rng = random.Random(spec.run.seed)
    rows: list[dict[str, Any]] = []
    skipped = unsolved = 0
    for problem in problems:
        pid = str(problem["problem_id"])
        group, stat = samples.get(pid, []), stats.get(pid)
        if not group or stat is None:
            skipped += 1
            logger.warning("problem %s has no samples or no statistics; skipped", pid)
            continue
        if method == "lh":
            chosen = rng.sample(group, min(m, len(group)))
            rejected = None
            if spec.reward.skip_unsolved and not any(s["correct"] for s in group):
                unsolved += 1
                continue
        else:
            correct = sorted((s for s in group if s["correct"]),
                             key=lambda s: (s["num_tokens"], s["sample_idx"]))
            longest = max(group, key=lambda s: (s["num_tokens"], -s["sample_idx"]))
            chosen = correct[:m]
            rejected = longest
            if len(chosen) < m or (method == "dpo" and longest in chosen):
                skipped += 1
                continue
        for s in chosen:
            rows.append(_row(spec, problem, s, stat, rejected if method == "dpo" else None))
    if skipped:
        logger.info("%s selection: %d of %d problems skipped (%s)", method, skipped,
                    len(problems), "no samples" if method == "lh" else
                    f"fewer than {m} correct samples, or no longer rejected sample")
    if unsolved:
        logger.info("reward.skip_unsolved: %d of %d problems left out (no correct pre-sample)",
                    unsolved, len(problems))
    if not rows:
        hint = ("; every problem is unsolved: set reward.skip_unsolved false, or use easier "
                "problems" if unsolved else "")
        raise UserError(f"no training samples selected from {presample_dir} for method "
                        f"{method} (m={m}); check the pre-samples (are any correct?){hint}")
    clip = effective_reward_clip(spec.reward)
    if clip is not None and spec.reward.reward_clip is None:
        logger.info("reward.length thinking: rewards clipped to [%g, %g] (reward_clip is null; "
                    "a near-empty thinking would get L_ref/L - 1, up to L_ref - 1)", *clip)
    _postprocess_rewards(rows, clip, spec.reward.reward_normalize)
    if method == "lh" and all(r["reward"] == 0 for r in rows):
        logger.warning("every training sample has reward 0 (within each problem all samples "
                       "have the same length and grade, e.g. all cut at max_new_tokens and "
                       "wrong): the PPO loss has no gradient and training will not change "
                       "the model. Raise presample.max_new_tokens or k, or use other problems")
    return rows


LENGTH_FIELDS = {"total": ("num_tokens", "mean_length"),
                 "thinking": ("thinking_tokens", "mean_thinking_tokens")}


def _check_thinking(presample_dir: Path, samples: dict[str, list[dict]],
                    stats: dict[str, dict]) -> None:
    """reward.length thinking needs thinking counts, and some thinking."""
    flat = [x for group in samples.values() for x in group]
    if any("thinking_tokens" not in x for x in flat) or any(
            "mean_thinking_tokens" not in st for st in stats.values()):
        raise UserError(f"reward.length: thinking, but the pre-samples in {presample_dir} have "
                        "no thinking counts (written by an older version); pre-sample again")
    if not any(x["thinking_tokens"] for x in flat):
        raise UserError("reward.length: thinking, but no pre-sample has a thinking part (does "
                        "the model think? see model.thinking); use reward.length: total")


def _row(spec: Any, problem: dict, s: dict, stat: dict, rejected: dict | None) -> dict[str, Any]:
    own, mean = LENGTH_FIELDS[spec.reward.length]
    reward, length_term, accuracy_term = length_harmonizing_reward(
        float(stat[mean]), float(s[own]), spec.reward.lambda_,
        float(s["correct"]), float(stat["mean_accuracy"]))
    max_length = spec.train.max_length
    row = {
        "problem_id": s["problem_id"], "sample_idx": s["sample_idx"],
        "prompt": problem["prompt"], "completion": s["completion"],
        "num_tokens": s["num_tokens"], "finish_reason": s["finish_reason"],
        "correct": s["correct"], "length_term": length_term, "accuracy_term": accuracy_term,
        "reward_raw": reward, "reward": reward,
        "truncated": problem["prompt_tokens"] + s["num_tokens"] > max_length,
    }
    if "prompt_token_ids" in problem and "token_ids" in s:  # the exact sampled tokens
        row.update(prompt_token_ids=problem["prompt_token_ids"], token_ids=s["token_ids"])
    if rejected is not None:
        row["rejected"] = {k: rejected[k] for k in
                           ("sample_idx", "completion", "num_tokens", "finish_reason", "correct",
                            "token_ids") if k in rejected}
        row["truncated"] = row["truncated"] or (
            problem["prompt_tokens"] + rejected["num_tokens"] > max_length)
    return row


def _postprocess_rewards(rows: list[dict], clip: tuple[float, float] | None,
                         normalize: bool) -> None:
    """Clip to [lo, hi], then standardise over `rows` (in place, field `reward`)."""
    values = [r["reward_raw"] for r in rows]
    if clip is not None:
        lo, hi = clip
        values = [min(max(v, lo), hi) for v in values]
    if normalize:
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        if std > 0:
            values = [(v - mean) / std for v in values]
        else:
            values = [v - mean for v in values]
            logger.warning("reward_normalize: all %d rewards are equal (std 0); rewards "
                           "centred only (all zero)", len(values))
    for row, value in zip(rows, values, strict=True):
        row["reward"] = value
