"""How often the gate cries wolf on reruns of one commit, and whether it sees a real slowdown.

Three modes, each on the case of issue 11 (``--families mlp --sizes 1e6,1e7 --workloads train``):

- ``--mode unpaired`` (the default; what nightly tracking and hardware comparisons do): this
  machine's run-to-run drift measured as ``scaling-bench check`` does, then one base run and
  rounds of two single-process runs (a rerun, and a run under ``OMP_NUM_THREADS=1``), each
  compared with the base by ``compare``. A false alarm is a rerun that exits 1, a detection a
  1-thread run that does; reruns the drift left inconclusive are counted too.
- ``--mode ab`` (the gate that holds): ``scaling-bench ab`` of this tree against itself
  (a false alarm if it exits 1), interleaved with ``ab`` whose current side runs under
  ``OMP_NUM_THREADS=1`` against the 2-thread base (a detection if it exits 1).
- ``--mode processes``: as ``unpaired``, each run with ``--processes K``.

Every run shares a private cache (the GEMM peak, the drift), so no earlier figure leaks in.
Prints the drift (unpaired) and one markdown row: reruns, false alarms, detections, and the
range of the train step's ratios the gate saw (rerun and 1-thread).

    python studies/gate_noise.py [--reruns 20] [--detections 20]        # unpaired, ~25 min
    python studies/gate_noise.py --mode ab [--reruns 20] [--detections 5] [--rounds 4]
    python studies/gate_noise.py --mode processes [--reruns 20] [--processes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TREE = str(Path(__file__).resolve().parents[1])
GRID = ["--families", "mlp", "--sizes", "1e6,1e7", "--workloads", "train"]
CLI = [sys.executable, "-m", "scaling_bench.frontends.cli"]


def _gate(command: list[str]) -> tuple[bool, list[float], str | None]:
    """(failed, train-step ratios, drift line) of a ``compare`` or ``ab`` run with ``--json``."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=TREE)
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr)
    report = json.loads(done.stdout)
    ratios = [r["ratio"] for r in report["rows"] if r["metric"] == "train_step_s"]
    return report["failed_gate"], ratios, report.get("drift_line")


def ab(out: Path, rounds: int, budget: float, one_thread: bool) -> tuple[bool, list[float], None]:
    env = ["--current-env", "OMP_NUM_THREADS=1"] if one_thread else []
    command = [*CLI, "ab", "--base", TREE, *env, "--rounds", str(rounds), "--out", str(out),
               "--json", "--", *GRID, "--budget", str(budget)]  # fmt: skip
    failed, ratios, _ = _gate(command)
    return failed, ratios, None


def drift() -> float:
    """This machine's drift, measured now into the study's cache as ``scaling-bench check`` does."""
    code = "from scaling_bench.hardware.drift import run_drift; print(run_drift(refresh=True))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=TREE)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return float(done.stdout)


def run(out: Path, processes: int, budget: float, threads: int | None) -> None:
    command = [*CLI, "run", *GRID, "--budget", str(budget), "--processes", str(processes),
               "--no-progress", "--out", str(out)]  # fmt: skip
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, cwd=TREE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("unpaired", "ab", "processes"), default="unpaired")
    parser.add_argument("--reruns", type=int, default=20)
    parser.add_argument("--detections", type=int, help="1-thread runs (default: 5 for ab, "
                        "else as many as --reruns)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=4, help="ab: rounds per A/B")
    parser.add_argument("--processes", type=int, default=5, help="processes: workers per case")
    parser.add_argument("--budget", type=float, default=0.5)
    args = parser.parse_args()
    processes = 1 if args.mode == "unpaired" else args.processes
    detections = args.detections or (5 if args.mode == "ab" else args.reruns)
    alarms, caught, held, same, slow = 0, 0, 0, [], []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SCALING_BENCH_CACHE_DIR"] = str(Path(tmp, "cache"))
        if args.mode == "unpaired":
            print(f"run-to-run drift: σ {drift():.2%}", flush=True)
        base = Path(tmp, "base")
        if args.mode != "ab":
            run(base, processes, args.budget, None)
        for i in range(max(args.reruns, detections)):
            for one_thread, count in ((False, args.reruns), (True, detections)):
                if i >= count:
                    continue
                out = Path(tmp, f"{'omp1' if one_thread else 'rerun'}-{i}")
                if args.mode == "ab":
                    failed, ratios, line = ab(out, args.rounds, args.budget, one_thread)
                else:
                    run(out, processes, args.budget, 1 if one_thread else None)
                    failed, ratios, line = _gate([*CLI, "compare", str(base), str(out), "--json"])
                (slow if one_thread else same).extend(ratios)
                caught += failed and one_thread
                alarms += failed and not one_thread
                held += bool(line) and not one_thread
            print(f"{i + 1}: {alarms} false alarms, {caught} detections, {held} reruns "
                  "inconclusive within drift", file=sys.stderr, flush=True)  # fmt: skip
    what = f"{args.rounds} rounds" if args.mode == "ab" else f"{processes} processes"
    print("| mode | reruns | false alarms | inconclusive | 1-thread flagged | rerun ratios "
          "| 1-thread ratios |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    print(f"| {args.mode}, {what} | {args.reruns} | {alarms}/{args.reruns} | {held}/{args.reruns}"
          f" | {caught}/{detections} | {min(same):.3f}–{max(same):.3f}"
          f" | {min(slow):.3f}–{max(slow):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
