"""Turning an exception into the one line a user sees."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its class name when it has none).

    Library errors are one sentence already; HTTP errors from huggingface_hub and torch.compile's
    errors run to many lines (URLs, stacks, hints), and a CLI error or a log warning must stay one line.
    """
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
