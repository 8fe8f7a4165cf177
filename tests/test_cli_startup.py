"""The command line starts at once: its help, and the commands that only read records, never
import torch (which alone takes seconds); ``run --help`` prints, grouped, at 80 columns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scaling_bench.frontends.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
#: Runs the command line in a fresh interpreter, then says on stderr whether torch was imported.
_PROBE = """
import sys
from scaling_bench.frontends.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("torch imported" if "torch" in sys.modules else "torch not imported", file=sys.stderr)
sys.exit(code)
"""


def cli(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=120
    )


def _subcommands() -> list[str]:
    action = next(a for a in build_parser()._actions if a.dest == "command")
    return list(action.choices)


@pytest.mark.parametrize("command", [[], *([c] for c in _subcommands())], ids=" ".join)
def test_help_of_every_command_exits_0_without_importing_torch(command: list[str]) -> None:
    done = cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "torch not imported"


def test_run_help_fits_80_columns_in_its_sections_with_examples() -> None:
    done = cli("run", "--help", columns=80)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    titles = [line.split(":")[0] for line in lines if line and not line.startswith(" ")]
    for section in ("grid", "recipe", "measuring", "output", "distributed", "examples"):
        assert section in titles
    assert "--ci-target" in done.stdout  # the help string with a bare % in it
    assert "amp-bf16" in done.stdout.replace("\n", " ")  # names are not split at a hyphen
