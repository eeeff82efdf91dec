"""Command-line flags from dataclass fields: every default and help text lives in one place.

A field's trailing ``# comment`` in its class body is its help text (as LivePortrait derives its CLI
from its config dataclasses with tyro). ``int``/``float``/``str`` fields (optionally ``| None``) become
``--field-name VALUE``; a ``bool`` that defaults to False becomes ``--field-name``, one that defaults to
True becomes ``--no-field-name``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from collections.abc import Iterable
from functools import cache
from typing import Any

_SCALARS = {int: int, float: float, str: str}
_FIELD_LINE = re.compile(r"^    (\w+)\s*:[^#]*(?:#\s*(.*))?$")
_COMMENT_LINE = re.compile(r"^    #\s?(.*)$")


@cache
def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment: the one on its line, else the comment lines just above it."""
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        if match := _COMMENT_LINE.match(line):
            above.append(match.group(1))
        elif match := _FIELD_LINE.match(line):
            comments[match.group(1)] = (match.group(2) or " ".join(above)).strip()
            above = []
        else:
            above = []
    return comments


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _scalar_type(annotation: Any) -> type | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if len(args) == 1 else annotation
    return _SCALARS.get(base)


def add_dataclass_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    classes: Iterable[type],
    *,
    skip: Iterable[str] = (),
    only: Iterable[str] | None = None,
    aliases: dict[str, tuple[str, ...]] | None = None,
) -> list[str]:
    """Add a flag per field of ``classes`` (the first class that has a field gives its help).

    A class may list allowed values in a ``CHOICES`` class attribute (field -> names, taken from a
    registry such as the samplers). A field several classes share accepts the values any of them
    lists (each family's pipeline checks its own).

    Args:
        skip: fields the command sets otherwise.
        only: the fields that get a flag (default: every scalar field not skipped).
        aliases: field -> extra flag names kept for compatibility (``{"num_steps": ("--steps",)}``).
    Returns:
        The field names that got a flag (``dest`` is the field name; unset flags stay ``None``).
    """
    aliases, done = aliases or {}, set(skip)
    wanted = set(only) if only is not None else None
    classes = list(classes)
    choices = _merged_choices(classes)
    added: list[str] = []
    for cls in classes:
        hints, comments = typing.get_type_hints(cls), field_comments(cls)
        for f in dataclasses.fields(cls):
            if f.name in done or not f.init or (wanted is not None and f.name not in wanted):
                continue
            done.add(f.name)
            default = f.default if f.default is not dataclasses.MISSING else None
            help_text = comments.get(f.name, "")
            if hints[f.name] is bool:
                name = flag_name(f.name) if not default else "--no-" + f.name.replace("_", "-")
                parser.add_argument(
                    name,
                    dest=f.name,
                    action="store_const",
                    const=not default,
                    default=None,
                    help=f"turn off: {help_text}" if default else help_text,
                )
            else:
                kind = _scalar_type(hints[f.name])
                if kind is None:
                    continue  # tuples, nested configs: not flags
                allowed = choices.get(f.name)
                parser.add_argument(
                    flag_name(f.name),
                    *aliases.get(f.name, ()),
                    dest=f.name,
                    type=kind,
                    default=None,
                    choices=sorted(allowed) if allowed else None,
                    help=f"{help_text} (default: {default})" if help_text else None,
                )
            added.append(f.name)
    return added


def _merged_choices(classes: list[type]) -> dict[str, list[Any]]:
    """Field -> the values allowed by any class that lists them in ``CHOICES``."""
    merged: dict[str, list[Any]] = {}
    for cls in classes:
        for name, values in getattr(cls, "CHOICES", {}).items():
            known = merged.setdefault(name, [])
            known += [v for v in values if v not in known]
    return merged


def options_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of ``cls``: its defaults, replaced by the flags given on the command line."""
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.init and getattr(args, f.name, None) is not None
    }
    return cls(**{**given, **overrides})


def given_flags(args: argparse.Namespace, fields: Iterable[str]) -> list[str]:
    """The flags among ``fields`` that the user set."""
    return [flag_name(f) for f in fields if getattr(args, f, None) is not None]


THREADS_HELP = "CPU threads (default: $OMP_NUM_THREADS, else the CPUs this process may use)"


def add_process_flags(
    parser: argparse.ArgumentParser, *, reuse_memory: bool, threads_help: str = THREADS_HELP
) -> None:
    """``--threads`` of a command that computes, and whether its process keeps freed memory.

    ``reuse_memory``: the command's process ends with its work, so freed memory is kept for reuse
    (``talkinghead.allocator``); long-lived processes (the server) leave glibc's defaults.
    :func:`apply_process_flags` applies both before the command runs.
    """
    from talkinghead.threads import parse_threads

    parser.add_argument(
        "--threads", type=parse_threads, default=None, metavar="N", help=threads_help
    )
    parser.set_defaults(reuse_memory=reuse_memory)


def apply_process_flags(args: argparse.Namespace) -> None:
    """The thread and memory policy of a command that has :func:`add_process_flags`."""
    if "threads" not in args:
        return
    from talkinghead.allocator import reuse_freed_memory
    from talkinghead.threads import configure_threads

    configure_threads(args.threads)
    if args.reuse_memory:
        reuse_freed_memory()
