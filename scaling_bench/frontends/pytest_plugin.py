"""pytest options and fixtures that turn the grid's cases into pytest-benchmark tests.

Registered as a ``pytest11`` entry point, so it is loaded by every pytest run of every project in
the environment: importing it costs nothing (torch and the package load only when a test asks for
a case), and it parametrizes only tests that request the ``sb_case`` fixture, those in
``benchmarks/``. Options (each defaults to its ``SCALING_BENCH_*`` variable, shared with asv):
``--sb-grid`` (``quick``; ``smoke`` under ``--benchmark-disable``, so the smoke run stays short),
``--sb-device``, ``--sb-families``, ``--sb-sizes``, ``--sb-dtype``.

A case's tests run one after another (``sb_case`` is module-scoped, so pytest groups by it) and
share one built model (``suites.setup_for``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from scaling_bench.config.grid import Case
    from scaling_bench.engine.execute import CaseSetup

_OPTIONS = {
    "grid": "quick (default; smoke under --benchmark-disable), smoke, full, auto or FILE.toml",
    "device": "auto (default), cpu, cuda or cuda:N; CUDA cases are skipped where there is no GPU",
    "families": "comma-separated: mlp,cnn,resnet,vit,gpt (default: the grid's)",
    "sizes": "1e5,1e6 or 1e5:1e8:x10 (default: the grid's)",
    "dtype": "comma-separated: fp32,bf16,fp16 (default: the grid's)",
}
_CASES = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("scaling-bench", "scaling-bench cases (benchmarks/)")
    for name, help_text in _OPTIONS.items():
        group.addoption(
            f"--sb-{name}", help=f"{help_text}; overrides $SCALING_BENCH_{name.upper()}"
        )


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
