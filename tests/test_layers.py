"""The package's import layering and the absence of import cycles (docs/architecture.md, Layers).

Every module under ``scaling_bench/`` is parsed with :mod:`ast`; nothing of the package is
imported or executed. Layers, low to high::

    core < models < hardware < config < predict < meters < workloads < store < engine
         < analysis < report < frontier < frontends

The store sits below the engine: the engine writes records through it, analysis reads them. The
frontier (a feature across design, runs, fits and report) sits above the report, which shows its
section through ``report.sections`` without importing it.

A module may import its own layer and lower ones, wherever the import stands: at module level,
inside a function, or under ``if TYPE_CHECKING:``. ``scaling_bench/__init__.py`` imports nothing of
the package. Separately, the graph of imports that run when a module is loaded (module level,
``TYPE_CHECKING`` blocks left out) must be acyclic.

Run as a script (``python tests/test_layers.py``) to print the violations, the cycles and the count.
"""

from __future__ import annotations

import ast
import graphlib
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "scaling_bench"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
LAYERS = (
    "core",
    "models",
    "hardware",
    "config",
    "predict",
    "meters",
    "workloads",
    "store",
    "engine",
    "analysis",
    "report",
    "frontier",
    "frontends",
)
RANK = {name: i for i, name in enumerate(LAYERS)}


