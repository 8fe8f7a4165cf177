"""The recipes of docs/architecture.md, run: a workload, a meter, an axis and a family.

Each recipe is a file under ``docs/examples/`` (the workload's is ``tests/toy_workload.py``, which
``test_toy_workload.py`` runs through every front-end) and the page quotes it verbatim. A plugin
recipe (workload, meter) runs as ``--plugin``; an axis or a family is an edit of the package, so
its test makes the recipe's edits in a copy of the package, counts the files they touch, and runs
``scaling-bench run`` on the copy in a fresh interpreter, workers included.
"""

from __future__ import annotations

import ast
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
#: A machine's peak from the environment: no GEMM measured before the first case.
PEAK = {"SCALING_BENCH_PEAK_FLOPS": "2e11"}
#: Where the page quotes a file: this comment, then the file in a ``python`` block.
QUOTE = re.compile(r"<!-- example: (?P<path>\S+) -->\n```python\n(?P<code>.*?)```", re.S)
#: A document a text cites by name (``docs/frontends.md``, ``README.md``), and a path that leaves
#: the repository.
CITED = re.compile(r"\b(?:docs/[\w./-]+|[A-Z][A-Z_]+)\.md\b")
OUTSIDE = re.compile(r"\.\./shared\b")
VARIABLE = re.compile(r"\bSCALING_BENCH_[A-Z0-9_]+")


def _quotes() -> dict[str, str]:
    return {m["path"]: m["code"] for m in QUOTE.finditer(ARCHITECTURE.read_text("utf-8"))}


def _scaling_bench(args: list[str], path: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    """``scaling-bench ARGS`` in a fresh interpreter that imports from ``path`` (its workers too:
    they inherit the environment), with no case setting of the calling shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALING_BENCH_")}
    env |= PEAK | {"PYTHONPATH": os.pathsep.join(map(str, path))}
    if cache := os.environ.get("SCALING_BENCH_CACHE_DIR"):
        env["SCALING_BENCH_CACHE_DIR"] = cache
    command = [sys.executable, "-m", "scaling_bench.frontends.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def _records(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text("utf-8").splitlines()
    return {r["case_id"]: r for r in map(json.loads, lines)}


def _run_flags(out: Path) -> list[str]:
    return ["--budget", "0.1", "--out", str(out), "--no-progress"]


#: What the axis recipe says it gets beyond the run, asked of the copy: the value reaches the
#: model's weights; grid files take the key (strictly), the pytest plugin has its option, asv its
#: parameter; a record from before the axis reads back with the default.
AXIS_PROBE = """
import json
from pathlib import Path

import torch

from scaling_bench.config import grid
from scaling_bench.config.case import Case
from scaling_bench.core.errors import UserError
from scaling_bench.frontends import pytest_plugin, suites
from scaling_bench.workloads.setup import CaseSetup


def weights_channels_last(value):
    case = Case("cnn", 1e4, workloads=("train",), channels_last=value)
    convs = [p for p in CaseSetup.build(case).model.parameters() if p.dim() == 4]
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def grid_file(values):
    path = Path("g.toml")
    path.write_text(f'families = ["cnn"]\\nsizes = [1e4]\\nchannels_last = {values}\\n')
    try:
        return len(grid.build_cases(grid.load_grid_file(path), "cpu"))
    except UserError as exc:
        return str(exc)


print(json.dumps({
    "channels_last_weights": [weights_channels_last(v) for v in (False, True)],
    "grid_file_cases": grid_file("[true, false]"),
    "grid_file_refuses": grid_file("[1]"),
    "pytest_option": "channels_last" in pytest_plugin._options(),
    "asv_parameter": "channels_last" in suites.ASV_AXES,
    "old_record_reads": Case.from_dict({"family": "cnn", "target_params": 1e4}).channels_last,
}))
"""


def _copy_of_the_package(root: Path) -> Path:
    """A copy of the package to make a recipe's edits in (``root``: the folder to put on
    ``sys.path``)."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "scaling_bench", root / "scaling_bench", ignore=ignore)
    return root


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return _copy_of_the_package(tmp_path / "tree")


