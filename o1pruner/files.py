"""Crash-safe files: atomic replacement and append-only JSON lines.

Two ways to write, so a crash, a stop or `kill -9` loses at most the record in flight:
- **atomic**: write a temporary file in the same folder, fsync it, rename it over the
  target, fsync the folder. Readers see the old file or the new one, never half of one.
- **append-only JSONL**: one JSON object a line, each write flushed (and fsynced).

The torn-tail rule, the same for every JSONL file (pre-samples, reference log-probs,
evaluation generations, events): a last line without its newline is a write that was cut
off. Readers skip it; a writer that reopens the file cuts it first. A *complete* line that
is not valid JSON was damaged by something else: it is reported with the file, the line
number and what to do (`CorruptFileError`), never skipped silently.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError

logger = logging.getLogger(__name__)


class CorruptFileError(UserError):
    """A file o1pruner wrote can no longer be read; the message names file, line and fix."""


# ------------------------------------------------------------------------------ atomic
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not sync folders; the rename itself is still atomic
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old or the new file, never half of one,
    and the new one survives a power cut once this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON value in `path`, or `default` when the file is missing or unreadable
    (use `load_json` where a damaged file must be reported)."""
    try:
        return load_json(path)
    except FileNotFoundError:
        return default
    except CorruptFileError as err:
        logger.warning("%s", err)
        return default


def load_json(path: Path) -> Any:
    """The JSON value in `path`. FileNotFoundError if it is missing; CorruptFileError
    (naming the file and the problem) if it is not UTF-8 JSON."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise CorruptFileError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CorruptFileError(f"{path}: not UTF-8 text (byte {err.start}); the file is "
                               "damaged") from None
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"{path}: not valid JSON (line {err.lineno}, column "
                               f"{err.colno}: {err.msg})") from None
    except (ValueError, RecursionError) as err:  # a 5,000-digit number, nesting too deep
        raise CorruptFileError(f"{path}: not usable JSON ({_short_reason(err)})") from None


@contextmanager
def locked_file(path: Path, waiting: str | None = None) -> Iterator[None]:
    """Exclusive flock on `path` (created if needed) for the body: other processes taking
    it wait (after `waiting` is logged, if given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if waiting:
                logger.info("%s", waiting)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def folder_lock(folder: Path, waiting: str | None = None) -> AbstractContextManager[None]:
    """Exclusive lock on a shared folder (a `.lock` file in it), so two jobs never append
    to the same shared files at once: the second waits."""
    return locked_file(folder / ".lock", waiting)


# ------------------------------------------------------------------------ JSON lines
class JsonlWriter:
    """Append-only JSON-lines file; each batch of lines is flushed (and fsynced)."""

    def __init__(self, path: Path, fsync: bool = True):
        path.parent.mkdir(parents=True, exist_ok=True)
        drop_torn_tail(path)
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


def append_jsonl(path: Path, record: dict[str, Any], fsync: bool = False) -> None:
    """Append one record (opens and closes the file: for occasional writers such as events)."""
    with JsonlWriter(path, fsync=fsync) as out:
        out.write(record)


def drop_torn_tail(path: Path) -> None:
    """Cut an unterminated last line (a write killed mid-line) so appends stay valid JSONL."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        # read backwards in blocks until the last newline: the file may be large
        pos, block = size, 1 << 16
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                cut = start + nl + 1
                break
            pos = start
        else:
            cut = 0
        fh.truncate(cut)
    logger.warning("%s: dropped a torn last line (%d bytes)", path, size - cut)


def _short_reason(err: BaseException) -> str:
    """Why json.loads refused a text that parses: a number too long, nesting too deep."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).split(";")[0]


def _decode_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError, JSONDecodeError too
        reason = err.reason if isinstance(err, UnicodeDecodeError) else \
            err.msg if isinstance(err, json.JSONDecodeError) else _short_reason(err)
        raise CorruptFileError(
            f"{path}, line {number}: not a valid JSON record ({reason}). The line was "
            "damaged after it was written; delete that line (or the whole file, to compute "
            "it again) and re-run") from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"{path}, line {number}: expected a JSON object, got "
                               f"{type(value).__name__}; delete that line and re-run")
    return value


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file (none if it does not exist); a torn last line is skipped, a
    damaged complete line raises CorruptFileError naming the file and line."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                break  # torn last line
            if line.strip():
                yield _decode_line(path, number, line)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file ([] if it does not exist); see iter_jsonl."""
    return list(iter_jsonl(path))


class JsonlTail:
    """Reads only what was appended to a JSONL file since the last call (by byte offset).

    For live views: a damaged line is skipped with a warning (counted in `skipped`), so one
    bad line never stops a page from updating.
    """

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.lines = 0
        self.skipped = 0

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in chunk[:end].split(b"\n")[:-1]:
            self.lines += 1
            if not line.strip():
                continue
            try:
                out.append(_decode_line(self.path, self.lines, line))
            except CorruptFileError as err:
                self.skipped += 1
                logger.warning("%s", err)
        return out
