"""Inside a job: what every job process does, whoever started it.

A job is the process that holds the run directory's lock (`o1pruner.jobs.lock`) and the
processes it starts. `job_process` is the life of one of them: hold the lock (passed down
or taken), write the spec under it, record the stage (and, for the leader, the job) in
job.json with pid and start time, and record how it ended, with one message for the user.
Processes a job starts know their parent ($O1PRUNER_PARENT_PID and its start time), hold
its lock through the open file passed to them, and stop as a Stop would if the parent dies
(`watch_parent`); processes outside the job's process group (training ranks, which torch's
launcher starts in sessions of their own) register in `procs/` so that status and Stop
find them. A stop reaches a running child once (`run_child`), and the parent waits for it
to save.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError, explain_failure
from o1pruner.files import CorruptFileError, atomic_write_json, load_json
from o1pruner.jobs.lock import JobRunning, RunLock
from o1pruner.jobs.procs import ProcessId
from o1pruner.jobs.progress import stage_logging
from o1pruner.jobs.rundir import RunDir

logger = logging.getLogger(__name__)

STOPPED_EXIT_CODE = 130

#: Set for the processes a job starts: they belong to that job, not to a job of their own.
PARENT_ENV = "O1PRUNER_PARENT_PID"
PARENT_START_ENV = "O1PRUNER_PARENT_START"
#: Environment variables a worker must never inherit (the web UI's login).
SECRET_ENV = ("O1PRUNER_AUTH",)


class JobStopped(KeyboardInterrupt):
    """A stage was asked to stop and has saved what it had (exit code 130)."""


# --------------------------------------------------------------------------- in a job
def parent_process() -> ProcessId | None:
    """The job process that started this one ($O1PRUNER_PARENT_PID), if any."""
    raw = os.environ.get(PARENT_ENV, "")
    if not raw.isdigit():
        return None
    start = os.environ.get(PARENT_START_ENV, "")
    return ProcessId(int(raw), int(start) if start.isdigit() else None)


def child_env(lock: RunLock | None = None) -> dict[str, str]:
    """Environment for a process this job starts: it knows its parent (and watches it),
    and holds the run's lock through the open file passed with `pass_fds`."""
    me = ProcessId.current()
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update({PARENT_ENV: str(me.pid), PARENT_START_ENV: str(me.start or "")})
    if lock is not None:
        env.update(lock.child_env())
    return env


_watchdog_started = False


def watch_parent(interval: float = 1.0) -> None:
    """If this process belongs to a job's parent process and that parent dies (even by
    `kill -9`), stop this process as a Stop would (SIGTERM to itself: the trainer saves a
    checkpoint), so no part of a job outlives it."""
    global _watchdog_started
    parent = parent_process()
    if parent is None or _watchdog_started:
        return
    _watchdog_started = True

    def watch() -> None:
        while parent.alive():
            time.sleep(interval)
        logger.warning("the job's parent process %d is gone; stopping", parent.pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="o1pruner-parent-watchdog", daemon=True).start()


def register_process(run: RunDir, role: str) -> None:
    """Record this process in `procs/` so that status and Stop find it although it is not
    in the job's process group (a training rank), and watch the job's parent."""
    me = ProcessId.current()
    path = run.procs_dir / f"{me.pid}.json"
    atomic_write_json(path, {**me.to_dict(), "role": role, "registered_at": time.time()})
    watch_parent()
    atexit.register(lambda: path.unlink(missing_ok=True))


def registered_processes(run: RunDir) -> list[ProcessId]:
    """The live registered processes of the run (stale files are ignored)."""
    out = []
    for path in sorted(run.procs_dir.glob("*.json")) if run.procs_dir.is_dir() else []:
        try:
            proc = ProcessId.from_dict(load_json(path))
        except (FileNotFoundError, CorruptFileError):
            continue
        if proc is not None and proc.alive():
            out.append(proc)
    return out


def clear_registered(run: RunDir) -> None:
    if run.procs_dir.is_dir():
        for path in run.procs_dir.glob("*.json"):
            path.unlink(missing_ok=True)


def take_over(run: RunDir, spec_text: str | None) -> None:
    """The first steps of a new job, once its lock is taken: refuse while processes of the
    previous job (registered ranks) are still exiting, write spec.yaml, forget the previous
    job's registrations."""
    live = registered_processes(run)
    if live:
        raise JobRunning(f"{run.root}: processes of the previous job are still exiting "
                         f"(pids {', '.join(str(p.pid) for p in live)}); wait a moment and "
                         "start again")
    if spec_text is not None:
        run.write_spec(spec_text)
    clear_registered(run)


