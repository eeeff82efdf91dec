"""How the command line fails: one sentence, exit status 2, no traceback."""

from __future__ import annotations


class CLIError(Exception):
    """A user-facing error: printed as one sentence, exit status 2, no traceback."""


def first_line(err: BaseException) -> str:
    """The first line of an error's message (library errors are one sentence already; HTTP errors
    from huggingface_hub carry extra lines)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
