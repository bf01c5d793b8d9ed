"""What this machine means for the Build tab: without a GPU the form opens on the CPU
quickstart (the spec's defaults are the paper's recipe, days of work on a CPU), and every
Start says first how long it will take here (o1pruner.estimate) and asks before a long one.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from o1pruner.estimate import duration_text, estimate_run
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)

#: A Start estimated over this (or, without a GPU, with no estimate) asks first.
LONG_RUN_S = 3 * 3600
#: The estimate's phase of each single-stage command.
STAGE_PHASES = {"presample": "pre-sample", "train": "training", "eval": "evaluation"}


@functools.cache
def has_gpu() -> bool:
    """torch.cuda.is_available(), once per process."""
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class TimeNote:
    """What Start says first: the estimate (or why there is none), and whether it asks."""

    line: str
    seconds: float | None  # None: no estimate
    short: str  # for the button: 'about 4.5 h', or 'no estimate'

    @property
    def sentence(self) -> str:
        """The line as a sentence of its own."""
        return self.line[:1].upper() + self.line[1:] + "."

    @property
    def asks(self) -> bool:
        """Over LONG_RUN_S, or no estimate on a machine without a GPU."""
        return (self.seconds > LONG_RUN_S) if self.seconds is not None else not has_gpu()


def no_estimate_reason(spec: RunSpec) -> str:
    if has_gpu():
        return "no time estimate on a GPU (the estimate covers CPUs only)"
    if spec.data.train_limit is None:
        return ("no time estimate: data.train_limit is empty (the whole data set); on this "
                "machine without a GPU that can take days")
    return (f"no time estimate: the size of {spec.model.name_or_path} is not known here "
            "(a hub model not downloaded yet); on this machine without a GPU a large model "
            "can take days")


def time_note(spec: RunSpec, stage: str = "run", workspace_root: Path | None = None
              ) -> TimeNote:
    """The estimated time of `stage` of `spec` on this machine. Relative model paths are
    read in `workspace_root` (the worker's folder)."""
    if workspace_root is not None:
        from o1pruner.explore import localize_spec

        spec = localize_spec(spec, workspace_root)
    try:
        est = estimate_run(spec)
    except Exception as err:  # noqa: BLE001 - an estimate never blocks a Start
        logger.warning("no time estimate: %s", err)
        est = None
    if est is None:
        return TimeNote(no_estimate_reason(spec), None, "no estimate")
    phase = None if stage == "run" else STAGE_PHASES[stage]
    if phase is not None and phase not in est.phases:  # an on-policy run has no pre-sampling
        return TimeNote(f"no estimate of the {phase} stage: a {spec.train.method} run has "
                        "none (it samples while it trains)", None, "no estimate")
    seconds = est.seconds(phase)
    return TimeNote(est.line(phase), seconds, f"about {duration_text(seconds)}")
