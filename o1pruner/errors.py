"""Errors caused by the user's input (a file, a row, a model name), shown without traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: the message names the field, file or line, and what was
    expected. The CLI prints it as one line and exits 2."""


class DataError(UserError):
    """A data file or row that cannot be used (names the file and line)."""


def explain_failure(err: BaseException) -> str | None:
    """One message for a failure on the user's side that is not a UserError (running out
    of memory), or None."""
    name = type(err).__name__
    if isinstance(err, MemoryError) or name == "OutOfMemoryError":
        where = "GPU" if name == "OutOfMemoryError" else "machine (RAM)"
        detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        return (f"out of memory on the {where}{': ' + detail if detail else ''}. Lower "
                "train.batch_size or train.max_length (training), presample.batch_size, "
                "eval.batch_size or max_new_tokens (generation); or turn on "
                "train.gradient_checkpointing, use train.finetuning lora/freeze, DeepSpeed "
                "offload, or a smaller model")
    return None
