"""What the studio's explorers show: a run's pre-samples problem by problem (lengths,
grades, rewards, the training selection) and its evaluation answers side by side.

Everything is read from the run directory and computed with the pipeline's own code: each
sample's reward with `o1pruner.reward.length_harmonizing_reward` on the same lengths and
statistics training uses, and the selection with `o1pruner.reward.build_training_set`, the
function `o1pruner train` calls. So the explorer shows what training does, not a copy of
its rules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import read_json, read_jsonl
from o1pruner.jobs import RunDir
from o1pruner.models import PYPI_PREFIX
from o1pruner.spec import DatasetRef, RunSpec

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ paths
def localize_spec(spec: RunSpec, base: str | Path) -> RunSpec:
    """The spec with its relative local paths made absolute against `base`, the folder its
    workers run in (the web UI's workspace), so a process with another working directory
    reads the same model, template and data files. Hub ids, `pypi:` models and registry
    names are kept; an `auto` prompt template is fixed to the one the worker picks (from
    the model name as written)."""
    from o1pruner.data import registry
    from o1pruner.prompts import match_template

    base = Path(base)

    def local(value: str | None, must_exist: bool = True) -> str | None:
        if not value or value.startswith(PYPI_PREFIX) or Path(value).expanduser().is_absolute():
            return value
        path = base / Path(value)
        return str(path) if path.exists() or not must_exist else value

    model = spec.model
    template = model.prompt_template
    if template == "auto":
        template = match_template(model.name_or_path).name
    elif template.endswith((".yaml", ".yml")):
        template = local(template) or template
    names = registry()

    def ref(r: DatasetRef) -> DatasetRef:
        return r if r.name in names else r.model_copy(update={"name": local(r.name)})

    return spec.model_copy(update={
        "model": model.model_copy(update={
            "name_or_path": local(model.name_or_path), "prompt_template": template,
            "cache_dir": local(model.cache_dir, must_exist=False)}),
        "data": spec.data.model_copy(update={
            "train": ref(spec.data.train),
            "local_dir": local(spec.data.local_dir, must_exist=False)}),
        "eval": spec.eval.model_copy(update={
            "benchmarks": [ref(b) for b in spec.eval.benchmarks]}),
    })


# ------------------------------------------------------------------------ pre-samples
@dataclass(frozen=True)
class SampleInfo:
    """One pre-sample as training sees it."""

    sample_idx: int
    num_tokens: int
    thinking_tokens: int | None
    answer_tokens: int | None
    finish_reason: str
    extracted: str | None
    correct: bool
    reward_raw: float | None  # R_LH before reward_clip / reward_normalize
    length_term: float | None
    accuracy_term: float | None
    training: str  # "chosen", "rejected" (dpo) or "" (not trained on)
    reward: float | None  # the reward training uses (after clip/normalize); chosen only
    completion: str


@dataclass(frozen=True)
class ProblemSamples:
    """A problem's K pre-samples, shortest first (ties: sample order)."""

    problem_id: str
    problem: str
    gold: str
    prompt: str
    accuracy: float  # A_ref
    mean_length: float  # mean total tokens over the K samples
    samples: list[SampleInfo]

    @property
    def min_length(self) -> int:
        return min((s.num_tokens for s in self.samples), default=0)

    @property
    def max_length(self) -> int:
        return max((s.num_tokens for s in self.samples), default=0)

    @property
    def spread(self) -> float:
        """How many times longer the longest sample is than the shortest."""
        return self.max_length / max(self.min_length, 1)

    @property
    def n_chosen(self) -> int:
        return sum(s.training == "chosen" for s in self.samples)


@dataclass
class PresampleView:
    """A run's pre-samples with rewards and the training selection."""

    problems: list[ProblemSamples]
    method: str
    samples_per_problem: int
    length: str  # reward.length: total or thinking
    lambda_: float
    notes: list[str] = field(default_factory=list)  # where the selection comes from, issues
    #: why training on these samples cannot change the model, with the fix (or None):
    #: o1pruner.analysis.learning_warning, what the training stage warns about
    warning: str | None = None

    def summary(self) -> str:
        n = sum(len(p.samples) for p in self.problems)
        chosen = sum(p.n_chosen for p in self.problems)
        acc = sum(s.correct for p in self.problems for s in p.samples) / max(n, 1)
        mean = sum(s.num_tokens for p in self.problems for s in p.samples) / max(n, 1)
        return (f"{len(self.problems)} problems, {n} samples (accuracy {100 * acc:.1f} %, mean "
                f"{mean:.0f} tokens); training ({self.method}, m={self.samples_per_problem}, "
                f"lambda={self.lambda_:g}, length: {self.length}) uses {chosen} samples")


def _selection(spec: RunSpec, run: RunDir) -> tuple[dict[tuple[str, int], tuple[str, Any]],
                                                      list[str]]:
    """(problem id, sample idx) -> ("chosen", training reward) or ("rejected", None), from
    build_training_set (the function training calls), and notes."""
    from o1pruner.reward import build_training_set

    try:
        rows = build_training_set(spec, run.root / "presample")
    except UserError as err:
        return {}, [f"no training selection: {err}"]
    picked: dict[tuple[str, int], tuple[str, Any]] = {}
    for row in rows:
        picked[(str(row["problem_id"]), int(row["sample_idx"]))] = ("chosen", row["reward"])
        if "rejected" in row:
            picked.setdefault((str(row["problem_id"]), int(row["rejected"]["sample_idx"])),
                              ("rejected", None))
    notes = [f"selection: {spec.train.method} with this run's spec (reward.*, run.seed), "
             "computed by the training code"]
    recorded = run.root / "train" / "dataset.jsonl"
    if recorded.exists():
        trained = {(str(r["problem_id"]), int(r["sample_idx"])) for r in read_jsonl(recorded)}
        chosen = {k for k, (kind, _) in picked.items() if kind == "chosen"}
        notes.append("matches train/dataset.jsonl (what was trained on)" if trained == chosen
                     else f"differs from train/dataset.jsonl ({len(trained ^ chosen)} samples): "
                     "the spec or the pre-samples changed after training")
    return picked, notes


def load_presample_view(spec: RunSpec, run_root: str | Path) -> PresampleView:
    """The run's pre-samples per problem with each sample's reward and whether training
    uses it. `spec` is the run's spec (its reward, train and seed settings)."""
    from o1pruner.analysis import learning_warning, warning_text
    from o1pruner.reward import LENGTH_FIELDS, length_harmonizing_reward, read_presample

    run = RunDir(Path(run_root))
    problems, samples, stats = read_presample(run.root / "presample")
    picked, notes = _selection(spec, run)
    own, mean_field = LENGTH_FIELDS[spec.reward.length]
    out = []
    for problem in problems:
        pid = str(problem["problem_id"])
        group, stat = samples.get(pid, []), stats.get(pid)
        infos = []
        for s in group:
            reward = terms = None
            if stat is not None and own in s and mean_field in stat:
                reward, *terms = length_harmonizing_reward(
                    float(stat[mean_field]), float(s[own]), spec.reward.lambda_,
                    float(s["correct"]), float(stat["mean_accuracy"]))
            kind, train_reward = picked.get((pid, int(s["sample_idx"])), ("", None))
            infos.append(SampleInfo(
                int(s["sample_idx"]), int(s["num_tokens"]), s.get("thinking_tokens"),
                s.get("answer_tokens"), s["finish_reason"], s.get("extracted"),
                bool(s["correct"]), reward, *(terms or (None, None)), kind, train_reward,
                s["completion"]))
        infos.sort(key=lambda x: (x.num_tokens, x.sample_idx))
        n = max(len(infos), 1)
        out.append(ProblemSamples(
            pid, str(problem.get("problem", "")), str(problem.get("gold", "")),
            problem["prompt"],
            float(stat["mean_accuracy"]) if stat else sum(x.correct for x in infos) / n,
            sum(x.num_tokens for x in infos) / n, infos))
    rewards = [r for kind, r in picked.values() if kind == "chosen"]
    warning = learning_warning(samples, rewards, spec.train.method,
                               spec.presample.max_new_tokens) if picked else None
    return PresampleView(out, spec.train.method, spec.reward.samples_per_problem,
                         spec.reward.length, spec.reward.lambda_, notes,
                         warning_text(warning) if warning else None)


def filter_problems(problems: list[ProblemSamples], min_accuracy: float = 0.0,
                    max_accuracy: float = 1.0, min_spread: float = 1.0) -> list[ProblemSamples]:
    """Problems whose accuracy (A_ref) lies in [min_accuracy, max_accuracy] and whose
    longest sample is at least `min_spread` times its shortest."""
    eps = 1e-9
    return [p for p in problems if min_accuracy - eps <= p.accuracy <= max_accuracy + eps
            and p.spread >= min_spread - eps]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


#: What an answer the grader could not extract reads as (never a raw `None`).
NO_ANSWER = "no answer"
PROBLEM_COLUMNS = ("problem", "accuracy %", "mean tokens", "shortest", "longest", "spread",
                   "trained on", "text")


def answer_text(extracted: str | None) -> str:
    """An extracted answer as shown: the answer, or NO_ANSWER when none was found."""
    return NO_ANSWER if extracted is None or not str(extracted).strip() else str(extracted)


def problem_rows(problems: list[ProblemSamples]) -> list[dict[str, Any]]:
    """One row per problem, for a table (columns PROBLEM_COLUMNS; accuracy in %)."""
    return [{"problem": p.problem_id, "accuracy %": round(100 * p.accuracy, 1),
             "mean tokens": round(p.mean_length, 1), "shortest": p.min_length,
             "longest": p.max_length, "spread": round(p.spread, 2),
             "trained on": p.n_chosen, "text": " ".join(p.problem.split())[:120]}
            for p in problems]


def sample_rows(problem: ProblemSamples) -> list[dict[str, Any]]:
    """One row per sample of a problem, shortest first, for a table (thinking and answer
    tokens only when the samples think)."""
    thinks = any(s.thinking_tokens for s in problem.samples)
    return [{"sample": s.sample_idx, "tokens": s.num_tokens,
             **({"thinking": s.thinking_tokens, "answer": s.answer_tokens} if thinks else {}),
             "finish": s.finish_reason, "extracted": answer_text(s.extracted),
             "grade": "right" if s.correct else "wrong", "reward": _round(s.reward_raw),
             "training": s.training, "train reward": _round(s.reward)}
            for s in problem.samples]


# ------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Answer:
    """A method's answer(s) to one benchmark problem (n samples, usually one)."""

    accuracy: float  # share of samples graded right (1 or 0 for one sample)
    tokens: float  # mean generated tokens
    thinking_tokens: float | None
    answer_tokens: float | None
    extracted: str | None  # of the first sample
    finish_reason: str  # of the first sample
    texts: list[str]  # each sample's completion


@dataclass(frozen=True)
class AnswerPair:
    """The answers of two methods (left: usually base; right: usually trained)."""

    problem_id: str
    problem: str
    gold: str
    left: Answer | None
    right: Answer | None

    @property
    def outcome(self) -> str:
        """regression (left more often right), gain, same, or missing (one side has no
        answer yet)."""
        if self.left is None or self.right is None:
            return "missing"
        if self.left.accuracy > self.right.accuracy:
            return "regression"
        if self.left.accuracy < self.right.accuracy:
            return "gain"
        return "same"

    @property
    def cut(self) -> float | None:
        """Tokens saved by the right method (left minus right; negative: longer)."""
        if self.left is None or self.right is None:
            return None
        return self.left.tokens - self.right.tokens


EVAL_FILTERS = ("all", "regressions", "gains", "length cuts")


def eval_dir(run_root: str | Path) -> Path:
    """Where a run's (or an ad-hoc evaluation's) per-method folders are."""
    return RunDir(Path(run_root)).results_path.parent


def eval_methods(run_root: str | Path) -> dict[str, list[str]]:
    """benchmark -> the methods with generations for it (results.json's order first)."""
    folder = eval_dir(run_root)
    results = read_json(folder / "results.json", {}) or {}
    order = list(results.get("methods") or [])
    found: dict[str, list[str]] = {}
    if folder.is_dir():
        for gen in sorted(folder.glob("*/*/generations.jsonl")):
            method, bench = gen.parent.parent.name, gen.parent.name
            if method != "adhoc":
                found.setdefault(bench, []).append(method)
    rank = {m: i for i, m in enumerate(order)}
    return {b: sorted(ms, key=lambda m: (rank.get(m, len(rank)), m))
            for b, ms in found.items()}


def _answers(path: Path) -> tuple[dict[str, Answer], dict[str, dict[str, Any]]]:
    """Answers by problem id (in file order), and each problem's first record."""
    records: dict[str, dict[int, dict[str, Any]]] = {}
    for r in read_jsonl(path):
        records.setdefault(str(r["problem_id"]), {}).setdefault(int(r.get("sample_idx", 0)), r)
    answers, first = {}, {}
    for pid, by_idx in records.items():
        rs = [by_idx[i] for i in sorted(by_idx)]
        n = len(rs)

        def mean(key: str, rs: list[dict[str, Any]] = rs, n: int = n) -> float | None:
            vals = [r[key] for r in rs if r.get(key) is not None]
            return sum(vals) / n if len(vals) == n else None

        answers[pid] = Answer(sum(bool(r["correct"]) for r in rs) / n,
                              sum(r["num_tokens"] for r in rs) / n, mean("thinking_tokens"),
                              mean("answer_tokens"), rs[0].get("extracted"),
                              rs[0].get("finish_reason", ""), [r["completion"] for r in rs])
        first[pid] = rs[0]
    return answers, first


def load_pairs(run_root: str | Path, benchmark: str, left: str = "base",
               right: str = "trained", problems: dict[str, str] | None = None
               ) -> list[AnswerPair]:
    """Per problem of `benchmark`, the answers of methods `left` and `right`, in the left
    method's order (then problems only the right one has). `problems`: id -> problem text
    (default: the prompt the model was given)."""
    folder = eval_dir(run_root)
    paths = [folder / m / benchmark / "generations.jsonl" for m in (left, right)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"no generations at {', '.join(missing)}; evaluate the run first")
    (lefts, lfirst), (rights, rfirst) = _answers(paths[0]), _answers(paths[1])
    pairs = []
    for pid in [*lfirst, *(p for p in rfirst if p not in lfirst)]:
        rec = lfirst.get(pid) or rfirst[pid]
        text = (problems or {}).get(pid) or rec.get("prompt", "")
        pairs.append(AnswerPair(pid, text, str(rec.get("gold", "")), lefts.get(pid),
                                rights.get(pid)))
    return pairs


def filter_pairs(pairs: list[AnswerPair], which: str = "all") -> list[AnswerPair]:
    """`all`; `regressions` (left right, right wrong); `gains` (left wrong, right right);
    `length cuts` (answers the right method shortened, largest cut first)."""
    if which == "all":
        return list(pairs)
    if which == "regressions":
        return [p for p in pairs if p.outcome == "regression"]
    if which == "gains":
        return [p for p in pairs if p.outcome == "gain"]
    if which == "length cuts":
        cut = [p for p in pairs if p.cut is not None and p.cut > 0]
        return sorted(cut, key=lambda p: -(p.cut or 0))
    raise ValueError(f"filter {which!r}: expected one of {', '.join(EVAL_FILTERS)}")


def filter_counts(pairs: list[AnswerPair]) -> dict[str, int]:
    return {which: len(filter_pairs(pairs, which)) for which in EVAL_FILTERS}


def _grade(a: Answer | None) -> str:
    if a is None:
        return "-"
    if len(a.texts) == 1:
        return "right" if a.accuracy == 1 else "wrong"
    return f"{100 * a.accuracy:.0f} %"


def pair_columns(left: str = "base", right: str = "trained") -> list[str]:
    """The columns of `pair_rows` (also those of an empty table)."""
    return ["problem", "gold", left, f"{left} tokens", right, f"{right} tokens", "cut",
            "cut %", "outcome"]


def pair_rows(pairs: list[AnswerPair], left: str = "base", right: str = "trained"
              ) -> list[dict[str, Any]]:
    """One row per problem, for a table (columns `pair_columns`)."""
    rows = []
    for p in pairs:
        cut = p.cut
        pct = None if cut is None or not p.left or not p.left.tokens else \
            round(100 * cut / p.left.tokens, 1)
        rows.append({"problem": p.problem_id, "gold": p.gold,
                     f"{left}": _grade(p.left),
                     f"{left} tokens": None if p.left is None else round(p.left.tokens, 1),
                     f"{right}": _grade(p.right),
                     f"{right} tokens": None if p.right is None else round(p.right.tokens, 1),
                     "cut": None if cut is None else round(cut, 1), "cut %": pct,
                     "outcome": p.outcome})
    return rows


def benchmark_problems(spec: RunSpec, run_root: str | Path, benchmark: str) -> dict[str, str]:
    """id -> problem text of an evaluated benchmark (from the data set as the evaluation
    loaded it); {} when it cannot be loaded (the prompts are shown instead)."""
    from o1pruner.data import load_problems

    results = read_json(eval_dir(run_root) / "results.json", {}) or {}
    name = ((results.get("benchmarks") or {}).get(benchmark) or {}).get("name", benchmark)
    ref = next((b for b in spec.eval.benchmarks  # the spec may have been localized
                if b.name == name or b.name.endswith(f"/{name}")), DatasetRef(name=name))
    try:
        found = load_problems(ref, spec.data.local_dir, spec.data.eval_limit,
                              spec.data.shuffle_seed)
    except Exception as err:  # noqa: BLE001 - only the display falls back to the prompts
        logger.info("problems of %s not loaded (%s); showing prompts", benchmark, err)
        return {}
    return {p.id: p.problem for p in found}
