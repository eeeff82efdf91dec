"""A job's options: JSON from the client -> the family's frozen options dataclass, checked.

The fields, their types and defaults come from the family's ``options_class`` (``GenerateOptions``
for DAWN), so a new family is served without touching this module. Only JSON-able scalars are
accepted (bool, int, float, str, None), unknown names are rejected, and the knobs that cost the
server time or memory (``num_steps``, ``decode_batch``, ``compile``) are bounded by ``Limits``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any

from talkinghead.serve.config import Limits
from talkinghead.serve.uploads import UploadError

__all__ = ["describe_options", "parse_options"]

SCALARS = (bool, int, float, str, type(None))


def parse_options(
    text: str | None, options_class: type, limits: Limits, defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The client's options JSON merged over ``defaults``, as a plain dict that builds
    ``options_class(**dict)``.

    Raises:
        UploadError: 422 with one sentence naming the bad field.
    """
    if text is not None and len(text.encode()) > limits.max_options_bytes:
        raise UploadError(413, f"the options JSON is larger than {limits.max_options_bytes} bytes")
    try:
        given = json.loads(text) if text and text.strip() else {}
    except json.JSONDecodeError as err:
        raise UploadError(
            422, f'options is not valid JSON ({err.msg}); send an object such as {{"seed": 0}}'
        ) from None
    if not isinstance(given, dict):
        raise UploadError(422, 'options must be a JSON object such as {"seed": 0}')
    fields = {f.name: f for f in dataclasses.fields(options_class)}
    hints = typing.get_type_hints(options_class)
    merged = dict(defaults or {})
    for name, value in given.items():
        if name not in fields:
            raise UploadError(422, f"unknown option {name!r}; known options: {', '.join(fields)}")
        merged[name] = _coerce(name, value, hints[name])
    _bound(merged, limits)
    try:
        options_class(**merged)
    except (TypeError, ValueError) as err:
        raise UploadError(422, f"the options are invalid: {err}") from None
    return merged


def _coerce(name: str, value: Any, hint: Any) -> Any:
    allowed = _allowed_types(hint)
    if isinstance(value, bool) and bool not in allowed:
        raise UploadError(422, f"option {name!r} must be {_describe(allowed)}, not true/false")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and int not in allowed
        and float in allowed
    ):
        return float(value)
    if not isinstance(value, SCALARS) or not isinstance(value, tuple(allowed)):
        raise UploadError(422, f"option {name!r} must be {_describe(allowed)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UploadError(422, f"option {name!r} must be a finite number")
    return value


def _allowed_types(hint: Any) -> list[type]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return [t for arg in typing.get_args(hint) for t in _allowed_types(arg)]
    if typing.get_origin(hint) is typing.Literal:
        return [str]
    return [hint] if isinstance(hint, type) and hint in SCALARS else [str]


def _describe(allowed: list[type]) -> str:
    names = {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        type(None): "null",
    }
    return " or ".join(names[t] for t in allowed)


def _bound(options: dict[str, Any], limits: Limits) -> None:
    steps = options.get("num_steps")
    if isinstance(steps, int) and not 1 <= steps <= limits.max_steps:
        raise UploadError(422, f"num_steps must be between 1 and {limits.max_steps} on this server")
    batch = options.get("decode_batch")
    if isinstance(batch, int) and not 1 <= batch <= limits.max_decode_batch:
        raise UploadError(
            422, f"decode_batch must be between 1 and {limits.max_decode_batch} on this server"
        )
    if options.get("compile"):
        raise UploadError(422, "compile is not available on this server; leave it out")


def describe_options(options_class: type, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """name -> default of every option a client may set (for ``GET /v1/models``)."""
    out = {}
    for f in dataclasses.fields(options_class):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = None
        out[f.name] = (defaults or {}).get(f.name, value)
    return {k: v for k, v in out.items() if isinstance(v, SCALARS) and k != "compile"}
