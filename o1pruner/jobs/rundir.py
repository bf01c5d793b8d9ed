"""The run directory: the only contract between stage workers and the web UI.

```
runs/<name>/
  spec.yaml          resolved spec (atomic write)
  job.json           state, leader process (pid, start time, group), stages, stop request
  .lock              held (flock) by the job's processes for as long as they live
  procs/<pid>.json   extra processes of the job outside its process group (training ranks)
  events.jsonl       progress and metrics, one JSON object a line (append-only)
  logs/<stage>.log   stage logs; logs/worker.log: output of a job launched by the web UI
  presample/ train/ eval/ report/
  eval/adhoc/<name>/ an evaluation of another model: a job directory of its own
```
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from o1pruner.files import (
    CorruptFileError,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    load_json,
    locked_file,
    read_jsonl,
)

logger = logging.getLogger(__name__)

ADHOC_DIR = ("eval", "adhoc")  # <run>/eval/adhoc/<name>/: an ad-hoc evaluation's job
EXPORTS_DIR = "exports"  # <run>/exports/<name>/: an export's job


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (or of an ad-hoc evaluation's job directory)."""

    root: Path

    @property
    def spec_path(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def job_path(self) -> Path:
        return self.root / "job.json"

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    @property
    def procs_dir(self) -> Path:
        return self.root / "procs"

    @property
    def events_path(self) -> Path:
        return self.root / "events.jsonl"

    def log_path(self, stage: str) -> Path:
        return self.root / "logs" / f"{stage}.log"

    def stage_dir(self, stage: str) -> Path:
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def adhoc(self, name: str) -> RunDir:
        """The job directory of an ad-hoc evaluation of this run's spec."""
        return RunDir(self.root.joinpath(*ADHOC_DIR, name))

    @property
    def is_adhoc(self) -> bool:
        """True for an ad-hoc evaluation's job directory (<run>/eval/adhoc/<name>)."""
        return self.root.parent.parts[-2:] == ADHOC_DIR

    @property
    def results_path(self) -> Path:
        """The evaluation's results.json: <run>/eval/, or an ad-hoc evaluation's own folder."""
        return self.root / "results.json" if self.is_adhoc else self.root / "eval" / "results.json"

    def is_run(self) -> bool:
        return self.spec_path.exists() or self.job_path.exists()

    # job.json --------------------------------------------------------------------
    def load_job(self) -> dict[str, Any]:
        """job.json ({} if there is none). CorruptFileError if it cannot be read."""
        try:
            job = load_json(self.job_path)
        except FileNotFoundError:
            return {}
        if not isinstance(job, dict):
            raise CorruptFileError(f"{self.job_path}: expected a JSON object, got "
                                   f"{type(job).__name__}")
        return job

    def read_job(self) -> dict[str, Any]:
        """job.json, or {} if it is missing or damaged (writers then start it afresh)."""
        try:
            return self.load_job()
        except CorruptFileError as err:
            logger.warning("%s; starting a new job record", err)
            return {}

    def _modify_job(self, change: Callable[[dict[str, Any]], dict[str, Any]]
                    ) -> dict[str, Any]:
        """Read job.json, apply `change`, write it back atomically; the processes that
        update it (the web UI, the job's leader, its stages) take turns (a file lock)."""
        with locked_file(self.root / ".job.json.lock"):
            job = change(self.read_job())
            job["updated_at"] = time.time()
            atomic_write_json(self.job_path, job)
        return job

    def update_job(self, **fields: Any) -> dict[str, Any]:
        """Set top-level fields of job.json."""
        return self._modify_job(lambda job: {**job, **fields})

    def update_stage(self, stage: str, **fields: Any) -> dict[str, Any]:
        """Set fields of job.json's `stages.<stage>` record."""
        def change(job: dict[str, Any]) -> dict[str, Any]:
            stages = job.get("stages") if isinstance(job.get("stages"), dict) else {}
            return {**job, "stages": {**stages, stage: {**(stages.get(stage) or {}), **fields}}}
        return self._modify_job(change)

    def replace_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Write a new job record (a new launch), keeping the stage history."""
        def change(old: dict[str, Any]) -> dict[str, Any]:
            stages = old.get("stages")
            return {"stages": stages, **job} if isinstance(stages, dict) else dict(job)
        return self._modify_job(change)

    # events ----------------------------------------------------------------------
    def emit(self, kind: str, stage: str, **fields: Any) -> None:
        """Append one event, e.g. emit("progress", "presample", done=3, total=50)."""
        record = {"time": round(time.time(), 3), "kind": kind, "stage": stage, **fields}
        append_jsonl(self.events_path, record)

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.events_path)

    # spec ------------------------------------------------------------------------
    def write_spec(self, text: str) -> None:
        """Write spec.yaml (atomically) unless it already holds exactly `text`."""
        try:
            same = self.spec_path.read_text(encoding="utf-8") == text
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            atomic_write_text(self.spec_path, text)


def run_dir_for(spec: Any) -> RunDir:
    """The run directory of a RunSpec: <run.output_root>/<run name>."""
    return RunDir(Path(spec.run.output_root) / spec.run_name())