@dataclass(frozen=True)
class Import:
    """One import of a package module: who, where, what, and whether it runs at load time."""

    source: str  # importing module, dotted
    path: str  # importing file, relative to the package's parent (scaling_bench/a/b.py)
    line: int
    target: str  # imported module, dotted (a submodule where ``from pkg import sub`` names one)
    at_load: bool  # module level and outside ``if TYPE_CHECKING:``


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def layer_of(module: str) -> str | None:
    """The layer a module belongs to: its first component under the package (None at the top)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    nodes: list[ast.stmt], at_load: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``nodes``, with whether it runs when the module loads."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, at_load
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(node.body, False)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, False)
            yield from _walk(node.orelse, at_load)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    # handlers and match cases hold their statements one level further down
                    stmts = [c for c in children if isinstance(c, ast.stmt)]
                    for c in children:
                        if isinstance(c, ast.excepthandler | ast.match_case):
                            stmts.extend(c.body)
                    yield from _walk(stmts, at_load)


def _resolve(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names of what one statement imports, absolute, as written (not yet filtered)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        stem = ".".join([*base, node.module] if node.module else base)
    else:
        stem = node.module or ""
    return [stem, *(f"{stem}.{alias.name}" for alias in node.names if alias.name != "*")]


def package_imports(package_dir: Path = PACKAGE_DIR) -> list[Import]:
    """Every import of a package module by a package module, resolved to the most specific one."""
    modules = module_files(package_dir)
    found = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(package_dir.parent).as_posix()
        for node, at_load in _walk(tree.body, True):
            names = _resolve(node, module, path.name == "__init__.py")
            if isinstance(node, ast.ImportFrom):
                stem, members = names[0], names[1:]
                # ``from pkg import sub`` names the submodule, ``from pkg import name`` the package
                targets = [m for m in members if m in modules]
                if len(targets) < len(members) or not members:
                    targets.append(stem)
            else:
                targets = names
            for target in dict.fromkeys(targets):
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    # ``import scaling_bench.a.b`` where b is no module: the nearest module above
                    while target not in modules and "." in target:
                        target = target.rsplit(".", 1)[0]
                    found.append(Import(module, rel, node.lineno, target, at_load))
    return found


def layer_violations(imports: list[Import]) -> list[str]:
    """``scaling_bench/a/b.py:LINE imports scaling_bench.c (layer X above Y)``, one per import."""
    out = []
    for imp in imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        where = f"{imp.path}:{imp.line} imports {imp.target}"
        if src is None:
            out.append(f"{where} ({PACKAGE}/__init__.py imports nothing of the package)")
        elif src not in RANK:
            out.append(f"{where} (module outside the layers: {src})")
        elif dst is None or dst == src:
            continue
        elif dst not in RANK:
            out.append(f"{where} (layer {dst} is not one of the layers)")
        elif RANK[dst] > RANK[src]:
            out.append(f"{where} (layer {dst} above {src})")
    return out


def import_cycles(imports: list[Import], limit: int = 50) -> list[str]:
    """Cycles of the load-time import graph, one line each (``a -> b -> a`` with the lines).

    ``graphlib`` reports one cycle at a time; each found cycle's closing edge is dropped and the
    sort retried, so every independent cycle shows up once.
    """
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        edges.setdefault(imp.source, {})
        if imp.at_load and imp.target != imp.source:
            edges[imp.source].setdefault(imp.target, imp)
    cycles = []
    while len(cycles) < limit:
        try:
            graphlib.TopologicalSorter({k: set(v) for k, v in edges.items()}).prepare()
        except graphlib.CycleError as err:
            # err.args[1] is [n0, n1, ..., n0] where each node depends on (imports) the one before
            nodes = list(reversed(err.args[1]))
            steps = [edges[a][b] for a, b in itertools.pairwise(nodes)]
            cycles.append(" -> ".join(f"{s.path}:{s.line} {s.target}" for s in steps))
            del edges[nodes[-2]][nodes[-1]]
        else:
            break
    return cycles


def count_violations(package_dir: Path = PACKAGE_DIR) -> tuple[int, int]:
    """(layer violations, import cycles) of the package: the figures a refactor drives to zero."""
    imports = package_imports(package_dir)
    return len(layer_violations(imports)), len(import_cycles(imports))


def test_layers_point_down() -> None:
    imports = package_imports()
    assert imports, f"no package imports found under {PACKAGE_DIR}"
    violations = layer_violations(imports)
    order = " < ".join(LAYERS)
    assert not violations, (
        f"{len(violations)} import(s) break the layering ({order}):\n" + "\n".join(violations)
    )


def test_no_import_cycles() -> None:
    cycles = import_cycles(package_imports())
    assert not cycles, f"{len(cycles)} import cycle(s) at module level:\n" + "\n".join(cycles)


def test_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checker on a small made-up package: relative, submodule, nested, TYPE_CHECKING."""
    root = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/a.py": "from .. import engine\n",  # up, at load: violation and half a cycle
        "engine/__init__.py": "from scaling_bench.core import a\n",  # submodule, at load
        "engine/b.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from scaling_bench.report import html\n"  # up, type checking only
            "def f():\n"
            "    import scaling_bench.frontends.cli\n"  # up, inside a function
            "from .c import X\n"  # relative, same layer
        ),
        "engine/c.py": "from scaling_bench.engine.b import f\n",  # same layer, at load: cycle b-c
        "report/__init__.py": "",
        "report/html.py": "",
        "frontends/__init__.py": "",
        "frontends/cli.py": "from scaling_bench.core.a import nothing\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    imports = package_imports(root)
    assert layer_violations(imports) == [
        "scaling_bench/core/a.py:1 imports scaling_bench.engine (layer engine above core)",
        "scaling_bench/engine/b.py:3 imports scaling_bench.report.html (layer report above engine)",
        "scaling_bench/engine/b.py:5 imports scaling_bench.frontends.cli "
        "(layer frontends above engine)",
    ]
    cycles = import_cycles(imports)
    assert len(cycles) == 2
    assert any("scaling_bench.engine.c" in c and "scaling_bench.engine.b" in c for c in cycles)
    assert any("scaling_bench.core.a" in c and "scaling_bench.engine" in c for c in cycles)
    assert count_violations(root) == (3, 2)


if __name__ == "__main__":
    found = package_imports()
    violations, cycles = layer_violations(found), import_cycles(found)
    print("\n".join(["layer violations:", *violations, "", "import cycles:", *cycles, ""]))
    print(f"{len(violations)} layer violation(s), {len(cycles)} import cycle(s)")
    sys.exit(1 if violations or cycles else 0)
