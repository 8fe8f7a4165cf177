"""pytest options and fixtures that turn the grid's cases into pytest-benchmark tests.

Registered as a ``pytest11`` entry point, so it is loaded by every pytest run of every project in
the environment: importing it costs nothing (torch and the package load only when a test asks for
a case), and it parametrizes only tests that request the ``sb_case`` fixture, those in
``benchmarks/``. Options (each defaults to its ``SCALING_BENCH_*`` variable, shared with asv):
``--sb-grid`` (``quick``; ``smoke`` under ``--benchmark-disable``, so the smoke run stays short)
and one ``--sb-*`` per axis that declares a variable (``--sb-families``, ``--sb-sizes``,
``--sb-precision``, ``--sb-device``, ``--sb-workloads``, …), generated from ``axes.AXES``; and
``--sb-plugin MODULE`` (repeatable, or ``$SCALING_BENCH_PLUGINS``, comma-separated): modules that
register more workloads, as ``scaling-bench run --plugin`` imports them.

Fixtures it parametrizes, for the tests that ask for them: ``sb_case`` (the grid's cases),
``sb_step_workload`` (each workload of the registry with a step) and ``sb_whole_workload`` (each
other workload), so the tests in ``benchmarks/`` name no workload. A case's tests run one after
another (``sb_case`` is module-scoped, so pytest groups by it) and share one built model
(``suites.setup_for``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from scaling_bench.config.case import Case
    from scaling_bench.engine.execute import CaseSetup

_CASES = pytest.StashKey[list]()
_PLUGINS = pytest.StashKey[tuple]()
#: The fixtures that take the registry's workloads: those with a step, and the others.
_WORKLOAD_FIXTURES = ("sb_step_workload", "sb_whole_workload")


def _options() -> dict[str, str]:
    """Option key -> help: the grid, and every axis the front-ends can set (``axes.AXES``)."""
    from scaling_bench.config.axes import AXES

    grid = "quick (default; smoke under --benchmark-disable), smoke, full, auto or FILE.toml"
    by_env = {a.env: a.help for a in AXES if a.env}
    return {"grid": grid} | {
        env.removeprefix("SCALING_BENCH_").lower(): help_text for env, help_text in by_env.items()
    }


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("scaling-bench", "scaling-bench cases (benchmarks/)")
    for key, help_text in _options().items():
        variable = f"SCALING_BENCH_{key.upper()}"
        group.addoption(
            f"--sb-{key.replace('_', '-')}", dest=f"sb_{key}",
            help=f"{help_text}; overrides ${variable}",
        )  # fmt: skip
    group.addoption(
        "--sb-plugin", dest="sb_plugin", action="append", metavar="MODULE",
        help="import MODULE to register more workloads (repeatable); overrides "
        "$SCALING_BENCH_PLUGINS",
    )  # fmt: skip


def _load_plugins(config: pytest.Config) -> None:
    """The plugin modules the options or the environment name, imported once per session."""
    if _PLUGINS not in config.stash:
        from scaling_bench.core.errors import UserError
        from scaling_bench.frontends import suites

        try:
            config.stash[_PLUGINS] = suites.load_plugins(config.getoption("sb_plugin"))
        except UserError as exc:
            raise pytest.fail.Exception(f"scaling-bench: {exc}", pytrace=False) from None


def _cases(config: pytest.Config) -> list:
    """The grid's cases as ``pytest.param``s with case ids, computed once per session."""
    if _CASES not in config.stash:
        from scaling_bench.core.errors import UserError
        from scaling_bench.frontends import suites

        _load_plugins(config)  # their workloads are names the grid may give
        disabled = config.getoption("benchmark_disable", default=False)
        try:
            cases = suites.bench_cases(
                {name: config.getoption(f"sb_{name}") for name in suites.ENV},
                default_grid="smoke" if disabled else "quick",
            )
        except UserError as exc:  # a bad --sb-* option: its message, not a traceback
            raise pytest.fail.Exception(f"scaling-bench: {exc}", pytrace=False) from None
        config.stash[_CASES] = [_param(case, suites.skip_reason(case)) for case in cases]
    return config.stash[_CASES]


def _param(case: Case, skip_reason: str | None) -> object:
    marks = [pytest.mark.skip(reason=skip_reason)] if skip_reason else []
    return pytest.param(case, id=case.case_id, marks=marks)


def _workloads(config: pytest.Config, with_step: bool) -> list[str]:
    """The registry's workloads with a step (or without one), plugins' included."""
    _load_plugins(config)
    from scaling_bench.workloads import base

    stepped = [w.name for w in base.with_step()]
    return stepped if with_step else [w.name for w in base.ordered() if w.name not in stepped]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sb_case" in metafunc.fixturenames:
        metafunc.parametrize("sb_case", _cases(metafunc.config), scope="module")
    for fixture, with_step in zip(_WORKLOAD_FIXTURES, (True, False), strict=True):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, _workloads(metafunc.config, with_step))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A case's tests in its workloads' registered order, as a worker runs them (forward before
    train, so its peak holds no training state): pytest's grouping by case leaves them by test
    function. Other tests keep their places."""
    places = [i for i, item in enumerate(items) if _workload_of(item)]
    if not places:
        return
    from scaling_bench.workloads.base import get

    chosen = [items[i] for i in places]
    first: dict[str, int] = {}
    for n, item in enumerate(chosen):
        first.setdefault(item.callspec.params["sb_case"].case_id, n)
    chosen.sort(
        key=lambda item: (
            first[item.callspec.params["sb_case"].case_id],
            get(_workload_of(item)).order,
        )
    )
    for i, item in zip(places, chosen, strict=True):
        items[i] = item


def _workload_of(item: pytest.Item) -> str | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "sb_case" not in params:
        return None
    return next((params[f] for f in _WORKLOAD_FIXTURES if f in params), None)


@pytest.fixture
def sb_setup(sb_case: Case) -> CaseSetup:
    """The case's model, batch and optimizer, built once for all its tests."""
    from scaling_bench.frontends import suites

    return suites.setup_for(sb_case)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """pytest-benchmark's machine key has no GPU; results from two GPUs must not look alike."""
    from scaling_bench.hardware.peaks import fingerprint

    env = fingerprint()
    machine_info |= {
        key: env[key] for key in ("gpu_name", "gpu_count", "gpu_driver_version") if key in env
    }
