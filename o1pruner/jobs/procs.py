"""Process identity: a process is its pid *and* its start time.

A pid recorded in a file may, after the process ended, belong to another program: every
check and every signal here compares the kernel's start time (`/proc/<pid>/stat`, clock
ticks since boot) with the recorded one, so a reused pid is never believed or signalled.
This module is the project's one answer to "is it still alive?".
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PROC = Path("/proc")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    return text[text.rfind(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """Kernel start time of `pid` (clock ticks since boot), None if it does not exist."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def pid_alive(pid: Any, start: int | None = None) -> bool:
    """True if process `pid` runs (not a zombie) and, when `start` is given, is the process
    that started at that time (not another program that got the same pid)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    fields = _stat(pid)
    if fields is None:
        if PROC.joinpath("self", "stat").exists():
            return False
        try:  # no procfs (not Linux): a signal probe, without start-time check
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return start is None or len(fields) <= 19 or int(fields[19]) == int(start)


def group_members(pgid: int | None) -> list[int]:
    """Pids of the live (non-zombie) processes in process group `pgid`."""
    if not pgid or not PROC.is_dir():
        return []
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in "ZX":
                found.append(int(entry.name))
    return found


def group_alive(pgid: int | None, leader_start: int | None = None) -> bool:
    """True if a live process is in group `pgid` that belongs to the group whose leader
    started at `leader_start`. Linux never hands out a pid that is still some group's id, so
    a live process `pgid` with another start time means the original group is gone."""
    if not pgid:
        return False
    if leader_start is not None:
        now = start_time(pgid)
        if now is not None and now != int(leader_start):
            return False
    if not PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return bool(group_members(pgid))


def signal_pid(pid: int, start: int | None, sig: signal.Signals) -> bool:
    """Send `sig` to `pid` if it is still the process that started at `start`."""
    if not pid_alive(pid, start):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_group(pgid: int | None, leader_start: int | None, sig: signal.Signals) -> bool:
    """Send `sig` to process group `pgid` if it is still that group (see group_alive)."""
    if not group_alive(pgid, leader_start):
        return False
    try:
        os.killpg(int(pgid), sig)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True)
class ProcessId:
    """A pid with its start time and, when it leads one, its process group (whose id is
    then the pid itself), as recorded in job files."""

    pid: int
    start: int | None
    pgid: int | None = None

    @classmethod
    def current(cls) -> ProcessId:
        """This process; `pgid` only when it leads its process group. A process started
        inside someone else's group (a script's, a test runner's) must never have that
        group signalled on its behalf: then only its own pid is."""
        pid = os.getpid()
        return cls(pid, start_time(pid), pid if os.getpgid(0) == pid else None)

    @classmethod
    def from_dict(cls, data: Any) -> ProcessId | None:
        if not isinstance(data, dict):
            return None
        try:
            pid = int(data["pid"])
        except (KeyError, TypeError, ValueError):
            return None
        start, pgid = data.get("start"), data.get("pgid")
        return cls(pid, int(start) if isinstance(start, int) else None,
                   int(pgid) if isinstance(pgid, int) else None)

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "start": self.start, "pgid": self.pgid}

    def alive(self) -> bool:
        return pid_alive(self.pid, self.start)
