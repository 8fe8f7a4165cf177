"""Per-case overhead of the runner: warm (forked) workers against fresh interpreters.

Overhead is what a case costs beyond its workloads: its record's ``duration_s`` minus the
``*_wall_s`` of its workloads (worker start, imports, the runtime's warm-up, building the model,
writing the record). The two modes run the same grid of tiny checkpoint cases in alternating
rounds on one machine, so both see the same load; the medians and their ratio are printed.

    python studies/worker_overhead.py [--cases 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from scaling_bench.store.records import RESULTS_FILE, load_records


def overheads(out: Path) -> list[float]:
    records = load_records(out / RESULTS_FILE)
    walls = ((r["duration_s"], r["metrics"]) for r in records if r["status"] == "ok")
    return [d - sum(m[k]["value"] for k in m if k.endswith("_wall_s")) for d, m in walls]


def run_grid(cases: int, fresh: bool, out: Path) -> list[float]:
    command = [
        sys.executable, "-m", "scaling_bench.frontends.cli", "run", "--families", "mlp",
        "--sizes", f"1e4:2e4:{cases}", "--workloads", "checkpoint", "--budget", "0.05",
        "--no-progress", "--out", str(out), *(["--fresh-workers"] if fresh else []),
    ]  # fmt: skip
    env = os.environ | {"SCALING_BENCH_PEAK_FLOPS": "2e11"}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return overheads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    found: dict[str, list[float]] = {"warm": [], "fresh": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for mode in ("warm", "fresh") if i % 2 == 0 else ("fresh", "warm"):
                out = Path(tmp, f"{mode}-{i}")
                found[mode] += run_grid(args.cases, mode == "fresh", out)
    medians = {mode: statistics.median(xs) for mode, xs in found.items()}
    for mode, xs in found.items():
        print(f"{mode:5}: median overhead {medians[mode]:.3f} s per case over {len(xs)} cases")
    print(f"fresh / warm: {medians['fresh'] / medians['warm']:.1f}x")


if __name__ == "__main__":
    main()
