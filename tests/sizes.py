"""Targets for sizing tests."""


def log_grid(low_exp: int, high_exp: int, n: int) -> list[float]:
    """``n`` targets evenly spaced in log10 from ``10**low_exp`` to ``10**high_exp``."""
    return [10 ** (low_exp + (high_exp - low_exp) * i / (n - 1)) for i in range(n)]
