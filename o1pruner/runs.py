"""The run directory: the only contract between stage workers and the web UI.

```
runs/<name>/
  spec.yaml        resolved spec (atomic write)
  job.json         state, pid, pgid, stage, timestamps (atomic write)
  events.jsonl     progress and metrics, one JSON object a line (append-only)
  logs/<stage>.log worker output
  presample/ train/ eval/ report/
```
Writes are atomic (temporary file + rename) or append-only with a flush per line, so a
crash loses at most the line in flight; readers skip a torn last line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from o1pruner.errors import UserError

logger = logging.getLogger(__name__)

#: Set by `o1pruner run` for its stage processes: the job is the pipeline's, not the stage's.
PARENT_ENV = "O1PRUNER_PARENT_PID"


# ------------------------------------------------------------------------ file helpers
def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return default


class JsonlWriter:
    """Append-only JSON-lines file; each line is flushed (and fsynced) as it is written."""

    def __init__(self, path: Path, fsync: bool = True):
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(path)
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")
        self._fsync = fsync

    def write(self, record: dict[str, Any]) -> None:
        self.write_many([record])

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not text:
            return
        self._fh.write(text)
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_torn_tail(path: Path) -> None:
    """Cut an unterminated last line (a write killed mid-line) so appends stay valid JSONL."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        data = fh.seek(0) or fh.read()
        cut = data.rfind(b"\n") + 1
        fh.truncate(cut)
        logger.warning("%s: dropped a torn last line (%d bytes)", path, len(data) - cut)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a JSONL file ([] if it does not exist); a torn last line is skipped."""
    return list(iter_jsonl(path))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn last line
            if line.strip():
                yield json.loads(line)


class JsonlTail:
    """Reads only what was appended to a JSONL file since the last call (by byte offset)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def read_new(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(x) for x in chunk[:end].decode("utf-8").splitlines() if x.strip()]


# --------------------------------------------------------------------------- run dir
@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory."""

    root: Path

    @property
    def spec_path(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def job_path(self) -> Path:
        return self.root / "job.json"

    @property
    def events_path(self) -> Path:
        return self.root / "events.jsonl"

    def log_path(self, stage: str) -> Path:
        return self.root / "logs" / f"{stage}.log"

    def stage_dir(self, stage: str) -> Path:
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    # job.json --------------------------------------------------------------------
    def read_job(self) -> dict[str, Any]:
        return read_json(self.job_path, default={}) or {}

    def update_job(self, **fields: Any) -> dict[str, Any]:
        job = self.read_job()
        job.update(fields, updated_at=time.time())
        atomic_write_json(self.job_path, job)
        return job

    # events ----------------------------------------------------------------------
    def emit(self, kind: str, stage: str, **fields: Any) -> None:
        """Append one event, e.g. emit("progress", "presample", done=3, total=50)."""
        record = {"time": round(time.time(), 3), "kind": kind, "stage": stage, **fields}
        with JsonlWriter(self.events_path, fsync=False) as out:
            out.write(record)

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.events_path)


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, ValueError, TypeError):
        return False
    return True


@contextmanager
def stage_job(run: RunDir, stage: str, record: bool = True) -> Iterator[None]:
    """Record a stage's life in job.json, and refuse to run a stage twice at once.

    `stages.<stage>` holds {state, pid, started_at, finished_at, error}. The top-level
    state/stage/pid describe the job as a whole: a stage sets them only when it is the job
    itself, not when it runs under `o1pruner run` (which sets O1PRUNER_PARENT_PID).
    `record=False` (a non-main distributed rank) only runs the body.
    """
    if not record:
        yield
        return
    job = run.read_job()
    previous = (job.get("stages") or {}).get(stage) or {}
    ours = {None, os.getpid(), _int(os.environ.get(PARENT_ENV))}  # this process or its launcher
    if previous.get("state") == "running" and previous.get("pid") not in ours \
            and _pid_alive(previous["pid"]):
        raise UserError(f"{run.root}: {stage} is already running (pid {previous['pid']}); "
                        f"wait for it or stop it first")
    own_job = PARENT_ENV not in os.environ

    def record_state(state: str, **extra: Any) -> None:
        stages = run.read_job().get("stages") or {}
        stages[stage] = {**(stages.get(stage) or {}), "state": state, **extra}
        top = {"state": state, "stage": stage} if own_job else {}
        run.update_job(stages=stages, **top)

    pids = {"pid": os.getpid(), "pgid": os.getpgid(0)}
    record_state("running", started_at=time.time(), finished_at=None, error=None, **pids)
    if own_job:
        run.update_job(**pids)
    try:
        yield
    except KeyboardInterrupt:
        record_state("stopped", finished_at=time.time())
        raise
    except BaseException as err:
        record_state("failed", finished_at=time.time(), error=f"{type(err).__name__}: {err}"[-2000:])
        raise
    record_state("done", finished_at=time.time())


def run_dir_for(spec: Any) -> RunDir:
    """The run directory of a RunSpec: <run.output_root>/<run name>."""
    return RunDir(Path(spec.run.output_root) / spec.run_name())


def init_run_dir(spec: Any) -> RunDir:
    """Create (or reopen) the spec's run directory and write its resolved spec.yaml."""
    from o1pruner.specio import dump_yaml

    run = run_dir_for(spec)
    run.root.mkdir(parents=True, exist_ok=True)
    text = dump_yaml(spec)
    if not run.spec_path.exists() or run.spec_path.read_text(encoding="utf-8") != text:
        atomic_write_text(run.spec_path, text)
    return run


# -------------------------------------------------------------------------- progress
class Progress:
    """A tqdm bar in the terminal plus `progress` events in events.jsonl (rate-limited)."""

    def __init__(
        self,
        run: RunDir | None,
        stage: str,
        total: int,
        initial: int = 0,
        unit: str = "it",
        desc: str | None = None,
        min_interval: float = 1.0,
    ):
        self.run, self.stage, self.total, self.done = run, stage, total, initial
        self.unit = unit
        self.started = time.time()
        self._initial = initial
        self._last_emit = 0.0
        self._min_interval = min_interval
        self._bar = tqdm(total=total, initial=initial, unit=unit, desc=desc or stage,
                         dynamic_ncols=True, mininterval=1.0)
        self._emit(force=True)

    def update(self, n: int = 1, **metrics: Any) -> None:
        self.done += n
        self._bar.update(n)
        if metrics:
            self._bar.set_postfix({k: v for k, v in metrics.items()
                                   if isinstance(v, (int, float))}, refresh=False)
        self._emit(force=self.done >= self.total, **metrics)

    def _emit(self, force: bool = False, **metrics: Any) -> None:
        now = time.time()
        if self.run is None or (not force and now - self._last_emit < self._min_interval):
            return
        self._last_emit = now
        elapsed = now - self.started
        rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        self.run.emit("progress", self.stage, done=self.done, total=self.total,
                      unit=self.unit, elapsed_s=round(elapsed, 1),
                      eta_s=None if eta is None else round(eta, 1), **metrics)

    def close(self) -> None:
        self._emit(force=True)
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def stage_logging(run: RunDir, stage: str) -> Iterator[Path]:
    """Send the `o1pruner` loggers' records to logs/<stage>.log while the stage runs."""
    path = run.log_path(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("o1pruner")
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
