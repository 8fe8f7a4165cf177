"""Numbers for people: binary byte units and compact counts, one spelling everywhere."""

from __future__ import annotations


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def fmt_count(n: float) -> str:
    return f"{n:,.0f}" if n < 1e6 else f"{n:.4g}"
