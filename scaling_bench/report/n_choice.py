"""Fitted exponents against both parameter counts, side by side.

A sparse family's total N is what its memory and checkpoints hold, its active N what one token
touches and its FLOPs follow; which one a figure scales with is the question, so the exponent
table shows each figure's fit against the total N and, right after it, against the active N
(``analysis.fits.N_CHOICES``), each row saying which. Dense series have the first only.
"""

from __future__ import annotations

from collections.abc import Sequence

from scaling_bench.analysis.fits import N_CHOICES, ScalingFit


def beside_each_other(
    total: Sequence[ScalingFit], active: Sequence[ScalingFit]
) -> list[ScalingFit]:
    """Each fit against the total N, followed by the same series' and figure's against the
    active N where there is one."""
    by_key = {(f.series, f.quantity.name): f for f in active}
    pairs = ((f, by_key.get((f.series, f.quantity.name))) for f in total)
    return [f for pair in pairs for f in pair if f is not None]


def label(fit: ScalingFit) -> str:
    """The figure's label, with the N it is fitted against where that is not the total."""
    if fit.against == "params":
        return fit.quantity.label
    return f"{fit.quantity.label} (vs {N_CHOICES[fit.against]})"
