"""Job control: one job per run directory, started from anywhere, stopped without loss.

A job is the process that holds the run directory's lock (`o1pruner.joblock`) and the
processes it starts. Its leader records itself in `job.json` (pid, process start time,
process group, command); stages started by `o1pruner run` record themselves under
`stages`; processes outside the leader's group (training ranks, which torch's launcher
starts in sessions of their own) register in `procs/`. State is read from those files
alone, so a restarted web UI re-attaches, and nothing is believed or signalled without
its start time (`o1pruner.procs`).

A stop is a checkpoint, never a loss: SIGTERM goes to the job's group and its registered
processes; every stage finishes what it is doing (the trainer its optimizer step and a
checkpoint), records `stopped` and exits; only after `run.stop_timeout` seconds is what is
left killed. Whoever watches the job (the web UI's status poll, `o1pruner stop`) enforces
that deadline.
"""

from __future__ import annotations

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
from o1pruner.joblock import JobRunning, RunLock
from o1pruner.procs import (
    ProcessId,
    group_alive,
    pid_alive,
    signal_group,
    signal_pid,
    start_time,
)
from o1pruner.progress import stage_logging
from o1pruner.rundir import RunDir

logger = logging.getLogger(__name__)

ACTIVE_STATES = ("running", "stopping")
FINAL_STATES = ("done", "failed", "stopped")
WORKER_LOG = "worker.log"
STOPPED_EXIT_CODE = 130
DEFAULT_STOP_TIMEOUT = 600.0
KILL_WAIT = 10.0

#: Set for the processes a job starts: they belong to that job, not to a job of their own.
PARENT_ENV = "O1PRUNER_PARENT_PID"
PARENT_START_ENV = "O1PRUNER_PARENT_START"
#: Environment variables a worker must never inherit (the web UI's login).
SECRET_ENV = ("O1PRUNER_AUTH",)

# Popen objects of the workers this process started: only to reap them and learn their
# exit code. After a restart it is empty, and state still comes from the files.
_CHILDREN: dict[int, subprocess.Popen] = {}
_STATUS_LOCK = threading.RLock()


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

    import atexit

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


def _clear_registered(run: RunDir) -> None:
    if run.procs_dir.is_dir():
        for path in run.procs_dir.glob("*.json"):
            path.unlink(missing_ok=True)


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
        live = registered_processes(run) if inherited is None else []
        if live:
            raise JobRunning(f"{run.root}: processes of the previous job are still exiting "
                             f"(pids {', '.join(str(p.pid) for p in live)}); wait a moment "
                             "and start again")
        if spec_text is not None:
            run.write_spec(spec_text)
        if inherited is None:
            _clear_registered(run)
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
            live = registered_processes(run)
            if live:
                raise JobRunning(f"{run.root}: processes of the previous job are still "
                                 f"exiting (pids {', '.join(str(p.pid) for p in live)}); wait "
                                 "a moment and start again")
            if spec_text is not None:
                run.write_spec(spec_text)
            _clear_registered(run)
            log_path = run.root / "logs" / WORKER_LOG
            log_path.parent.mkdir(parents=True, exist_ok=True)
            child = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
            child.update({**(env or {}), "PYTHONUNBUFFERED": "1", **lock.child_env()})
            for key in (PARENT_ENV, PARENT_START_ENV):
                child.pop(key, None)  # the worker leads its own job
            with open(log_path, "ab") as log:
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
    alive = _alive(run, job)
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