@contextmanager
def job_process(run: RunDir, stage: str, spec_text: str | None = None,
                command: Sequence[str] | None = None) -> Iterator[RunLock]:
    """The life of one job process (a stage, or `o1pruner run`), in this order:

    1. hold the run's lock (passed down by our launcher, or taken now; JobRunning if
       another job holds it): nothing is written before this;
    2. write spec.yaml (when given) under the lock, and log to logs/<stage>.log;
    3. record the stage (`stages.<stage>`) and, for the job's leader (a process no job
       started), the job itself: pid, start time, group, command;
    4. at the end, record done / stopped (with what a re-run resumes from) / failed
       (with the user's message, or the error with its traceback in the stage log).
    """
    command = list(command or sys.argv)
    inherited = RunLock.inherited(run.lock_path)
    lock = inherited or RunLock.acquire(run.lock_path, command)
    try:
        if inherited is None:
            take_over(run, spec_text)
        elif spec_text is not None:
            run.write_spec(spec_text)
        watch_parent()
        with stage_logging(run, stage):
            with _recorded(run, stage, leader=parent_process() is None,
                           fresh=inherited is None, command=command):
                yield lock
    finally:
        lock.close()


@contextmanager
def _recorded(run: RunDir, stage: str, leader: bool, fresh: bool,
              command: list[str]) -> Iterator[None]:
    """Steps 3 and 4 of job_process."""
    me = ProcessId.current()
    now = time.time()
    run.update_stage(stage, state="running", **me.to_dict(), started_at=now,
                     finished_at=None, error=None, resume=None)
    if leader:
        fields = {"state": "running", "stage": stage, "command": command,
                  "cwd": os.getcwd(), **me.to_dict(), "started_at": now,
                  "finished_at": None, "exit_code": None, "message": None, "error": None}
        if fresh:  # started from a terminal: no earlier stop request applies
            fields["stop"] = None
        job = run.read_job()
        if job.get("pid") == me.pid:  # launched by the web UI: keep its start time
            fields["started_at"] = job.get("started_at") or now
        run.update_job(**fields)
    try:
        yield
    except KeyboardInterrupt:
        run.update_stage(stage, state="stopped", finished_at=time.time())
        if leader:
            job = run.read_job()
            current = job.get("stage") or stage  # `o1pruner run`: the stage it was in
            record = (job.get("stages") or {}).get(current) or {}
            resume = record.get("resume") or "finished work is kept; Start resumes from there"
            run.update_job(state="stopped", finished_at=time.time(),
                           exit_code=STOPPED_EXIT_CODE,
                           message=f"stopped during {current}: {resume}")
        raise
    except BaseException as err:
        message = user_message(err, run.log_path(stage))
        run.update_stage(stage, state="failed", finished_at=time.time(), error=message)
        if leader:
            run.update_job(state="failed", finished_at=time.time(), error=message,
                           message=message, exit_code=exit_code_of(err))
        raise
    run.update_stage(stage, state="done", finished_at=time.time())
    if leader:
        run.update_job(state="done", finished_at=time.time(), exit_code=0, message=None)


def user_message(err: BaseException, log_path: Path | None = None) -> str:
    """The one message a user sees for a failure: a UserError's own text; anything else as
    an internal error, its traceback logged (and pointed to)."""
    if isinstance(err, UserError):
        return str(err)[-4000:]
    explained = explain_failure(err)
    if explained:
        return explained
    where = f"; the traceback is in {log_path}" if log_path else ""
    if not getattr(err, "_o1pruner_logged", False):
        logger.error("internal error", exc_info=(type(err), err, err.__traceback__))
        try:
            err._o1pruner_logged = True  # type: ignore[attr-defined]
        except AttributeError:
            pass
    return f"internal error: {type(err).__name__}: {str(err)[-2000:]}{where}"


def exit_code_of(err: BaseException) -> int:
    """The exit code of a job process that ends with `err` (what the CLI returns)."""
    if isinstance(err, KeyboardInterrupt):
        return STOPPED_EXIT_CODE
    code = getattr(err, "exit_code", None)
    if isinstance(code, int):
        return code
    return 2 if isinstance(err, UserError) or explain_failure(err) else 1


def run_child(command: Sequence[str], lock: RunLock | None,
              forward: Callable[[int], None] | None = None,
              **popen: Any) -> tuple[int, bool]:
    """Run a child process of this job and wait for it; return (exit code, stop asked).

    SIGTERM/SIGINT received meanwhile are passed on once (to the child, or through
    `forward`), and the wait goes on until the child has saved and exited: a stop never
    cuts a stage short. The child holds the run's lock too (the open file is passed), and
    watches this process, so neither outlives the other.
    """
    proc = subprocess.Popen(list(command), env={**child_env(lock), **popen.pop("env", {})},
                            pass_fds=(lock.fd,) if lock is not None else (), **popen)
    asked: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if asked:
            return
        asked.append(signum)
        logger.warning("signal %d: asking the running stage to save and stop", signum)
        if forward is not None:
            forward(signum)
        else:
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass

    in_main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} \
        if in_main else {}
    try:
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return code, bool(asked)
