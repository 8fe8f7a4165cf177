"""Parameter counts as people type them (``1e6``, ``125M``, ranges) and as case ids spell them."""

from __future__ import annotations

import math
import re

from scaling_bench.core.errors import UserError

_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
#: More sizes than this in one ``--sizes`` is a typo (``x1.0001``), not a study: refused before
#: anything is generated, let alone planned.
MAX_SIZES = 1000


def format_size(n: float) -> str:
    """1e5 -> '1e5', 3e7 -> '3e7', 1.5e6 -> '1.5e6': short, and the same for the same size."""
    exponent = math.floor(math.log10(n))
    mantissa = round(n / 10**exponent, 3)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:g}e{exponent}"


def parse_size(text: str, what: str = "--sizes") -> float:
    """A parameter count: ``1e6``, ``125M``, ``1.3B``."""
    raw = str(text).strip()
    scale = _SUFFIXES.get(raw[-1:].lower(), 1.0)
    try:
        value = float(raw[:-1] if scale != 1.0 else raw) * scale
    except ValueError:
        raise UserError(f"{what}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{what}: {raw!r} is not a positive parameter count")
    return value


def _range(part: str, what: str) -> list[float]:
    bits = part.split(":")
    if len(bits) != 3:
        raise UserError(f"{what} {part!r}: a range is START:STOP:xFACTOR or START:STOP:POINTS")
    start, stop, step = parse_size(bits[0], what), parse_size(bits[1], what), bits[2].strip()
    if stop < start:
        raise UserError(f"{what} {part!r}: STOP is below START")
    if step.startswith("x"):
        factor = parse_size(step[1:], what)
        if factor <= 1:
            raise UserError(f"{what} {part!r}: the factor must be above 1")
        count = math.floor(math.log(stop / start, factor) + 1e-9) + 1
    else:
        if not re.fullmatch(r"\d+", step) or int(step) < 1:
            raise UserError(f"{what} {part!r}: POINTS must be a positive whole number")
        count = int(step)
    if count > MAX_SIZES:
        raise UserError(f"{what} {part!r}: {count:,} sizes; at most {MAX_SIZES:,} in one range")
    if step.startswith("x"):
        return [start * factor**i for i in range(count)]
    ratio = (stop / start) ** (1 / (count - 1)) if count > 1 else 1.0
    return [start * ratio**i for i in range(count)]


def parse_sizes(text: str, what: str = "--sizes") -> tuple[float, ...]:
    """``1e5,1e6`` or a geometric range ``1e5:1e8:x10`` (factor) or ``1e5:1e8:7`` (points)."""
    sizes: list[float] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise UserError(f"{what} {text!r}: empty item")
        sizes.extend(_range(part, what) if ":" in part else [parse_size(part, what)])
    return tuple(sorted({float(f"{s:.6g}") for s in sizes}))
