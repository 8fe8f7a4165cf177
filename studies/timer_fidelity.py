"""Does the suite's timer agree with ``torch.utils.benchmark``? The fidelity benchmark.

For a reference training step of each family (the quick grid's middle size, its default batch),
the same step object is timed by ``torch.utils.benchmark.Timer.blocked_autorange`` and by the
suite's ``meters.timing.measure``, in pairs interleaved over ``--rounds`` rounds (the order
alternates, so drift and load hit both alike). The ratio of the two medians of the per-round
medians is printed per family; DESIGN's target is within ±3% on this CPU.

    python studies/timer_fidelity.py [--rounds 5] [--budget 2]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.utils.benchmark as torch_benchmark

import scaling_bench.workloads  # noqa: F401  (registers the workloads)
from scaling_bench.config.case import Case
from scaling_bench.meters.timing import measure
from scaling_bench.models import FAMILY_NAMES
from scaling_bench.workloads.base import get
from scaling_bench.workloads.setup import CaseSetup

SIZES = {"mlp": 1e6, "cnn": 1e5, "resnet": 1e5, "vit": 1e5, "gpt": 1e5}


def reference(step: Callable[[], object], budget_s: float) -> float:
    """Seconds per step by ``torch.utils.benchmark``, given about the suite's budget, on as many
    threads as the suite uses (its Timer defaults to one)."""
    threads = torch.get_num_threads()
    timer = torch_benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=budget_s).median


def ours(step: Callable[[], object], budget_s: float) -> float:
    return measure(step, "cpu", budget_s=budget_s).median_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=2.0)
    parser.add_argument("--families", default=",".join(FAMILY_NAMES))
    args = parser.parse_args()
    for family in args.families.split(","):
        setup = CaseSetup.build(Case(family, SIZES[family]))
        step = get("train").step(setup)
        step()  # the cold start, for both
        pairs: dict[str, list[float]] = {"torch": [], "suite": []}
        for i in range(args.rounds):
            order = (("torch", reference), ("suite", ours))
            for name, timer in order if i % 2 == 0 else order[::-1]:
                pairs[name].append(timer(step, args.budget))
        theirs, mine = (statistics.median(pairs[k]) for k in ("torch", "suite"))
        print(
            f"{family:6} {SIZES[family]:.0e}: torch.utils.benchmark {theirs * 1e3:8.3f} ms, "
            f"suite {mine * 1e3:8.3f} ms, ratio {mine / theirs:.3f}"
        )


if __name__ == "__main__":
    main()
