"""How the command line fails: one sentence, exit status 2, no traceback."""

from __future__ import annotations


class CLIError(Exception):
    """A user-facing error: printed as one sentence, exit status 2, no traceback."""