@pytest.fixture(scope="module")
def with_wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The family recipe made in a copy of the package: ``models/wide.py`` and its name."""
    package = _copy_of_the_package(tmp_path_factory.mktemp("tree"))
    models = package / "scaling_bench" / "models"
    shutil.copyfile(EXAMPLES / "family_example.py", models / "wide.py")
    init = models / "__init__.py"
    text = init.read_text("utf-8")
    line = re.search(r"^FAMILY_NAMES = \((.*)\)$", text, re.M)
    assert line is not None
    init.write_text(text.replace(line[0], f'FAMILY_NAMES = ({line[1]}, "wide")'), "utf-8")
    return package


def _insert(path: Path, anchor: str, text: str, after: bool = False) -> None:
    """Put ``text`` before (or after) the one line that starts with ``anchor``."""
    lines = path.read_text("utf-8").splitlines(keepends=True)
    (at,) = (i for i, line in enumerate(lines) if line.startswith(anchor))
    lines.insert(at + after, text)
    path.write_text("".join(lines), "utf-8")


def _touched(copy: Path) -> tuple[list[str], list[str]]:
    """The files a recipe added to the copy, and the package files it changed."""
    added: list[str] = []
    changed: list[str] = []

    def walk(cmp: filecmp.dircmp, prefix: str) -> None:
        added.extend(prefix + name for name in cmp.right_only)
        changed.extend(prefix + name for name in cmp.diff_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(ROOT / "scaling_bench", copy / "scaling_bench", ignore=["__pycache__"]), "")
    return sorted(added), sorted(changed)


def _source(node: ast.AST, text: str, indent: str) -> str:
    segment = ast.get_source_segment(text, node)
    assert segment is not None
    return "".join(indent + line + "\n" for line in segment.splitlines())


@pytest.mark.parametrize(
    "path",
    ["tests/toy_workload.py", *(f"docs/examples/{p.name}" for p in sorted(EXAMPLES.glob("*.py")))],
)
def test_the_architecture_page_quotes_each_recipe_file_as_it_is(path: str) -> None:
    assert _quotes().get(path) == (ROOT / path).read_text("utf-8")


def test_every_document_the_package_docs_and_tests_cite_is_in_the_repository() -> None:
    texts = [*ROOT.glob("*.md"), *(ROOT / "docs").rglob("*.md"), *ROOT.glob("*.py")]
    for folder in ("scaling_bench", "docs", "tests", "studies", "benchmarks"):
        texts.extend((ROOT / folder).rglob("*.py"))
    cited = {
        (str(path.relative_to(ROOT)), found)
        for path in texts
        for line in path.read_text("utf-8").splitlines()
        for found in [*CITED.findall(line), *OUTSIDE.findall(line)]
        if not (ROOT / found).is_file()
    }
    assert not cited


def test_every_variable_the_docs_name_is_one_the_package_reads() -> None:
    """A variable the code no longer reads is silently ignored: a documented SLURM script that set
    the node rank by one ran every node as node 0."""
    from scaling_bench.config.axes import AXES

    source = "\n".join(p.read_text("utf-8") for p in (ROOT / "scaling_bench").rglob("*.py"))
    read = {a.env for a in AXES if a.env} | set(VARIABLE.findall(source))
    named = {
        (path.name, name)
        for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
        for name in VARIABLE.findall(QUOTE.sub("", path.read_text("utf-8")))
        if name not in read
    }
    assert not named


@pytest.mark.slow
def test_the_meter_recipe_records_its_cpu_seconds_under_its_workloads_prefix(
    tmp_path: Path,
) -> None:
    args = ["run", "--plugin", "meter_example", "--workloads", "sum_weights", "--families", "mlp",
            "--sizes", "1e4", *_run_flags(tmp_path)]  # fmt: skip
    done = _scaling_bench(args, [ROOT, EXAMPLES], ROOT)
    assert done.returncode == 0, done.stderr
    record = _records(tmp_path)["mlp-1e4-fp32-cpu"]
    assert record["status"] == "ok", record["error"]
    figure = record["metrics"]["sum_weights_cpu_s"]
    assert figure["unit"] == "s" and figure["n"] == 1 and figure["value"] >= 0


@pytest.mark.slow
def test_the_axis_recipe_is_two_edits_and_makes_a_grid_of_both_values(package: Path) -> None:
    text = (EXAMPLES / "axis_example.py").read_text("utf-8")
    tree = ast.parse(text)
    entry = next(n.value for n in tree.body if isinstance(n, ast.Assign))
    use = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    (returned,) = use.body
    assert isinstance(returned, ast.Return) and returned.value is not None
    _insert(package / "scaling_bench/config/axes.py", '    Axis("overrides"',
            _source(entry, text, "    ").rstrip("\n") + ",\n")  # fmt: skip
    _insert(package / "scaling_bench/workloads/setup.py", "        model = prec.convert(",
            "        model = " + _source(returned.value, text, ""), after=True)  # fmt: skip
    assert _touched(package) == ([], ["config/axes.py", "workloads/setup.py"])

    out = package / "out"
    args = ["run", "--families", "cnn", "--sizes", "1e4", "--channels-last", "false,true",
            "--workloads", "train", *_run_flags(out)]  # fmt: skip
    done = _scaling_bench(args, [package], package)
    assert done.returncode == 0, done.stderr
    records = _records(out)
    assert sorted(records) == ["cnn-1e4-fp32-cpu", "cnn-1e4-fp32-cpu-channels-last"]
    assert all(r["status"] == "ok" for r in records.values()), records
    assert records["cnn-1e4-fp32-cpu-channels-last"]["case"]["channels_last"] is True

    env = {**os.environ, "PYTHONPATH": str(package)}
    asked = subprocess.run([sys.executable, "-c", AXIS_PROBE], cwd=package, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout) == {
        "channels_last_weights": [False, True],
        "grid_file_cases": 2,
        "grid_file_refuses": "grid file g.toml: channels_last 1: input should be a valid boolean",
        "pytest_option": True,
        "asv_parameter": True,
        "old_record_reads": False,
    }


@pytest.mark.slow
def test_the_family_recipe_is_one_file_and_one_line_and_runs_the_quick_grid(
    with_wide: Path,
) -> None:
    assert _touched(with_wide) == (["models/wide.py"], ["models/__init__.py"])
    out = with_wide / "out"
    args = ["run", "--grid", "quick", "--families", "wide", *_run_flags(out)]
    done = _scaling_bench(args, [with_wide], with_wide)
    assert done.returncode == 0, done.stderr
    records = _records(out)
    assert sorted(records) == ["wide-1e4-fp32-cpu", "wide-1e5-fp32-cpu", "wide-1e6-fp32-cpu"]
    for record in records.values():
        assert record["status"] == "ok", record["error"]
        assert {"train_step_s", "forward_step_s"} <= set(record["metrics"])


@pytest.mark.slow
def test_the_recipes_family_keeps_the_family_contract(with_wide: Path) -> None:
    """``tests/test_families.py`` on the copy: counts, sizing, FLOPs and planning of ``wide``."""
    env = {**os.environ, "PYTHONPATH": str(with_wide)}
    command = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_families.py"), "-q",
               "-p", "no:cacheprovider", "--rootdir", str(ROOT), "-k", "wide"]  # fmt: skip
    done = subprocess.run(command, cwd=with_wide, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    assert re.search(r"\b[1-9]\d* passed", done.stdout), done.stdout[-2000:]
