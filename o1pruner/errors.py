"""Errors caused by the user's input (a file, a row, a model name), shown without traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: the message names the field, file or line, and what was
    expected. The CLI prints it as one line and exits 2."""


class DataError(UserError):
    """A data file or row that cannot be used (names the file and line)."""
