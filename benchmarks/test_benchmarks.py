"""The grid's cases as pytest-benchmark tests: ``pytest benchmarks`` (options: ``pytest --help``).

One test per case and workload of the registry, plugins' included (``--sb-plugin``); nothing here
names a workload. ``test_step`` times the step of each workload that has one (seconds per step,
as ``{workload}_step_s`` of ``scaling-bench run``); ``test_workload`` times each other workload
whole, once (``{workload}_s``). Every figure the workload records goes to ``extra_info``, in the
record's shape, beside the case, the workload and the name of the timed metric (``metric``), which
is what ``scaling-bench compare`` files pytest-benchmark's time under. A workload the grid leaves
out is skipped, and so is a case that cannot run (its recipe, one of its workloads), with the
reason. The cases, the workloads and the fixtures come from
``scaling_bench.frontends.pytest_plugin``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from scaling_bench.frontends import suites
from scaling_bench.workloads.base import Workload, get

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

    from scaling_bench.config.case import Case


def _runnable(case: Case, name: str) -> Workload:
    """The workload, or a skip where the grid leaves it out (a case that cannot run it is
    skipped whole, with the reason, when it is collected: ``suites.skip_reason``)."""
    if name not in case.workloads:
        pytest.skip(f"{name} is not among this grid's workloads")
    return get(name)


def test_step(benchmark: BenchmarkFixture, sb_case: Case, sb_step_workload: str) -> None:
    w = _runnable(sb_case, sb_step_workload)
    metrics = suites.measure(sb_case, w.name)  # warms the step up, and sizes the rounds
    setup = suites.setup_for(sb_case)
    metric = suites.step_metric(w)
    benchmark.group = f"{sb_case.family} {w.name}"
    benchmark.extra_info |= suites.extra_info(sb_case, setup.plan.params, metrics, w.name, metric)
    benchmark.pedantic(
        suites.synchronized(w.step(setup), setup.device),
        rounds=suites.rounds_for(metrics[metric]["value"], sb_case.budget_s),
    )


def test_workload(benchmark: BenchmarkFixture, sb_case: Case, sb_whole_workload: str) -> None:
    w = _runnable(sb_case, sb_whole_workload)
    params = suites.setup_for(sb_case).plan.params
    benchmark.group = f"{sb_case.family} {w.name}"
    metrics = benchmark.pedantic(suites.measure, args=(sb_case, w.name), rounds=1)
    metric = suites.whole_metric(w)
    benchmark.extra_info |= suites.extra_info(sb_case, params, metrics, w.name, metric)
