"""The grid's cases as pytest-benchmark tests: ``pytest benchmarks`` (options: ``pytest --help``).

pytest-benchmark times and compares the step (``test_forward_step``, ``test_train_step``: seconds
per step, as ``train_step_s`` of ``scaling-bench run``) or, for checkpoint and convergence, the
whole workload once; every figure the workload records goes to ``extra_info``, in the record's
shape. The cases and fixtures come from ``scaling_bench.frontends.pytest_plugin``, the rest from
the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from scaling_bench.frontends import suites
from scaling_bench.workloads.base import get

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

    from scaling_bench.config.case import Case
    from scaling_bench.engine.execute import CaseSetup


def _require(case: Case, workload: str) -> None:
    if workload not in case.workloads:
        pytest.skip(f"{workload} is not among this grid's workloads")


def _time_step(benchmark: BenchmarkFixture, case: Case, setup: CaseSetup, workload: str) -> None:
    _require(case, workload)
    metrics = suites.measure(case, workload)  # warms the step up, and sizes the rounds
    benchmark.group = f"{case.family} {workload}"
    benchmark.extra_info |= suites.extra_info(case, setup.plan.params, metrics)
    benchmark.pedantic(
        suites.synchronized(get(workload).step(setup), setup.device),
        rounds=suites.rounds_for(metrics[f"{workload}_step_s"]["value"], case.budget_s),
    )


def _time_workload(
    benchmark: BenchmarkFixture, case: Case, setup: CaseSetup, workload: str
) -> None:
    _require(case, workload)
    benchmark.group = f"{case.family} {workload}"
    metrics = benchmark.pedantic(suites.measure, args=(case, workload), rounds=1)
    benchmark.extra_info |= suites.extra_info(case, setup.plan.params, metrics)


def test_forward_step(benchmark: BenchmarkFixture, sb_case: Case, sb_setup: CaseSetup) -> None:
    _time_step(benchmark, sb_case, sb_setup, "forward")


def test_train_step(benchmark: BenchmarkFixture, sb_case: Case, sb_setup: CaseSetup) -> None:
    _time_step(benchmark, sb_case, sb_setup, "train")


def test_checkpoint(benchmark: BenchmarkFixture, sb_case: Case, sb_setup: CaseSetup) -> None:
    _time_workload(benchmark, sb_case, sb_setup, "checkpoint")


def test_convergence(benchmark: BenchmarkFixture, sb_case: Case, sb_setup: CaseSetup) -> None:
    _time_workload(benchmark, sb_case, sb_setup, "convergence")
