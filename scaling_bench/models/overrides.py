"""Parse ``--set key=value`` pairs against a config dataclass's own fields and types."""

from __future__ import annotations

import dataclasses
import types
import typing

from scaling_bench.core.errors import UserError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, text: str, kind: object) -> object:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", ""):
            return None
        (kind,) = (arg for arg in typing.get_args(kind) if arg is not type(None))
        return _convert(name, text, kind)
    if origin is tuple:
        (item, *_) = typing.get_args(kind)
        return tuple(_convert(name, part, item) for part in text.split(",") if part.strip())
    try:
        if kind is bool:
            low = text.lower()
            if low not in _TRUE | _FALSE:
                raise ValueError
            return low in _TRUE
        if kind is int:
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            return float(text)
    except ValueError:
        raise UserError(f"{name}={text!r}: not a valid {kind.__name__}") from None
    return text


def parse_overrides(config_cls: type, pairs: list[str]) -> dict[str, object]:
    """``["n_layer=12", "bias=false"]`` -> ``{"n_layer": 12, "bias": False}``, typed by field."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"{pair!r}: expected key=value")
        if key not in names:
            raise UserError(
                f"--set {key}: unknown field; {config_cls.__name__} has {', '.join(names)}"
            )
        out[key] = _convert(key, text.strip(), hints[key])
    return out
