"""How the command line fails: one sentence, exit status 2, no traceback."""

from __future__ import annotations

from talkinghead.errors import first_line  # noqa: F401 - the commands' one-line messages


class CLIError(Exception):
    """A user-facing error: printed as one sentence, exit status 2, no traceback."""

