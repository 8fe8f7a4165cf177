"""pytest options and fixtures that turn the grid's cases into pytest-benchmark tests.

Registered as a ``pytest11`` entry point, so it is loaded by every pytest run of every project in
the environment: importing it costs nothing (torch and the package load only when a test asks for
a case), and it parametrizes only tests that request the ``sb_case`` fixture, those in
``benchmarks/``. Options (each defaults to its ``SCALING_BENCH_*`` variable, shared with asv):
``--sb-grid`` (``quick``; ``smoke`` under ``--benchmark-disable``, so the smoke run stays short)
and one ``--sb-*`` per axis that declares a variable (``--sb-families``, ``--sb-sizes``,
``--sb-dtype``, ``--sb-device``, ``--sb-workloads``, …), generated from ``axes.AXES``.

A case's tests run one after another (``sb_case`` is module-scoped, so pytest groups by it) and
share one built model (``suites.setup_for``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from scaling_bench.config.case import Case
    from scaling_bench.engine.execute import CaseSetup

_CASES = pytest.StashKey[list]()


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


def _cases(config: pytest.Config) -> list:
    """The grid's cases as ``pytest.param``s with case ids, computed once per session."""
    if _CASES not in config.stash:
        from scaling_bench.core.errors import UserError
        from scaling_bench.frontends import suites

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sb_case" in metafunc.fixturenames:
        metafunc.parametrize("sb_case", _cases(metafunc.config), scope="module")


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
