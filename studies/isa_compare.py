"""Two machines on one: the kernels' ISA, capped, compared with ``scaling-bench compare``.

The same grid three times, each in its own ``run`` under a different kernel selection:

- ``native``: whatever this CPU offers (``torch.backends.cpu.get_cpu_capability()``);
- ``avx2``: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``;
- ``default``: ``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2`` (ATen's scalar kernels).

Then ``compare native avx2`` and ``compare native default``, each with ``--plot``: the records'
``env`` names the capability, so ``compare`` names the difference above its verdict and gives the
geometric-mean ratio per family. Prints both comparisons as ``compare`` does, then one markdown
table of the per-family ratios (CURRENT/BASE: above 1 is slower for a time) for docs/studies.md.

    python studies/isa_compare.py [--out results/isa] [--figures docs/figures]   # ~9 min, 2 cores
    python studies/isa_compare.py --families mlp --sizes 1e5                     # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TREE = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "scaling_bench.frontends.cli"]
SETTINGS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
#: bf16 on a CPU without native bf16 kernels is emulated and slow: a small batch keeps the grid
#: within ten minutes on 2 cores, and 0.3 s of timing per workload is enough to see a 1.3x move.
BATCH_SIZE = "8"


def run(out: Path, env: dict[str, str], args: argparse.Namespace) -> float:
    """One ``run`` of the grid under ``env``; its wall seconds."""
    command = [*CLI, "run", "--families", args.families, "--sizes", args.sizes,
               "--workloads", "forward,train", "--precision", "fp32,bf16",
               "--batch-size", BATCH_SIZE, "--budget", str(args.budget), "--no-progress",
               "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, env=os.environ | env, cwd=TREE, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def compare(base: Path, current: Path, plot: Path) -> dict:
    """``compare`` printed as a person reads it, then again as JSON for the table."""
    command = [*CLI, "compare", str(base), str(current)]
    subprocess.run([*command, "--plot", str(plot)], cwd=TREE)  # exit 1 on a slower ISA: expected
    done = subprocess.run([*command, "--json"], cwd=TREE, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout)


def table(reports: dict[str, dict]) -> list[str]:
    """Markdown: per family and metric, the geometric-mean ratio of each capped ISA to native."""
    names = list(reports)
    families = [r["by_family"] for r in reports.values()]
    keys = sorted({(f, m) for by_family in families for f, ms in by_family.items() for m in ms})
    lines = [f"| family | metric | {' | '.join(f'{n} / native' for n in names)} |",
             f"| --- | --- |{' ---: |' * len(names)}"]  # fmt: skip
    for family, metric in keys:
        cells = [reports[n]["by_family"].get(family, {}).get(metric) for n in names]
        shown = [f"{c['geomean_ratio']:.2f}× ({c['cases']})" if c else "" for c in cells]
        lines.append(f"| {family} | {metric} | {' | '.join(shown)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TREE / "results" / "isa")
    parser.add_argument("--figures", type=Path, default=TREE / "docs" / "figures")
    parser.add_argument("--families", default="mlp,cnn,resnet,vit,gpt")
    parser.add_argument("--sizes", default="1e5,1e6")
    parser.add_argument("--budget", type=float, default=0.3)
    args = parser.parse_args()
    args.figures.mkdir(parents=True, exist_ok=True)
    for name, env in SETTINGS.items():
        seconds = run(args.out / name, env, args)
        print(f"{name}: {seconds:.0f} s", file=sys.stderr, flush=True)
    reports = {
        name: compare(args.out / "native", args.out / name, args.figures / f"isa_{name}.png")
        for name in SETTINGS
        if name != "native"
    }
    print("\n".join(table(reports)))


if __name__ == "__main__":
    main()
