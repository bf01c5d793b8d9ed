"""Job control for stage workers: launch detached, stop, and tell their state from files.

A stage worker is the same `o1pruner <stage> spec.yaml` command a user would type, started
in its own session and process group with its output appended to `<run>/logs/worker.log`
(never a pipe that only the launcher drains). Everything needed to find it again is
recorded in `job.json` (pid, pgid, process start time, command), so a restarted web UI
re-attaches by reading files: no job runner keeps state in memory.

The web UI imports this module; nothing here imports the web UI.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from o1pruner.errors import UserError
from o1pruner.runs import RunDir, atomic_write_text, read_json

logger = logging.getLogger(__name__)

ACTIVE_STATES = ("running", "stopping")
FINAL_STATES = ("done", "failed", "stopped")
WORKER_LOG = "worker.log"

# Popen objects of the workers this process started: only used to reap them and learn
# their exit code. After a restart it is empty, and state still comes from job.json.
_CHILDREN: dict[int, subprocess.Popen] = {}
_STATUS_LOCK = threading.RLock()


# ----------------------------------------------------------------------- /proc probes
def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    return text[text.rfind(")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """Kernel start time of `pid` (clock ticks since boot): tells a reused pid apart."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, when given, started at `start_time`."""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    fields = _proc_stat(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no procfs: fall back to a signal probe
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or process_start_time(pid) == start_time


def group_alive(pgid: int | None) -> bool:
    """True if any live (non-zombie) process is in process group `pgid`."""
    if not pgid:
        return False
    for child in list(_CHILDREN.values()):
        child.poll()  # reap our own finished workers so they do not linger as zombies
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields and len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in "ZX":
            return True
    return False


def _exit_code(pid: int | None) -> int | None:
    """Exit code of a worker this process started and that has ended, else None.

    Popen.poll() answers None while another thread is reaping the same child, so a child
    that /proc no longer shows as running is waited for briefly instead.
    """
    child = _CHILDREN.get(pid or -1)
    if child is None:
        return None
    if child.returncode is not None or child.poll() is not None:
        return child.returncode
    fields = _proc_stat(child.pid)
    if fields is None or fields[0] in ("Z", "X"):
        try:
            return child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
    return None


# ------------------------------------------------------------------------------ launch
def worker_command(argv: Sequence[str]) -> list[str]:
    """The command line of an o1pruner stage worker: `python -m o1pruner.cli ARGV`."""
    return [sys.executable, "-m", "o1pruner.cli", *argv]


def launch(
    run_dir: RunDir,
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    program: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Start `o1pruner ARGV` detached for `run_dir` and record it in job.json.

    The worker gets its own session (so closing the UI or its terminal does not signal
    it), stdin from /dev/null and stdout+stderr appended to `logs/worker.log`. `program`
    replaces `python -m o1pruner.cli` (tests use it to run a stand-in process). Raises
    UserError if a job of this run is still running.
    """
    current = status(run_dir)
    if current["state"] in ACTIVE_STATES:
        raise UserError(f"{run_dir.root.name}: a job is already {current['state']} "
                        f"(pid {current.get('pid')}, stage {current.get('stage')}); stop it first")
    command = [*(program or worker_command([])), *argv]
    log_path = run_dir.root / "logs" / WORKER_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        log.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        log.flush()
        proc = subprocess.Popen(command, cwd=cwd, env=child_env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True)
    _CHILDREN[proc.pid] = proc
    stage = argv[0] if argv and not str(argv[0]).startswith("-") else "job"
    logger.info("%s: launched %s (pid %d)", run_dir.root, " ".join(command), proc.pid)
    # worker_* fields are written only here: stage processes rewrite pid/pgid/state for
    # themselves (a pipeline's train stage records its own pid and `done` mid-run).
    start_time = process_start_time(proc.pid)
    return run_dir.update_job(
        state="running", stage=stage, command=command, cwd=str(cwd or os.getcwd()),
        pid=proc.pid, pgid=proc.pid, worker_pid=proc.pid, worker_pgid=proc.pid,
        worker_start=start_time, started_at=time.time(), finished_at=None, exit_code=None,
        message=None, error=None, stopped_with=None, launched_by=os.getpid())


# ------------------------------------------------------------------------------ status
def _worker(job: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    """(pid, pgid, start time) of the job's worker: the launcher's record if any, else the
    pid/pgid the stage itself wrote (a stage started from a terminal)."""
    pid = job.get("worker_pid") or job.get("pid")
    pgid = job.get("worker_pgid") or job.get("pgid") or pid
    start = job.get("worker_start") if job.get("worker_pid") else job.get("proc_start")
    return pid, pgid, start


def status(run_dir: RunDir) -> dict[str, Any]:
    """The job's state from job.json plus a liveness check of its process group.

    While any process of the worker's group lives the job is `running` (or `stopping`),
    whatever a stage wrote in between. When the group is gone: the state the worker
    recorded if final (done/failed/stopped), else it is settled here and written back:
    `stopped` if a stop was requested, else `done`/`failed` by exit code when this process
    started it, else `failed` with an unknown exit code (the worker ended without writing
    its final state, e.g. it was killed).
    """
    with _STATUS_LOCK:  # web UI handlers run in threads; settle a finished job once
        return _status(run_dir)


def _status(run_dir: RunDir) -> dict[str, Any]:
    job = run_dir.read_job()
    if not job:
        state = "created" if run_dir.spec_path.exists() else "missing"
        return {"state": state, "alive": False, "stage": None, "pid": None,
                "exit_code": None, "message": None}
    pid, pgid, start = _worker(job)
    state = job.get("state", "unknown")
    alive = _job_alive(pid, pgid, start)
    code = _exit_code(pid)
    if alive:
        state = "stopping" if state == "stopping" else "running"
    elif state in ACTIVE_STATES or state not in FINAL_STATES:
        if state in ("stopping", "stopped"):
            final, message = "stopped", "stopped by the user"
        elif code == 0:
            final, message = "done", None
        elif code is not None:
            final, message = "failed", f"worker exited with code {code}"
        else:
            final, message = "failed", ("worker process ended without recording its final "
                                        "state (exit code unknown)")
        job = run_dir.update_job(state=final, exit_code=code, finished_at=time.time(),
                                 message=message)
        state = final
    elif state == "done" and code not in (None, 0):  # a stage said done, the worker failed
        job = run_dir.update_job(state="failed", exit_code=code,
                                 message=f"worker exited with code {code}")
        state = "failed"
    elif job.get("exit_code") is None and code is not None:
        job = run_dir.update_job(exit_code=code)
    return {**job, "state": state, "alive": alive, "pid": pid, "pgid": pgid}


def _job_alive(pid: int | None, pgid: int | None, start: int | None) -> bool:
    """The worker lives, or its leader is gone but processes of its group still work.
    A pid that now belongs to a process started at another time was reused: not ours."""
    if not pid:
        return False
    if pid_alive(pid):
        return start is None or process_start_time(pid) in (None, start)
    return group_alive(pgid)


# -------------------------------------------------------------------------------- stop
def stop(run_dir: RunDir, timeout: float = 30.0, kill_wait: float = 10.0) -> dict[str, Any]:
    """Stop the run's worker: SIGTERM to its process group (the trainer saves a
    checkpoint), SIGKILL after `timeout` seconds, then confirm the group is gone.

    Returns the final status (state `stopped`). Raises UserError if the group survives
    SIGKILL.
    """
    job = status(run_dir)
    if job["state"] not in ACTIVE_STATES:
        return job
    pgid = job.get("pgid") or job.get("pid")
    run_dir.update_job(state="stopping", stop_requested_at=time.time())
    signal_used = "SIGTERM"
    _signal_group(pgid, signal.SIGTERM)
    if not _wait_group_gone(pgid, timeout):
        logger.warning("%s: still running %.0f s after SIGTERM; sending SIGKILL",
                       run_dir.root, timeout)
        signal_used = "SIGKILL"
        _signal_group(pgid, signal.SIGKILL)
        if not _wait_group_gone(pgid, kill_wait):
            raise UserError(f"{run_dir.root.name}: process group {pgid} survived SIGKILL")
    _wait_group_gone(job.get("pid"), 1.0)
    return {**run_dir.update_job(state="stopped", stopped_with=signal_used,
                                 exit_code=_exit_code(job.get("pid")),
                                 finished_at=time.time(), message="stopped by the user"),
            "alive": False}


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group_gone(pgid: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


# ---------------------------------------------------------------------------- reading
def tail_lines(path: Path, lines: int = 40, max_bytes: int = 65536) -> list[str]:
    """The last `lines` lines of a text file, reading at most its last `max_bytes`."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


def failure_report(run_dir: RunDir, lines: int = 30) -> str:
    """Stage, exit code, reason and the last log lines of a failed job ('' otherwise)."""
    job = status(run_dir)
    if job["state"] != "failed":
        return ""
    code = job.get("exit_code")
    stage = job.get("stage") or "?"
    out = [f"stage {stage} failed (exit code {'unknown' if code is None else code})"]
    if job.get("message"):
        out.append(str(job["message"]))
    for path in (run_dir.log_path(stage), run_dir.root / "logs" / WORKER_LOG):
        tail = tail_lines(path, lines)
        if tail:
            out += ["", f"--- last lines of {path.relative_to(run_dir.root)} ---", *tail]
    return "\n".join(out)


def _spec_data(run_dir: RunDir) -> dict[str, Any]:
    try:
        data = yaml.safe_load(run_dir.spec_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


KEY_PARAMETERS = {
    "K": ("presample", "k"), "lambda": ("reward", "lambda"), "method": ("train", "method"),
    "finetuning": ("train", "finetuning"), "lr": ("train", "learning_rate"),
    "train_limit": ("data", "train_limit"),
}


def headline_results(results: Any) -> str:
    """One line from eval/results.json: accuracy / mean tokens / AES of each method (AVG)."""
    if not isinstance(results, dict) or "methods" not in results:
        return ""
    try:
        from o1pruner.evaluation.report import results_rows

        avg = [r for r in results_rows(results) if r.get("benchmark") == "AVG"]
    except (ImportError, KeyError, TypeError) as err:
        logger.debug("results.json not in the evaluation format: %s", err)
        return ""
    return "; ".join(f"{r['method']}: acc {r['accuracy %']}% / {r['mean tokens']} tok"
                     + (f" / AES {r['AES']}" if r.get("AES") is not None else "") for r in avg)


def run_summary(run_dir: RunDir) -> dict[str, Any]:
    """One history-table row: name, model, state, stage, created, key parameters, results."""
    spec = _spec_data(run_dir)
    job = status(run_dir)
    params = {}
    for label, (section, key) in KEY_PARAMETERS.items():
        value = (spec.get(section) or {}).get(key) if isinstance(spec.get(section), dict) else None
        if value is not None:
            params[label] = value
    created = job.get("started_at") or _ctime(run_dir.spec_path) or _ctime(run_dir.root)
    return {
        "name": run_dir.root.name,
        "path": str(run_dir.root),
        "model": (spec.get("model") or {}).get("name_or_path", "") if isinstance(
            spec.get("model"), dict) else "",
        "state": job["state"],
        "stage": job.get("stage") or "",
        "created": created,
        "parameters": params,
        "results": headline_results(read_json(run_dir.root / "eval" / "results.json")),
    }


def _ctime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def list_runs(output_root: Path | str) -> list[dict[str, Any]]:
    """Every run directory under `output_root` (newest first) as a history-table row."""
    root = Path(output_root)
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir()
            if p.is_dir() and not p.is_symlink()
            and ((p / "spec.yaml").exists() or (p / "job.json").exists())]
    rows = [run_summary(r) for r in runs]
    return sorted(rows, key=lambda r: r["created"] or 0, reverse=True)


def delete_run(run_dir: RunDir) -> None:
    """Remove a run directory; refuses while its job is running."""
    job = status(run_dir)
    if job["state"] in ACTIVE_STATES:
        raise UserError(f"{run_dir.root.name}: the job is {job['state']}; stop it before "
                        "deleting the run")
    if not (run_dir.spec_path.exists() or run_dir.job_path.exists()):
        raise UserError(f"{run_dir.root}: not a run directory (no spec.yaml or job.json)")
    shutil.rmtree(run_dir.root)
    logger.info("deleted run %s", run_dir.root)


def write_spec(run_dir: RunDir, text: str) -> None:
    """Write a run's spec.yaml (atomically) unless it already holds exactly `text`."""
    if not run_dir.spec_path.exists() or run_dir.spec_path.read_text(encoding="utf-8") != text:
        atomic_write_text(run_dir.spec_path, text)
