"""Errors caused by the user's input (a file, a row, a model name), shown without traceback."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix: the message names the field, file or line, and what was
    expected. The CLI prints it as one line and exits 2."""


class DataError(UserError):
    """A data file or row that cannot be used (names the file and line)."""


def read_yaml_file(path: Path, what: str, error: type[UserError] = UserError) -> object:
    """Parse a YAML file with `yaml.safe_load`; a missing, unreadable or malformed file raises
    `error` naming the file, what it is (`what`, e.g. "prompt template") and the line."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or err
        raise error(f"{path}: malformed YAML in {what}{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read {what}: {err}") from None
