"""`o1pruner run SPEC.yaml`: pre-sample -> reward + reference pass + train -> evaluate base
and trained -> report, in one run directory.

Each stage runs as its own child process, the same `o1pruner <stage>` command a user would
type, so an engine's memory is released before the next stage starts. Every stage skips
work whose outputs are complete, so re-running an interrupted run continues where it stopped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from o1pruner.errors import UserError
from o1pruner.jobs import tail_lines
from o1pruner.runs import PARENT_ENV, RunDir, init_run_dir, read_json, stage_logging
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)

PIPELINE_STAGES = ("presample", "train", "eval", "analyze")


class StageFailed(UserError):
    """A stage's worker exited non-zero; the message names the stage, exit code and log tail."""


def _stage_argv(stage: str, run: RunDir) -> list[str]:
    if stage == "analyze":
        return ["analyze", str(run.root)]
    return [stage, str(run.spec_path)]


def run_stage(stage: str, run: RunDir) -> float:
    """Run one stage as a child process; return its wall time, or raise StageFailed."""
    cmd = [sys.executable, "-m", "o1pruner.cli", *_stage_argv(stage, run)]
    logger.info("stage %s: %s", stage, " ".join(cmd))
    run.emit("stage", stage, state="started")
    start = time.time()
    code = subprocess.call(cmd, env={**os.environ, PARENT_ENV: str(os.getpid())})
    wall = time.time() - start
    if code != 0:
        run.emit("stage", stage, state="failed", exit_code=code, wall_s=round(wall, 1))
        tail = "\n".join(tail_lines(run.log_path(stage), lines=20))
        raise StageFailed(f"stage {stage} failed with exit code {code} after {wall:.0f} s; "
                          f"last lines of {run.log_path(stage)}:\n{tail}")
    run.emit("stage", stage, state="done", wall_s=round(wall, 1))
    logger.info("stage %s done in %.0f s", stage, wall)
    return wall


def headline(run: RunDir) -> str:
    """The final lines: tokens and accuracy before/after, AES, and where the report is."""
    results = read_json(run.root / "eval" / "results.json")
    if not results:
        return f"no evaluation results in {run.root / 'eval'}"
    from o1pruner.evaluation import headline_lines

    return "\n".join(headline_lines(results) + [f"report: {run.root / 'report' / 'report.md'}"])


def run_pipeline(spec: RunSpec) -> str:
    """Run every stage of `spec` in order and return the headline text."""
    run = init_run_dir(spec)
    walls: dict[str, float] = {}
    with stage_logging(run, "run"):
        run.update_job(command="run", state="running", stage="run", pid=os.getpid(),
                       pgid=os.getpgid(0), started_at=time.time())
        try:
            for stage in PIPELINE_STAGES:
                run.update_job(stage=stage)
                walls[stage] = run_stage(stage, run)
        except BaseException as err:
            state = "stopped" if isinstance(err, KeyboardInterrupt) else "failed"
            run.update_job(state=state, error=str(err)[:2000], finished_at=time.time())
            raise
        run.update_job(state="done", stage="run", finished_at=time.time(),
                       stage_wall_s={k: round(v, 1) for k, v in walls.items()})
        text = headline(run)
        timing = ", ".join(f"{k} {v / 60:.1f} min" for k, v in walls.items())
        text += f"\nwall time: {sum(walls.values()) / 60:.1f} min ({timing})"
        logger.info("run %s finished:\n%s", run.root, text)
    return text
