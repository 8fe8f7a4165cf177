"""How often ``compare`` cries wolf on reruns of one commit, and whether it sees a real slowdown.

One base run, then rounds of two runs each: a rerun of the same command (a false alarm if the
gate fails) and the same command under ``OMP_NUM_THREADS=1`` against the 2-thread base (a
detection if the gate fails). The rounds alternate the two, so both see the same machine.
Each run is ``--families mlp --sizes 1e6,1e7 --workloads train``, the case of issue 11; with
``--processes K`` (5 by default) the gate tests per-process values, with 1 it tests one
process's samples (what ``run`` did before ``--processes``). Prints one table row per mode.

    python studies/gate_noise.py [--reruns 20] [--processes 5] [--budget 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(out: Path, processes: int, budget: float, threads: int | None) -> None:
    command = [
        sys.executable, "-m", "scaling_bench.frontends.cli", "run", "--families", "mlp",
        "--sizes", "1e6,1e7", "--workloads", "train", "--budget", str(budget),
        "--processes", str(processes), "--no-progress", "--out", str(out),
    ]  # fmt: skip
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def gate_fails(base: Path, current: Path) -> bool:
    command = [sys.executable, "-m", "scaling_bench.frontends.cli", "compare", str(base),
               str(current), "--json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout)["failed_gate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=20)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--budget", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp, "base")
        run(base, args.processes, args.budget, None)
        false_alarms = detections = 0
        for i in range(args.reruns):
            rerun, one_thread = Path(tmp, f"rerun{i}"), Path(tmp, f"omp1-{i}")
            run(rerun, args.processes, args.budget, None)
            run(one_thread, args.processes, args.budget, 1)
            false_alarms += gate_fails(base, rerun)
            detections += gate_fails(base, one_thread)
            print(f"round {i + 1}: {false_alarms} false alarms, {detections} detections",
                  file=sys.stderr, flush=True)  # fmt: skip
    print("| processes | reruns | false alarms | OMP_NUM_THREADS=1 flagged |")
    print("| ---: | ---: | ---: | ---: |")
    n = args.reruns
    print(f"| {args.processes} | {n} | {false_alarms}/{n} | {detections}/{n} |")


if __name__ == "__main__":
    main()
