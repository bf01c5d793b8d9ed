"""One job per run directory: an exclusive `flock` on `<run>/.lock`, held for the job's
whole life and released by the kernel on any death (a crash, `kill -9`, a power cut).

The lock belongs to an open file, not to a process: a launcher (the web UI, `o1pruner
run`) takes it, passes the open file to its worker (`pass_fds`, with the descriptor number
in $O1PRUNER_LOCK_FD) and closes its own copy; the lock is then held until the last
process holding that open file exits. A second launch, from anywhere, fails at once with
the holder's pid, command and start time, before it changes any file. Nothing ever calls
LOCK_UN: closing is enough, and unlocking a shared open file would release it for all.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.jobs.procs import ProcessId

logger = logging.getLogger(__name__)

FD_ENV = "O1PRUNER_LOCK_FD"


class JobRunning(UserError):
    """Another job holds the run directory's lock."""


def describe_holder(info: dict[str, Any]) -> str:
    """"pid 123 (`o1pruner run runs/x/spec.yaml`, started 2026-11-26 14:02:05)"."""
    parts = [f"pid {info.get('pid', '?')}"]
    command = info.get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    details = []
    if command:
        details.append(f"`{command}`")
    if isinstance(info.get("started_at"), (int, float)):
        details.append("started " + time.strftime("%Y-%m-%d %H:%M:%S",
                                                  time.localtime(info["started_at"])))
    return parts[0] + (f" ({', '.join(details)})" if details else "")


class RunLock:
    """The held lock of one run directory (an open, flock'ed file descriptor)."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, path: Path, command: list[str] | str | None = None,
                what: str = "run") -> RunLock:
        """Take the lock or raise JobRunning naming the job that holds it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = read_holder(path)
            raise JobRunning(f"{path.parent}: a job is already running in this {what}: "
                             f"{describe_holder(holder)}; wait for it to finish or stop it "
                             "first") from None
        lock = cls(path, fd)
        lock.write_holder(ProcessId.current(), command)
        return lock

    @classmethod
    def inherited(cls, path: Path) -> RunLock | None:
        """The lock passed down by our launcher ($O1PRUNER_LOCK_FD), if it is this run's."""
        raw = os.environ.get(FD_ENV, "")
        if not raw.isdigit():
            return None
        fd = int(raw)
        try:
            here, ours = os.fstat(fd), os.stat(path)
        except OSError:
            return None
        if (here.st_dev, here.st_ino) != (ours.st_dev, ours.st_ino):
            return None
        try:  # the same open file already holds it: this succeeds at once
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None
        os.set_inheritable(fd, False)
        return cls(path, fd)

    @classmethod
    def hold(cls, path: Path, command: list[str] | str | None = None,
             what: str = "run") -> RunLock:
        """The lock our launcher passed down, else a newly acquired one."""
        return cls.inherited(path) or cls.acquire(path, command, what)

    def write_holder(self, proc: ProcessId, command: list[str] | str | None) -> None:
        """Record who holds the lock (read by a refused second launch)."""
        info = {**proc.to_dict(), "command": command or sys.argv, "started_at": time.time()}
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def child_env(self) -> dict[str, str]:
        """Environment for a child process started with `pass_fds=(lock.fd,)`."""
        return {FD_ENV: str(self.fd)}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_lock_file(path: Path) -> int:
    """The lock file opened for writing, never through a symbolic link (O_NOFOLLOW): the
    holder record written into it truncates it, and must not truncate a link's target."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP or path.is_symlink():
            raise UserError(f"{path}: the run's .lock is a symbolic link; a lock file is "
                            "written, so it is refused: remove the link (rm "
                            f"{path}) and start again") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{path}: the run's .lock is not a regular file; remove it and start "
                        "again")
    return fd


def read_holder(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}
