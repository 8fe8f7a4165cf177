"""Plugins that fail: at import (their own error, a workload name taken) it is one line naming the
plugin, exit 2; a workload whose figures the record cannot hold ends its case naming the field,
with the figures of the workloads before it kept (issue 26: p01, p01b, p02, p03b)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import synthetic

from scaling_bench.config import axes
from scaling_bench.core import metrics
from scaling_bench.frontends.cli import main
from scaling_bench.store.records import RESULTS_FILE, load_records
from scaling_bench.workloads import base

PLUGINS = {
    "p_raise": 'raise RuntimeError("plugin p_raise exploded at import")\n',
    "p_escape": 'raise RuntimeError("clears \\x1b[2J the screen")\n',
    "p_dupe": (
        "from scaling_bench.workloads.base import register\n"
        "from scaling_bench.workloads.forward import Forward\n\n\n"
        "class Dupe(Forward):\n    pass\n\n\nregister(Dupe())\n"
    ),
    "p_nan": (
        "import math\n\n"
        "from scaling_bench.core.metrics import LOWER, MetricSpec\n"
        "from scaling_bench.core.stats import single\n"
        "from scaling_bench.workloads.base import Needs, Workload, register\n\n\n"
        "class PNan(Workload):\n"
        '    name, order, needs, default = "pnan", 90, Needs.WEIGHTS, False\n'
        '    specs = (MetricSpec("pnan_x", "s", LOWER, label="pnan: a NaN"),)\n\n'
        "    def measure(self, setup, ctx):\n"
        '        return {"pnan_x": single(math.nan, "s")}\n\n\n'
        "register(PNan())\n"
    ),
}


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plugin modules importable (workers get the parent's path), and the registries as
    they were afterwards: the rest of the session's grids must not grow a workload."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name, text in PLUGINS.items():
        (folder / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("SCALING_BENCH_PEAK_FLOPS", "2e11")  # no GEMM measured first
    workloads, specs = dict(base._REGISTRY), dict(metrics._SPECS)
    declared = {axis: dict(names) for axis, names in axes._declared.items()}
    yield
    base._REGISTRY.clear()
    base._REGISTRY.update(workloads)
    metrics._SPECS.clear()
    metrics._SPECS.update(specs)
    axes._declared.clear()
    axes._declared.update(declared)
    for name in PLUGINS:
        sys.modules.pop(name, None)


RUN = ["run", "--families", "mlp", "--sizes", "1e4", "--budget", "0.2", "--no-progress"]


@pytest.mark.usefixtures("plugins")
@pytest.mark.parametrize(
    ("command", "plugin", "message"),
    [
        ("run", "p_raise", "RuntimeError while importing: plugin p_raise exploded at import"),
        ("compare", "p_raise", "RuntimeError while importing: plugin p_raise exploded at import"),
        ("run", "p_dupe", "ValueError while importing: workload 'forward' registered twice"),
        ("compare", "p_escape", "RuntimeError while importing: clears \\x1b[2J the screen"),
    ],
)
def test_a_plugin_that_fails_to_import_is_one_line_naming_it_and_exit_2(
    capsys, tmp_path, command, plugin, message
) -> None:
    out = tmp_path / "out"
    if command == "run":
        args = [*RUN, "--workloads", "forward", "--out", str(out)]
    else:
        base_run = synthetic.write(tmp_path / "base", synthetic.run(families=("mlp",)))
        args = ["compare", str(base_run), str(base_run)]
    assert main([*args, "--plugin", plugin]) == 2
    err = capsys.readouterr().err
    assert err == f"scaling-bench: error: --plugin {plugin}: raised {message}\n"
    assert not (out / RESULTS_FILE).exists()


@pytest.mark.usefixtures("plugins")
def test_a_nan_figure_crashes_its_case_naming_the_field_and_keeps_the_earlier_figures(
    tmp_path,
) -> None:
    out = tmp_path / "out"
    assert main([*RUN, "--workloads", "forward,pnan", "--plugin", "p_nan", "--out", str(out)]) == 0
    [record] = load_records(out / RESULTS_FILE)
    assert record["status"] == "crashed"
    assert record["error"] == (
        "pnan: its figures cannot be recorded: metrics.pnan_x.value: should be a finite number, "
        "got NaN"
    )
    assert {"peak_flops_per_s", "forward_step_s", "forward_samples_per_s"} <= set(record["metrics"])
    assert "pnan_x" not in json.dumps(record["metrics"])
