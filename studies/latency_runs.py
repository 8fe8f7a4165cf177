"""How far a settled latency moves between separate runs: TTFT and TPOT over several processes.

A latency figure settles within its worker process: its interval says how well the calls of that
process pin their median, not how far the next run's median will be (a process's memory layout,
thread placement and the machine's load are shared by all its calls). This runs the same case
``--runs`` times, each in its own ``scaling-bench run``, and then once with ``--processes`` equal
to the runs, and prints per run the prefill (TTFT) and decode (TPOT) medians with what each record
says of itself (settled, and within what), then the spread between runs (max/min) beside each
run's own interval: the number that tells a user how much a settled figure is worth across runs.

    python studies/latency_runs.py [--runs 5] [--family gpt] [--size 1e6]    # ~4 min, 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from scaling_bench.core.stats import median_ci_halfwidth

TREE = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "scaling_bench.frontends.cli"]
FIGURES = {"TTFT": "inference_prefill_latency_p50_s", "TPOT": "inference_decode_latency_p50_s"}


def one_run(out: Path, args: argparse.Namespace, processes: int = 1) -> dict[str, dict]:
    """The inference figures of one ``run`` of the case into ``out``."""
    command = [*CLI, "run", "--families", args.family, "--sizes", args.size, "--workloads",
               "inference", "--budget", str(args.budget), "--processes", str(processes),
               "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=TREE, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr}")
    record = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    if record["status"] != "ok":
        raise RuntimeError(f"run {out} ended {record['status']}: {record.get('error')}")
    return record["metrics"]


def _row(label: str, metrics: dict[str, dict]) -> str:
    cells = []
    for name in FIGURES.values():
        m = metrics[name]
        half = median_ci_halfwidth(m["samples"]) if m.get("samples") else None
        ci = f" ±{100 * half / m['value']:.1f}%" if half is not None else ""
        cells.append(
            f"{1e3 * m['value']:.3f} ms{ci} ({'settled' if m.get('settled') else 'unsettled'}"
            f" within {m.get('settled_within', '?')})"
        )
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--family", default="gpt")
    parser.add_argument("--size", default="1e6")
    parser.add_argument("--budget", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(Path(tmp) / f"run-{i}", args) for i in range(args.runs)]
        pooled = one_run(Path(tmp) / "processes", args, processes=args.runs)
    print(f"{args.family} {args.size}, inference, --budget {args.budget}\n")
    print("| run | " + " | ".join(FIGURES) + " |\n|---|" + "---|" * len(FIGURES))
    for i, metrics in enumerate(runs, 1):
        print(_row(f"run {i}", metrics))
    print(_row(f"one run, --processes {args.runs}", pooled))
    for label, name in FIGURES.items():
        values = [m[name]["value"] for m in runs]
        print(f"\n{label}: {1e3 * min(values):.3f}-{1e3 * max(values):.3f} ms over {args.runs} "
              f"runs, max/min {max(values) / min(values):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
