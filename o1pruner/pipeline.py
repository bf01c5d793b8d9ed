"""`o1pruner run SPEC.yaml`: pre-sample -> reward + reference pass + train -> evaluate base
and trained -> report, in one run directory. With `run.rounds` N > 1, rounds 2..N
pre-sample and train again, each from the previous round's model, in
`<run>/rounds/round-r/` (o1pruner/rounds.py), before the evaluation. The on-policy
methods (`train.method: grpo_length | thinkprune`) sample while they train: their runs have
no pre-sampling and no disharmony analysis of pre-samples (both recorded as skipped).

Each stage runs as its own child process, the same `o1pruner <stage>` command a user would
type, so an engine's memory is released before the next stage starts. The pipeline holds
the run's lock and passes it to each stage. A stop (SIGTERM or Ctrl-C, to this process, its
group or the stage) lets the running stage finish its step and save; then the run records
`stopped` and ends. Every stage skips work whose outputs are complete, so re-running an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import logging
import sys
import time

from o1pruner.errors import UserError
from o1pruner.files import read_json
from o1pruner.jobs import (
    STOPPED_EXIT_CODE,
    JobStopped,
    RunDir,
    RunLock,
    job_process,
    run_child,
    run_dir_for,
    tail_lines,
)
from o1pruner.spec import GRPO_METHODS, RunSpec

logger = logging.getLogger(__name__)

PIPELINE_STAGES = ("presample", "train", "eval", "analyze")
PRE_SAMPLE_STAGES = ("presample", "analyze")  # what an on-policy method has no use for


def stages_of(spec: RunSpec) -> tuple[str, ...]:
    """The run's stages: without the pre-samples' two for an on-policy method, which
    samples while it trains."""
    if spec.train.method in GRPO_METHODS:
        return tuple(s for s in PIPELINE_STAGES if s not in PRE_SAMPLE_STAGES)
    return PIPELINE_STAGES


def _skip_pre_samples(spec: RunSpec, run: RunDir) -> None:
    """Record why an on-policy run has no pre-sampling or analysis (a `stages` event:
    `o1pruner status` and the Runs tab's status line say it)."""
    run.emit("stages", "run", stages=list(stages_of(spec)), skipped=list(PRE_SAMPLE_STAGES),
             reason=f"train.method {spec.train.method} samples while it trains")


class StageFailed(UserError):
    """A stage's process failed; the message is the stage's own (or its log tail)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _stage_argv(stage: str, run: RunDir) -> list[str]:
    if stage == "analyze":
        return ["analyze", str(run.root)]
    return [stage, str(run.spec_path)]


def run_stage(stage: str, run: RunDir, lock: RunLock | None = None,
              label: str | None = None) -> float:
    """Run one stage as a child process of this job; return its wall time. Raises
    JobStopped if it was stopped (after it saved), StageFailed if it failed. `label`: the
    stage's name in messages (a later round's stage runs in that round's directory)."""
    cmd = [sys.executable, "-m", "o1pruner.cli", *_stage_argv(stage, run)]
    name = label or stage
    logger.info("stage %s: %s", name, " ".join(cmd))
    run.emit("stage", stage, state="started")
    start = time.time()
    code, asked = run_child(cmd, lock)
    wall = time.time() - start
    if code == STOPPED_EXIT_CODE or (asked and code != 0):
        run.emit("stage", stage, state="stopped", wall_s=round(wall, 1))
        raise JobStopped(f"stage {name} stopped after {wall:.0f} s")
    if code != 0:
        run.emit("stage", stage, state="failed", exit_code=code, wall_s=round(wall, 1))
        record = (run.read_job().get("stages") or {}).get(stage) or {}
        if record.get("state") == "failed" and record.get("error"):
            raise StageFailed(f"stage {name} failed: {record['error']}", code)
        tail = "\n".join(tail_lines(run.log_path(stage), lines=20))
        raise StageFailed(f"stage {name} failed with exit code {code} after {wall:.0f} s; "
                          f"last lines of {run.log_path(stage)}:\n{tail}", code)
    run.emit("stage", stage, state="done", wall_s=round(wall, 1))
    logger.info("stage %s done in %.0f s", name, wall)
    return wall


def _run_round(spec: RunSpec, run: RunDir, r: int, lock: RunLock) -> dict[str, float]:
    """Pre-sample and train round r (run.rounds) in its own run directory; the stages hold
    that directory's lock, and a stop reaches them as any stage's does."""
    from o1pruner.rounds import prepare_round, round_label

    folder = prepare_round(spec, run, r)
    walls = {}
    for stage in [s for s in stages_of(spec) if s in ("presample", "train")]:  # per round
        name = f"{round_label(r)} {stage}"
        run.update_job(stage=name)
        run.emit("round", stage, round=r, state="started", dir=str(folder.root))
        walls[name] = run_stage(stage, folder, lock, label=name)
    run.emit("round", "train", round=r, state="done", dir=str(folder.root))
    return walls


def headline(run: RunDir) -> str:
    """The final lines: tokens and accuracy before/after, AES, and where the report is."""
    results = read_json(run.root / "eval" / "results.json")
    if not results:
        return f"no evaluation results in {run.root / 'eval'}"
    from o1pruner.evaluation import headline_lines

    return "\n".join(headline_lines(results) + [f"report: {run.root / 'report' / 'report.md'}"])


def run_pipeline(spec: RunSpec) -> str:
    """Run every stage of `spec` in order and return the headline text."""
    run = run_dir_for(spec)
    walls: dict[str, float] = {}
    with job_process(run, "run", spec.to_yaml()) as lock:
        if spec.train.method in GRPO_METHODS:
            _skip_pre_samples(spec, run)
        for stage in stages_of(spec):
            if stage == "eval":
                for r in range(2, spec.run.rounds + 1):
                    walls.update(_run_round(spec, run, r, lock))
            run.update_job(stage=stage)
            walls[stage] = run_stage(stage, run, lock)
        run.update_job(stage="run", stage_wall_s={k: round(v, 1) for k, v in walls.items()})
        text = headline(run)
        timing = ", ".join(f"{k} {v / 60:.1f} min" for k, v in walls.items())
        text += f"\nwall time: {sum(walls.values()) / 60:.1f} min ({timing})"
        logger.info("run %s finished in %.1f min", run.root, sum(walls.values()) / 60)
    return text
