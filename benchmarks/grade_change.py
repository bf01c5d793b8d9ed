"""How many pre-samples change grade when a run's samples are graded again in `strict` and
`standard` mode, against the grades they were written with (e.g. by the grader before
version 2, which also took "the answer is X" phrases and short bare answers).

Reads `<run>/presample/samples.jsonl` and `problems.jsonl` (gold answers), grades every
sample's completion again (samples that hit the token limit count as truncated) and prints
a table per mode: right before and after, right only before, right only after, wrong in
both; then a few examples of each change.

Command:  .venv/bin/python benchmarks/grade_change.py RUN_DIR [--examples 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from o1pruner.files import read_jsonl  # noqa: E402
from o1pruner.grading import GRADING_MODES, grade_many  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--examples", type=int, default=2, help="Examples per change shown.")
    args = parser.parse_args()
    out = args.run_dir / "presample"
    gold = {p["problem_id"]: p["gold"] for p in read_jsonl(out / "problems.jsonl")}
    samples = read_jsonl(out / "samples.jsonl")
    if not samples:
        print(f"no samples in {out}")
        return 1
    texts = [s["completion"] for s in samples]
    golds = [gold[s["problem_id"]] for s in samples]
    cut = [s["finish_reason"] == "length" for s in samples]
    before = [bool(s["correct"]) for s in samples]
    print(f"{len(samples)} samples of {len(gold)} problems in {out}; "
          f"{sum(cut)} hit the token limit; right as written: {sum(before)}")
    print()
    print("| mode | right before and after | right only before | right only after | "
          "wrong in both | changed | accuracy before -> after |")
    print("|---|---|---|---|---|---|---|")
    changes = {}
    for mode in GRADING_MODES:
        after = [g.correct for g in grade_many(texts, golds, mode=mode, truncated=cut)]
        pairs = list(zip(before, after, strict=True))
        both, lost = pairs.count((True, True)), pairs.count((True, False))
        gained, neither = pairs.count((False, True)), pairs.count((False, False))
        n = len(pairs)
        print(f"| {mode} | {both} | {lost} | {gained} | {neither} | {lost + gained} "
              f"({100 * (lost + gained) / n:.1f}%) | {100 * sum(before) / n:.1f}% -> "
              f"{100 * sum(after) / n:.1f}% |")
        changes[mode] = [(i, b, a) for i, (b, a) in enumerate(pairs) if b != a]
    for mode, changed in changes.items():
        for i, b, _ in changed[:args.examples]:
            s = samples[i]
            tail = s["completion"].strip()[-200:].replace("\n", " | ")
            print(f"\n[{mode}] {'right -> wrong' if b else 'wrong -> right'} "
                  f"(gold {golds[i]!r}, {s['finish_reason']}, old extracted "
                  f"{s.get('extracted')!r}):\n  ...{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
