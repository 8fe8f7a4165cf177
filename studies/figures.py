"""Where the studies' figures go, and how they are finished and written."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def write(fig: Figure, title: str, name: str) -> None:
    """Title, lay out and save ``fig`` as ``docs/figures/NAME``, and say where it went."""
    fig.suptitle(title)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / name, dpi=120)
    print(f"wrote {FIGURES / name}")
