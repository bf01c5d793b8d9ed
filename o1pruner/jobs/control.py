"""Job control: one job per run directory, started from anywhere, stopped without loss.

This is job control from the outside (the web UI, `o1pruner stop|status`); what a job's
own processes do is `o1pruner.jobs.worker`. State is read from the run directory's files alone
(job.json, procs/), so a restarted web UI re-attaches, and nothing is believed or
signalled without its start time (`o1pruner.jobs.procs`).

A stop is a checkpoint, never a loss: SIGTERM goes to the job's group and its registered
processes; every stage finishes what it is doing (the trainer its optimizer step and a
checkpoint), records `stopped` and exits; only after `run.stop_timeout` seconds is what is
left killed. Whoever watches the job (the web UI's status poll, `o1pruner stop`) enforces
that deadline.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import CorruptFileError
from o1pruner.jobs.lock import RunLock
from o1pruner.jobs.procs import (
    ProcessId,
    group_alive,
    pid_alive,
    signal_group,
    signal_pid,
    start_time,
)
from o1pruner.jobs.rundir import RunDir
from o1pruner.jobs.worker import (
    PARENT_ENV,
    PARENT_START_ENV,
    SECRET_ENV,
    registered_processes,
    take_over,
)

logger = logging.getLogger(__name__)

ACTIVE_STATES = ("running", "stopping")
FINAL_STATES = ("done", "failed", "stopped")
WORKER_LOG = "worker.log"
DEFAULT_STOP_TIMEOUT = 600.0
KILL_WAIT = 10.0

# Popen objects of the workers this process started: only to reap them and learn their
# exit code. After a restart it is empty, and state still comes from the files.
_CHILDREN: dict[int, subprocess.Popen] = {}
_STATUS_LOCK = threading.RLock()


# ------------------------------------------------------------------------------ launch
def worker_command(argv: Sequence[str]) -> list[str]:
    """The command line of an o1pruner stage worker: `python -m o1pruner.cli ARGV`."""
    return [sys.executable, "-m", "o1pruner.cli", *argv]


def launch(run: RunDir, argv: Sequence[str], *, cwd: Path | str | None = None,
           env: dict[str, str] | None = None, program: Sequence[str] | None = None,
           spec_text: str | None = None) -> dict[str, Any]:
    """Start `o1pruner ARGV` detached as the job of `run` and record it in job.json.

    The run's lock is taken first (JobRunning, naming the running job, if it is held; then
    no file is changed), `spec_text` is written as spec.yaml under it, and the lock is
    handed to the worker, which holds it until it exits. The worker gets its own session
    (closing the UI does not signal it), stdin from /dev/null, stdout+stderr appended to
    `logs/worker.log`, and not the UI's login. `program` replaces `python -m o1pruner.cli`
    (tests run a stand-in process with it).
    """
    command = [*(program or worker_command([])), *argv]
    with _STATUS_LOCK:
        lock = RunLock.acquire(run.lock_path, command)
        try:
            # the log is opened (never through a link) before any file changes
            with os.fdopen(_open_log(run.root / "logs" / WORKER_LOG), "ab") as log:
                take_over(run, spec_text)
                child = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
                child.update({**(env or {}), "PYTHONUNBUFFERED": "1", **lock.child_env()})
                for key in (PARENT_ENV, PARENT_START_ENV):
                    child.pop(key, None)  # the worker leads its own job
                log.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} "
                          f"{' '.join(command)}\n".encode())
                log.flush()
                proc = subprocess.Popen(command, cwd=cwd, env=child, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, pass_fds=(lock.fd,))
            _CHILDREN[proc.pid] = proc
            worker = ProcessId(proc.pid, start_time(proc.pid), proc.pid)
            lock.write_holder(worker, command)
            stage = argv[0] if argv and not str(argv[0]).startswith("-") else "job"
            logger.info("%s: launched %s (pid %d)", run.root, " ".join(command), proc.pid)
            return run.replace_job({
                "state": "running", "stage": stage, "command": command,
                "cwd": str(cwd or os.getcwd()), **worker.to_dict(), "started_at": time.time(),
                "finished_at": None, "exit_code": None, "message": None, "error": None,
                "stop": None, "launched_by": os.getpid()})
        finally:
            lock.close()


def _open_log(path: Path) -> int:
    """The worker log opened for appending, never through a symbolic link (of the file or
    of logs/): a link would have the job write into its target."""
    if path.parent.is_symlink():
        raise UserError(f"{path.parent}: is a symbolic link; a job writes its logs there, so "
                        "it is refused: remove the link and start again")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                       | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UserError(f"{path}: is a symbolic link; a job appends its log to it, so it "
                            "is refused: remove the link and start again") from None
        raise


# ------------------------------------------------------------------------------ status
def status(run: RunDir) -> dict[str, Any]:
    """The job's state from job.json, checked against the processes that really run.

    While the leader (pid + start time), any process of its group or any registered
    process lives, the job is `running`, or `stopping` once a stop was asked (and past the
    stop's deadline, what is left is killed here). When all are gone: the final state the
    leader recorded, else it is settled and written back: `stopped` if a stop was asked,
    else `done`/`failed` by exit code when this process started it, else `failed` with an
    unknown exit code (the job ended without recording its end, e.g. it was killed).
    A job.json that cannot be read gives state `unreadable` with the reason.
    """
    with _STATUS_LOCK:  # web UI handlers run in threads; settle a finished job once
        return _status(run)


def _leader(job: dict[str, Any]) -> ProcessId | None:
    return ProcessId.from_dict(job)


def _alive(run: RunDir, job: dict[str, Any]) -> bool:
    leader = _leader(job)
    if leader is not None:
        _reap(leader.pid)
        if leader.alive() or group_alive(leader.pgid, leader.start):
            return True
    return bool(registered_processes(run))


def _status(run: RunDir) -> dict[str, Any]:
    try:
        job = run.load_job()
    except CorruptFileError as err:
        return {"state": "unreadable", "alive": False, "stage": None, "pid": None,
                "exit_code": None, "message": str(err)}
    if not job:
        state = "created" if run.spec_path.exists() else "missing"
        return {"state": state, "alive": False, "stage": None, "pid": None,
                "exit_code": None, "message": None}
    state = job.get("state", "unknown")
    stop = job.get("stop") if isinstance(job.get("stop"), dict) else None
    # a job whose end was recorded (a final state with its finished_at: the leader's
    # record, or one settled here) is not looked for among the processes: a scan per
    # finished run made each history listing cost seconds. A final state without
    # finished_at (a stage writing "done" mid-pipeline) is still checked; the run's lock
    # guards a rank that outlives its leader.
    ended = state in FINAL_STATES and bool(job.get("finished_at"))
    alive = not ended and _alive(run, job)
    code = _exit_code(job.get("pid"))
    if alive:
        if stop and time.time() >= stop.get("deadline", float("inf")) \
                and stop.get("signal") != "SIGKILL":
            _kill(run, job)
        state = "stopping" if stop else "running"
    elif state not in FINAL_STATES or (state == "done" and code not in (None, 0)):
        # never finished in the files (killed), or a stage said done but the worker failed
        if stop:
            final, message = "stopped", job.get("message") or "stopped by the user"
            if stop.get("signal") == "SIGKILL":
                message = (f"killed (SIGKILL) {stop.get('timeout', '?')} s after the stop "
                           "request; the last saved checkpoint is kept")
        elif code == 0:
            final, message = "done", None
        elif code is not None:
            final, message = "failed", job.get("message") or f"worker exited with code {code}"
        else:
            final, message = "failed", ("the job's processes ended without recording how "
                                        "(killed?); exit code unknown")
        job = run.update_job(state=final, exit_code=code, finished_at=time.time(),
                             message=message)
        state = final
    elif job.get("exit_code") is None and code is not None:
        job = run.update_job(exit_code=code)
    return {**job, "state": state, "alive": alive}


def _reap(pid: int | None) -> None:
    child = _CHILDREN.get(pid or -1)
    if child is not None:
        child.poll()


def _exit_code(pid: int | None) -> int | None:
    """Exit code of a worker this process started and that has ended, else None."""
    child = _CHILDREN.get(pid or -1)
    if child is None:
        return None
    if child.returncode is not None or child.poll() is not None:
        return child.returncode
    if not pid_alive(child.pid):
        try:
            return child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
    return None


# -------------------------------------------------------------------------------- stop
def _signal_job(run: RunDir, job: dict[str, Any], sig: signal.Signals) -> None:
    leader = _leader(job)
    if leader is not None:
        if not signal_group(leader.pgid, leader.start, sig):
            signal_pid(leader.pid, leader.start, sig)
    for proc in registered_processes(run):
        signal_pid(proc.pid, proc.start, sig)


def _kill(run: RunDir, job: dict[str, Any]) -> None:
    stop = dict(job.get("stop") or {})
    logger.warning("%s: still running %s s after the stop request; sending SIGKILL",
                   run.root, stop.get("timeout"))
    run.update_job(stop={**stop, "signal": "SIGKILL", "killed_at": time.time()})
    _signal_job(run, job, signal.SIGKILL)


def stop_timeout_of(run: RunDir) -> float:
    """The run's `run.stop_timeout` (from its spec.yaml), else the default."""
    from o1pruner.safeyaml import YamlError, load_yaml_file

    try:
        data = load_yaml_file(run.spec_path)
        value = data["run"]["stop_timeout"]
        return float(value) if float(value) > 0 else DEFAULT_STOP_TIMEOUT
    except (YamlError, OSError, KeyError, TypeError, ValueError):
        return DEFAULT_STOP_TIMEOUT


def request_stop(run: RunDir, timeout: float | None = None) -> dict[str, Any]:
    """Ask the job to stop (SIGTERM to all its processes) and return at once; the job is
    `stopping` until it has saved and exited, and is killed `timeout` seconds from now
    (default: the spec's run.stop_timeout) by whoever next checks its status."""
    with _STATUS_LOCK:
        job = status(run)
        if job["state"] not in ACTIVE_STATES:
            return job
        timeout = stop_timeout_of(run) if timeout is None else float(timeout)
        old = job.get("stop") if isinstance(job.get("stop"), dict) else None
        if old is None:
            now = time.time()
            run.update_job(stop={"requested_at": now, "deadline": now + timeout,
                                 "timeout": timeout, "signal": "SIGTERM"})
            _signal_job(run, job, signal.SIGTERM)
        return status(run)


def stop(run: RunDir, timeout: float | None = None, kill_wait: float = KILL_WAIT,
         on_wait: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Stop the job and wait until every process of it is gone: SIGTERM (each stage saves
    and exits), then SIGKILL after `timeout` seconds. Returns the final status; raises
    UserError if something survives SIGKILL. `on_wait(seconds)` is called while waiting."""
    job = request_stop(run, timeout)
    started = time.monotonic()
    while job["state"] in ACTIVE_STATES:
        stop_info = job.get("stop") or {}
        if stop_info.get("signal") == "SIGKILL" and \
                time.time() > stop_info.get("killed_at", time.time()) + kill_wait:
            raise UserError(f"{run.root}: processes of the job survived SIGKILL")
        if on_wait is not None:
            on_wait(time.monotonic() - started)
        time.sleep(0.1)
        job = status(run)
    return job


# ---------------------------------------------------------------------------- reading
def tail_lines(path: Path, lines: int = 40, max_bytes: int = 65536) -> list[str]:
    """The last `lines` lines of a text file, reading at most its last `max_bytes`."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except (FileNotFoundError, IsADirectoryError):
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


def failure_report(run: RunDir, lines: int = 30) -> str:
    """Why a job failed, first (its one message), then the last lines of its logs."""
    job = status(run)
    if job["state"] not in ("failed", "unreadable"):
        return ""
    if job["state"] == "unreadable":
        return f"this run's job record cannot be read: {job['message']}"
    code = job.get("exit_code")
    stage = job.get("stage") or "?"
    out = [str(job.get("message") or job.get("error") or "the job failed"), "",
           f"(stage {stage}, exit code {'unknown' if code is None else code})"]
    stages = job.get("stages") if isinstance(job.get("stages"), dict) else {}
    failed = [name for name, rec in stages.items()
              if isinstance(rec, dict) and rec.get("state") == "failed"]
    paths: list[Path] = []
    for path in [*(run.log_path(name) for name in failed), run.log_path(stage),
                 run.root / "logs" / WORKER_LOG]:
        if path not in paths:
            paths.append(path)
    for path in paths:
        tail = tail_lines(path, lines)
        if tail:
            out += ["", f"--- last lines of {path.relative_to(run.root)} ---", *tail]
    return "\n".join(out)
