"""The commands that only read records never import torch (seconds of start-up each): ``compare``,
``report``, ``merge`` and ``ab``'s bookkeeping (pooling its rounds, the verdict), each run in a
fresh interpreter, print what they print where every workload's module is loaded (this process,
torch and all): the catalog of what records hold says what the workloads would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic

from scaling_bench.frontends.cli import main

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
#: Runs the command line in a fresh interpreter, then says on stderr whether torch was imported.
_CLI = """
import sys
from scaling_bench.frontends.cli import main
code = main(sys.argv[1:])
print("torch imported" if "torch" in sys.modules else "torch not imported", file=sys.stderr)
sys.exit(code)
"""
#: ``ab``'s rounds, pooled and judged, with each side-round's run written as records (what
#: ``run_side`` leaves behind): the A/B's own process, less the runs it starts.
_AB = """
import random, sys
import synthetic
from pathlib import Path
from scaling_bench.analysis.compare import compare_runs, parse_threshold
from scaling_bench.engine.ab import Plan, Side, run_ab, running_tree
from scaling_bench.frontends.gate import show_comparison
from scaling_bench.store.foreign import load_run

def runs(side, run_args, folder):
    n = int(folder.name.split("-")[0])
    slowdown = (1.0 if side.name == "base" else 1.5) * (1 + n / 10)
    record = synthetic.record("mlp", 1e6, rng=random.Random(n), slowdown=slowdown, noise=0.001)
    synthetic.write(folder, [record])

out = Path(sys.argv[1])
tree = str(running_tree())
plan = Plan(Side("base", "", tree), Side("current", "", tree), ("--families", "mlp"), 3)
run_ab(plan, out, runs, progress=lambda line: None)
comparison = compare_runs(load_run(out / "base"), load_run(out / "current"),
                          parse_threshold("5%"), None, paired=True)
code = show_comparison(comparison, show_all=True, as_json=True, plot=None)
print("torch imported" if "torch" in sys.modules else "torch not imported", file=sys.stderr)
sys.exit(code)
"""


def _fresh(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT), str(HERE)))}
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300
    )


def _torch_free(done: subprocess.CompletedProcess[str]) -> str:
    """The command's stdout, once its last line on stderr says it ran without torch."""
    assert done.stderr.strip().splitlines()[-1] == "torch not imported", done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny results folders: a base, and a current one whose steps are 30% slower."""
    folder = tmp_path_factory.mktemp("runs")
    base = synthetic.write(folder / "base", synthetic.run(families=("mlp",), seed=0))
    current = synthetic.run(families=("mlp",), seed=1, slowdown=1.3)
    return base, synthetic.write(folder / "current", current)


def test_compare_reads_without_torch_as_with_every_workload_loaded(runs, capsys) -> None:
    base, current = runs
    done = _fresh(_CLI, "compare", str(base), str(current), "--json", "--all")
    assert done.returncode == 1, done.stderr  # the slower train step fails the gate
    code = main(["compare", str(base), str(current), "--json", "--all"])
    assert code == 1
    assert json.loads(_torch_free(done)) == json.loads(capsys.readouterr().out)


def test_report_reads_without_torch_as_with_every_workload_loaded(runs, tmp_path, capsys) -> None:
    base, _ = runs
    done = _fresh(_CLI, "report", str(base), "--html", str(tmp_path / "fresh.html"))
    assert done.returncode == 0, done.stderr
    assert main(["report", str(base), "--html", str(tmp_path / "loaded.html")]) == 0
    markdown = capsys.readouterr().out
    assert "## " in markdown and _torch_free(done) == markdown
    assert (tmp_path / "fresh.html").stat().st_size > 0


def test_merge_reads_and_writes_without_torch(runs, tmp_path: Path) -> None:
    base, current = runs
    done = _fresh(_CLI, "merge", str(base), str(current), "--out", str(tmp_path / "both"))
    assert done.returncode != 0  # the same cases, recorded differently: refused
    assert "torch not imported" in done.stderr
    done = _fresh(_CLI, "merge", str(base), "--out", str(tmp_path / "one"))
    assert done.returncode == 0, done.stderr
    _torch_free(done)
    assert (tmp_path / "one" / "results.jsonl").read_text() == (base / "results.jsonl").read_text()


def test_ab_pools_its_rounds_and_judges_without_torch(tmp_path: Path) -> None:
    done = _fresh(_AB, str(tmp_path / "ab"))
    assert done.returncode == 1, done.stderr  # the current side is 50% slower
    report = json.loads(_torch_free(done))
    assert report["failed_gate"] and report["status_changes"] == []
    (train,) = [r for r in report["rows"] if r["metric"] == "train_step_s"]
    assert train["verdict"] == "regressed"
