"""Unpaired ``compare``: a move over one process a side must clear the run-to-run drift, and a
comparison of two kernel ISAs (two machines here) names what differs first."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import synthetic
import torch
from scipy import stats
from test_compare import compare, measure_drift

from scaling_bench.analysis.unpaired import DRIFT_NOTE, Drift
from scaling_bench.frontends import check
from scaling_bench.frontends.cli import main
from scaling_bench.hardware import drift as hardware_drift
from scaling_bench.hardware.drift import recorded_drift
from scaling_bench.hardware.peaks import fingerprint

TRAIN = ("--metric", "train_step_s")


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test's drifts in a cache of its own (a refresh keeps the larger figure)."""
    monkeypatch.setenv("SCALING_BENCH_CACHE_DIR", str(tmp_path / "cache"))


def runs(tmp_path: Path, slowdown: float, env: dict | None = None, **kwargs) -> tuple[Path, Path]:
    """Two single-process runs whose samples agree to 0.2%: any move is plain to the samples'
    own test, so only the drift decides."""
    base = synthetic.write(tmp_path / "base", synthetic.run(seed=0, noise=0.002, **kwargs))
    current = synthetic.run(seed=1, noise=0.002, slowdown=slowdown, env=env, **kwargs)
    return base, synthetic.write(tmp_path / "cur", current)


def test_the_bound_is_the_t_prediction_interval_of_two_runs_log_ratio() -> None:
    drift = Drift(0.02, 4, "measured")
    expected = math.expm1(stats.t.ppf(0.995, 4) * math.sqrt(2) * 0.02)
    assert drift.bound(0.01) == pytest.approx(expected)
    assert drift.bound(0.01) == pytest.approx(0.139, abs=0.001)
    assert Drift(0.05, None, "the floor").bound(0.01) == pytest.approx(0.20, abs=0.002)


