"""Grade all 5,276 labelled GSM8K model solutions in both grading modes and compare with
OpenAI's `is_correct` labels.

Data: `../shared/data/gsm8k/example_model_solutions.jsonl` (1,319 problems x 4 models:
6b/175b finetuning/verification, each {is_correct, solution}); env `O1PRUNER_DATA_DIR`
overrides the data directory. Gold = the number after the final "A:" of `ground_truth`.
It goes through `grade_file`, the same code path as `o1pruner grade --mode`.

These solutions end with "A: N", the answer format of the prompt they were sampled with.
`standard` (math-verify's extraction) reads the raw text. `strict` reads only `\\boxed{}`
and GSM8K's own `#### N`, so for it the final "A: N" line is written as "#### N" (the
GSM8K format; the answer itself is not touched): the figure then measures strict's
extraction of `####` and the equivalence check, on the same 5,276 items.

Command:  .venv/bin/python benchmarks/grade_gsm8k.py --workers 2 [--mode strict|standard|both]
          [--show-disagreements]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from o1pruner.grading import GRADING_MODES, grade_file  # noqa: E402

MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
FINAL_A = re.compile(r"^A:[ \t]*(.*)$", re.MULTILINE)


def data_file() -> Path:
    root = Path(os.environ.get("O1PRUNER_DATA_DIR") or REPO.parent / "shared" / "data")
    return root / "gsm8k" / "example_model_solutions.jsonl"


def as_hashes(solution: str) -> str:
    """The last "A: N" line written as GSM8K's "#### N"."""
    found = list(FINAL_A.finditer(solution))
    if not found:
        return solution
    last = found[-1]
    return solution[:last.start()] + "#### " + last.group(1) + solution[last.end():]


def build_rows(path: Path, mode: str) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        gold = FINAL_A.findall(item["ground_truth"])[-1].strip()
        for model in MODELS:
            sol = item[model]
            pred = as_hashes(sol["solution"]) if mode == "strict" else sol["solution"]
            rows.append({"model": model, "pred": pred, "gold": gold,
                         "label": bool(sol["is_correct"])})
    return rows


def run(path: Path, mode: str, workers: int | None, timeout: float,
        show: bool) -> float:
    rows = build_rows(path, mode)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        start = time.perf_counter()
        summary = grade_file(src, dst, workers=workers, timeout=timeout, mode=mode)
        seconds = time.perf_counter() - start
        graded = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    wrong = [g for g in graded if g["correct"] != g["label"]]
    agreement = 1 - len(wrong) / len(graded)
    print(f"[{mode}] {summary.describe()}")
    print(f"[{mode}] n = {len(graded)}  labelled correct = {sum(g['label'] for g in graded)}  "
          f"graded correct = {summary.n_correct}  without an answer = {summary.n_no_answer}")
    print(f"[{mode}] agreement with is_correct = {100 * agreement:.2f}% ({len(wrong)} "
          f"disagreements); wall {seconds:.1f} s, {len(graded) / seconds:.0f} items/s")
    if show:
        for g in wrong[:20]:
            tail = g["pred"].strip()[-160:].replace("\n", " | ")
            print(f"- {g['model']} gold={g['gold']!r} extracted={g['extracted']!r} "
                  f"label={g['label']} graded={g['correct']}\n    ...{tail}")
    return agreement


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="Grading processes.")
    parser.add_argument("--timeout", type=float, default=5.0, help="Seconds per item.")
    parser.add_argument("--mode", choices=[*GRADING_MODES, "both"], default="both")
    parser.add_argument("--show-disagreements", action="store_true",
                        help="Print up to 20 items where grading and the label differ.")
    args = parser.parse_args()

    path = data_file()
    if not path.exists():
        print(f"data file not found: {path} (set O1PRUNER_DATA_DIR)")
        return 1
    modes = GRADING_MODES if args.mode == "both" else (args.mode,)
    agreements = [run(path, m, args.workers, args.timeout, args.show_disagreements)
                  for m in modes]
    return 0 if min(agreements) >= 0.995 else 1


if __name__ == "__main__":
    sys.exit(main())
