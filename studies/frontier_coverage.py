"""How often the frontier's 95% intervals hold the truth, on synthetic runs from a known law.

Each replicate draws an IsoFLOP design as ``frontier.design`` makes one (four budgets 3× apart
from 1.7·10¹¹ FLOPs, five sizes 2× apart around the size 20 tokens per parameter would make
best, D = C/(6N)) from Chinchilla's law (Hoffmann et al. 2022: E = 1.69, A = 406.4, B = 410.7,
α = 0.34, β = 0.28; its optimum lies one size step above each budget's centre), with
multiplicative log-normal noise on the loss, and fits approaches 2 and 3. Prints one markdown row
per noise level: the share of replicates whose interval holds the true value (approach 2: each
budget's N_opt, pooled, and the exponent a; approach 3: E, A, B, α, β, a and N_opt at the largest
budget). An unbounded N_opt interval (approach 2's Fieller set, where the parabola's curvature
is not clearly positive) holds the truth, and its share is shown too; an interval that could not
be had otherwise counts as a miss.

    python studies/frontier_coverage.py [--replicates 40] [--noise 0.003,0.02] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from scaling_bench.frontier.fit import Run, approach2
from scaling_bench.frontier.law import LossLaw, approach3

TRUTH = LossLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
BUDGETS = tuple(1.7e11 * 3.0**i for i in range(4))
SIZES_PER_BUDGET = 5
TOKENS_PER_PARAM = 20.0
LAW_NAMES = ("E", "A", "B", "alpha", "beta", "a")


def draw(rng: np.random.Generator, noise: float) -> list[Run]:
    """One design's runs, their losses from ``TRUTH`` times exp(N(0, noise))."""
    runs = []
    half = (SIZES_PER_BUDGET - 1) / 2
    for c in BUDGETS:
        centre = math.sqrt(c / (6 * TOKENS_PER_PARAM))
        for j in range(SIZES_PER_BUDGET):
            n = round(centre * 2.0 ** (j - half))
            d = round(c / (6 * n))
            loss = float(TRUTH.loss(n, d)) * math.exp(rng.normal(0, noise))
            runs.append(Run(f"c{c:g}-{j}", n, d, loss))
    return runs


def coverage(noise: float, replicates: int, seed: int, bootstrap: int) -> dict[str, float]:
    """Share of ``replicates`` whose interval holds the truth, by quantity."""
    hits: dict[str, list[bool]] = {}
    rng = np.random.default_rng(seed)
    for i in range(replicates):
        runs = draw(rng, noise)
        fit2 = approach2(runs)
        for b in fit2.budgets:
            unbounded = b.fitted and b.n_opt.low is None
            held = unbounded or (b.fitted and b.n_opt.contains(TRUTH.n_opt(b.flops)))
            hits.setdefault("2: N_opt", []).append(held)
            hits.setdefault("2: N_opt unbounded", []).append(unbounded)
        hits.setdefault("2: a", []).append(fit2.a is not None and fit2.a.contains(TRUTH.a))
        fit3 = approach3(runs, bootstrap=bootstrap, seed=i)
        for name in LAW_NAMES:
            held = name in fit3.intervals and fit3.intervals[name].contains(getattr(TRUTH, name))
            hits.setdefault(f"3: {name}", []).append(held)
        top = fit3.at(BUDGETS[-1]).get("n_opt")
        held = top is not None and top.contains(TRUTH.n_opt(BUDGETS[-1]))
        hits.setdefault("3: N_opt", []).append(held)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=40)
    parser.add_argument("--noise", default="0.003,0.02", help="comma-separated relative noises")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=50)
    args = parser.parse_args()
    try:
        noises = [float(x) for x in args.noise.split(",")]
    except ValueError:
        parser.exit(2, f"--noise {args.noise!r}: give comma-separated numbers, e.g. 0.003,0.02\n")
    start = time.perf_counter()
    rows = {noise: coverage(noise, args.replicates, args.seed, args.bootstrap) for noise in noises}
    names = list(next(iter(rows.values())))
    print(f"| noise | {' | '.join(names)} |")
    print(f"| ---: | {' | '.join('---:' for _ in names)} |")
    for noise, row in rows.items():
        print(f"| {noise:g} | {' | '.join(f'{100 * row[n]:.0f}%' for n in names)} |")
    load = os.getloadavg()[0]
    took = time.perf_counter() - start
    print(f"{args.replicates} replicates per noise, {took:.0f} s, load average {load:.2f}")


if __name__ == "__main__":
    main()