def test_a_rerun_within_the_measured_drift_is_inconclusive_exits_0_and_names_ab(capsys, tmp_path):
    measure_drift(synthetic.ENV, 0.06)  # a rerun moves up to ±48%
    base, current = runs(tmp_path, 1.3)
    code, report, _ = compare(capsys, base, current, *TRAIN)
    assert code == 0 and not report["failed_gate"]
    assert {r["verdict"] for r in report["rows"]} == {"inconclusive"}
    assert all(r["p_value"] < 0.01 and r["note"].startswith(DRIFT_NOTE) for r in report["rows"])
    assert report["drift"]["sigma"] == pytest.approx(0.06)
    assert main(["compare", str(base), str(current), *TRAIN]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("gate inconclusive: 6 moves beyond 5% within run-to-run drift")
    assert "σ 6.0%, measured by scaling-bench check" in last
    assert "scaling-bench ab" in last and "--processes 5" in last


def test_a_move_beyond_the_measured_drift_regresses(capsys, tmp_path) -> None:
    measure_drift(synthetic.ENV, 0.06)  # ±48%
    code, report, _ = compare(capsys, *runs(tmp_path, 1.7), *TRAIN)
    assert code == 1
    assert {r["verdict"] for r in report["rows"]} == {"regressed"}


def test_without_a_measured_drift_a_2x_slowdown_still_fails_and_15_percent_does_not(
    capsys, tmp_path
) -> None:
    code, report, _ = compare(capsys, *runs(tmp_path / "a", 2.0), *TRAIN)
    assert code == 1 and report["drift"]["source"] == "the floor; no scaling-bench check here"
    code, report, _ = compare(capsys, *runs(tmp_path / "b", 1.15), *TRAIN)
    assert code == 0
    assert all("σ 5.0%, the floor" in r["note"] for r in report["rows"])


def test_a_measured_drift_below_the_floor_is_held_to_the_floor(capsys, tmp_path) -> None:
    """Fresh processes seconds apart see less drift than runs minutes apart (module docstring
    of ``analysis.unpaired``): a 15% move stays inconclusive on a machine that measured 1%."""
    measure_drift(synthetic.ENV, 0.01)
    code, report, _ = compare(capsys, *runs(tmp_path, 1.15), *TRAIN)
    assert code == 0 and report["drift"]["source"] == "the floor; check measured 1.0%"


def test_the_larger_drift_of_the_two_machines_decides(capsys, tmp_path) -> None:
    other = synthetic.ENV | {"cpu_model": "Noisy CPU"}
    measure_drift(synthetic.ENV, 0.06)  # ±48%
    measure_drift(other, 0.1)  # ±92%
    code, report, _ = compare(capsys, *runs(tmp_path, 1.6, env=other), *TRAIN)
    assert code == 0 and report["drift"]["sigma"] == pytest.approx(0.1)


def test_one_sides_process_values_give_the_metrics_own_drift(capsys, tmp_path) -> None:
    """BASE ran in five processes whose values scatter by ~6% (a rerun moves up to ±51%);
    CURRENT in one: the samples see a 30% move, beyond the floor's ±20% but within that."""
    base, current = runs(tmp_path, 1.3)
    records = synthetic.run(seed=0, noise=0.002)
    for record in records:
        metric = record["metrics"]["train_step_s"]
        metric["process_values"] = [metric["value"] * f for f in (0.92, 1.0, 1.08, 0.96, 1.04)]
    spread = synthetic.write(tmp_path / "spread", records)
    code, report, _ = compare(capsys, spread, current, *TRAIN)
    assert code == 0
    assert all("5 processes' values" in r["note"] for r in report["rows"])
    assert compare(capsys, base, current, *TRAIN)[0] == 1  # the floor alone: flagged


def test_a_paired_ab_is_not_held_to_the_drift(capsys, tmp_path) -> None:
    measure_drift(synthetic.ENV, 0.2)  # a drift that would hide a 2x slowdown unpaired
    sides = []
    for name, slowdown in (("b", 1.0), ("c", 1.15)):
        records = synthetic.run(seed=0, noise=0.002, slowdown=slowdown)
        for r in records:
            metric = r["metrics"]["train_step_s"]
            metric["process_values"] = [metric["value"] * f for f in (0.95, 1.0, 1.05, 1.1, 0.9)]
        sides.append(synthetic.write(tmp_path / name, records))
    code, report, _ = compare(capsys, *sides, *TRAIN, "--paired")
    assert code == 1 and report["drift_line"] is None


ISA = {"cpu_capability": "AVX512", "kernel_key": "k512"}  # no ONEDNN_MAX_CPU_ISA cap
AVX2 = {"cpu_capability": "AVX2", "onednn_max_cpu_isa": "AVX2", "kernel_key": "k2"}


def test_a_native_run_against_an_avx2_run_names_the_isa_first_then_ratios_per_family_and_plots(
    capsys, tmp_path
) -> None:
    native = synthetic.run(seed=0, env=synthetic.ENV | ISA, families=("mlp", "$\\nope$"))
    base = synthetic.write(tmp_path / "native", native)
    env = synthetic.ENV | AVX2 | {"torch_threads": 1}
    slower = synthetic.run(seed=1, slowdown=1.5, env=env, families=("mlp", "$\\nope$"))
    current = synthetic.write(tmp_path / "avx2", slower)
    plot = tmp_path / "isa.png"
    assert main(["compare", str(base), str(current), "--plot", str(plot)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "note: the runs differ in cpu_capability AVX512 → AVX2",
        "note: the runs differ in onednn_max_cpu_isa unset → AVX2",
        "note: the runs differ in kernel_key k512 → k2",
    ]
    assert "Geometric-mean ratio CURRENT/BASE per family" in " ".join(" ".join(lines).split())
    assert plot.read_bytes().startswith(b"\x89PNG")
    report = compare(capsys, base, current)[1]
    for family in ("mlp", "$\\nope$"):  # a plugin's family named like mathtext plots as typed
        assert report["by_family"][family]["train_step_s"]["geomean_ratio"] == pytest.approx(
            1.5, rel=0.02
        )


def test_check_caches_the_drift_that_compare_then_reads(monkeypatch) -> None:
    monkeypatch.setattr(hardware_drift, "measure_drift", lambda: 0.01)
    (result,) = check.check_drift(torch.device("cpu"))
    assert (result.status, result.figures["sigma"]) == (check.PASS, 0.01)
    assert "σ 1.0%" in result.summary and "±20% (the floor; check measured 1.0%)" in result.summary
    assert recorded_drift(fingerprint()) == 0.01


def test_check_warns_where_the_drift_would_hide_a_2x_slowdown(monkeypatch) -> None:
    monkeypatch.setattr(hardware_drift, "measure_drift", lambda: 0.15)
    (result,) = check.check_drift(torch.device("cpu"))
    assert result.status == check.WARN


def test_the_drift_is_the_robust_spread_of_fresh_processes_logged_medians(monkeypatch) -> None:
    medians = iter(["0.010\n", "0.011\n", "0.0105\n"])

    class Done:
        def __init__(self, *args, **kwargs) -> None:
            self.stdout = next(medians)

    monkeypatch.setattr(hardware_drift.subprocess, "run", Done)
    logs = [math.log(x) for x in (0.010, 0.011, 0.0105)]
    expected = stats.median_abs_deviation(logs, scale="normal")
    assert hardware_drift.measure_drift(3) == pytest.approx(expected)


def test_five_processes_a_side_that_agree_closely_are_still_held_to_the_drift(capsys, tmp_path):
    """Runs minutes apart drift as a whole: five tight processes a side 10% apart pass the test
    over their values (p 0.008) but not the drift's ±20%; 50% apart they regress."""
    sides = {}
    for name, slowdown in (("b", 1.0), ("c", 1.1), ("slow", 1.5)):
        records = synthetic.run(seed=0, noise=0.002, slowdown=slowdown)
        for r in records:
            metric = r["metrics"]["train_step_s"]
            metric["process_values"] = [metric["value"] * (1 + i / 1000) for i in range(5)]
        sides[name] = synthetic.write(tmp_path / name, records)
    code, report, _ = compare(capsys, sides["b"], sides["c"], *TRAIN)
    assert code == 0 and not report["within_process"]
    assert all(r["p_value"] < 0.01 and r["note"].startswith(DRIFT_NOTE) for r in report["rows"])
    assert compare(capsys, sides["b"], sides["slow"], *TRAIN)[0] == 1


def test_one_outlying_process_does_not_set_the_machines_drift() -> None:
    """Five fresh processes, one beside a passing job: the drift stays the four's scatter."""
    quiet = [1.00, 1.01, 0.99, 1.00]
    assert hardware_drift.log_spread([*quiet, 3.0]) < 0.02
    assert hardware_drift.log_spread([1.0] * 5) > 0
