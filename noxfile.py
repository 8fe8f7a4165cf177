"""nox sessions: tests, lint, bench (pytest-benchmark), asv.

The venv backend with pip: uv does not see the torch wheels that lie on this machine's disk.
``bench`` and ``asv`` take their cases from the ``SCALING_BENCH_*`` variables (docs/frontends.md).
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]
PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    # ruff alone (the dev extra's bound): linting needs neither the package nor torch
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """pytest-benchmark over the grid, saved and compared with the last saved run.

    Runs are saved in .benchmarks/; from the second on, a median more than 10% slower than the last
    saved run's fails the session (exit 1). Arguments go to pytest (``--sb-families mlp``).
    """
    session.install("-e", ".[dev]")
    has_baseline = any(Path(".benchmarks").glob("*/*.json"))
    compare = ["--benchmark-compare", "--benchmark-compare-fail=median:10%"] if has_baseline else []
    session.run("pytest", "benchmarks", "--benchmark-autosave", *compare, *session.posargs)


@nox.session(python=PYTHON)
def asv(session: nox.Session) -> None:
    """asv: register the machine (GPU in its name), run at HEAD, publish to .asv/html.

    The results are recorded under HEAD's hash (asv keeps none from its existing environment
    otherwise). Arguments go to ``asv run`` (``--quick``, ``--bench train``).
    """
    session.install("-e", ".[dev]")
    machine = session.run("scaling-bench", "asv-machine", silent=True, stderr=None)
    run = ["asv", "run", "--machine", str(machine).strip(), "--set-commit-hash", "HEAD"]
    session.run(*run, *session.posargs)
    session.run("asv", "publish")
