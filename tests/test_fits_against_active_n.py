"""A sparse family scales against two counts: its figures are fitted against the total N and the
active N side by side, and its time is held to the active path's FLOPs."""

from __future__ import annotations

import random

import pytest
import synthetic

from scaling_bench.analysis.fits import scaling_fits
from scaling_bench.analysis.theory import theory_checks
from scaling_bench.config.case import Case
from scaling_bench.core.stats import scaled, single, summarize
from scaling_bench.models import moe
from scaling_bench.predict.plan import plan_for
from scaling_bench.report.tables import Findings

SIZES = (1e5, 1e6, 1e7, 1e8)
#: The synthetic moe's active count grows as total^0.8 (experts added faster than width).
ACTIVE_POWER = 0.8


def sparse_record(target: float, rng: random.Random) -> dict:
    """A moe case whose time is exactly ∝ its active FLOPs and whose bytes are ∝ its total N."""
    r = synthetic.record("moe", target, rng=rng)
    active = round(r["params"] ** ACTIVE_POWER)
    r["active_params"] = active
    for workload, per_param in (("forward", 2), ("train", 6)):
        flops = per_param * active
        r["predicted"][f"{workload}_flops_per_sample"] = single(flops, "FLOP")
        step = summarize(synthetic.timing(flops * synthetic.BATCH * synthetic.S_PER_FLOP, 0.01,
                                          rng), "s")  # fmt: skip
        r["metrics"][f"{workload}_step_s"] = step
        r["metrics"][f"{workload}_samples_per_s"] = scaled(
            step, synthetic.BATCH, "samples/s", invert=True
        )
    return r


@pytest.fixture
def records() -> list[dict]:
    rng = random.Random(0)
    dense = [synthetic.record("mlp", n, rng=rng) for n in SIZES]
    return dense + [sparse_record(n, rng) for n in SIZES]


def test_time_follows_the_active_count_and_bytes_the_total(records) -> None:
    total = {f.quantity.name: f for f in scaling_fits(records) if f.series == "moe-fp32-cpu"}
    active = {f.quantity.name: f for f in scaling_fits(records, against="active_params")}
    assert total["train_sample_s"].fit.exponent == pytest.approx(ACTIVE_POWER, abs=0.02)
    assert total["train_sample_s"].theory_exponent == pytest.approx(ACTIVE_POWER, abs=1e-3)
    assert active["train_sample_s"].fit.exponent == pytest.approx(1.0, abs=0.02)
    assert active["train_sample_s"].theory_exponent == pytest.approx(1.0, abs=1e-3)
    assert total["checkpoint_bytes"].fit.exponent == pytest.approx(1.0, abs=0.01)
    assert active["checkpoint_bytes"].fit.exponent == pytest.approx(1 / ACTIVE_POWER, abs=0.01)
    assert {f.against for f in active.values()} == {"active_params"}


def test_a_dense_series_is_fitted_against_its_total_count_only(records) -> None:
    active = scaling_fits(records, against="active_params")
    assert active and {f.series for f in active} == {"moe-fp32-cpu"}
    assert "mlp-fp32-cpu" in {f.series for f in scaling_fits(records)}


def test_the_exponent_table_shows_each_moe_figure_against_both_counts_side_by_side(
    records,
) -> None:
    rows = Findings(records, "synthetic").fit_rows
    moe_rows = [(series, quantity) for series, quantity, *_ in rows if series == "moe-fp32-cpu"]
    labels = [quantity for _, quantity in moe_rows]
    assert len(labels) == 2 * len([q for q in labels if "(vs active N)" not in q])
    for plain, against_active in zip(labels[::2], labels[1::2], strict=True):
        assert against_active == f"{plain} (vs active N)"
    assert not any("active" in q for series, q, *_ in rows if series == "mlp-fp32-cpu")


def test_time_held_to_the_active_flops_flags_no_sparse_case(records) -> None:
    flagged = [c for c in theory_checks(records) if c.flagged and c.series == "moe-fp32-cpu"]
    assert flagged == []


def test_the_plan_of_a_moe_case_counts_the_flops_of_the_active_path_not_the_total() -> None:
    """What the theory check divides by: the planned FLOPs, the routed top_k experts' only."""
    case = Case.from_dict({"family": "moe", "target_params": 1e6})
    plan = plan_for(case)
    assert plan.train_flops_per_sample == moe.train_flops_per_sample(plan.config)
    assert plan.active_params < plan.params
    dense_guess = 6 * plan.params * plan.tokens_per_sample
    assert plan.train_flops_per_sample < dense_guess
