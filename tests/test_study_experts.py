"""studies/experts.py at a toy size: more experts add total parameters and checkpoint bytes at
the compute per token of one expert, and each variant's memory is predicted to the byte."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

STUDY = Path(__file__).resolve().parent.parent / "studies" / "experts.py"


@pytest.fixture(scope="module")
def experts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("experts_study", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(experts: ModuleType) -> dict[str, dict]:
    """One, eight, and eight half-width top-2 experts, two steps each (the study sets one thread
    for its timings; the test's process gets its own back)."""
    threads = torch.get_num_threads()
    args = experts.parse(["--steps", "2", "--seeds", "1", "--budget", "0.01"])
    variants = tuple(experts.VARIANTS[i] for i in (0, 3, 4))
    try:
        return {r["variant"]: r for r in experts.study(args, variants)}
    finally:
        torch.set_num_threads(threads)


def test_experts_add_total_parameters_and_only_the_routers_active_ones(experts, rows) -> None:
    one, eight, top2 = (rows[label] for label, *_ in (experts.VARIANTS[i] for i in (0, 3, 4)))
    router = experts.SHAPE["n_layer"] * experts.SHAPE["d_model"] * (8 - 1)
    assert eight["active params"] - one["active params"] == router
    assert top2["active params"] == eight["active params"]  # two half-width experts: one's worth
    assert eight["train FLOPs/token"] - one["train FLOPs/token"] == 6 * router
    assert top2["train FLOPs/token"] == eight["train FLOPs/token"]
    expert = 3 * experts.SHAPE["d_model"] * experts.D_EXPERT
    assert (
        eight["total params"] - one["total params"]
        == router + experts.SHAPE["n_layer"] * 7 * expert
    )
    assert eight["checkpoint KiB"] > top2["checkpoint KiB"] > one["checkpoint KiB"]


def test_each_variant_trains_on_text_and_its_peak_is_predicted_to_the_byte(rows) -> None:
    for r in rows.values():
        assert r["peak MiB (meter)"] == r["peak MiB (predicted)"]
        assert r["final loss"] > 0 and r["held-out loss"] > 0 and r["step ms"] > 0
