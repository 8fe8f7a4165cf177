"""Predicted training peak against the exact CPU tensor meter, for every family and size.

For each case: the replayed prediction (``predict.memory.step_peak``, what ``plan`` reports as
``train_memory_bytes.total_bytes``, the CPU kernels' scratch included), then the real step on the
CPU, built as the engine builds it, measured by ``meters.tensor_memory.TensorMemory`` after a
warm-up step, and timed without the meter (median of a few steps) to give the meter's overhead.
Prints a markdown table; with ``--batch-sizes`` also checks ``affine_in_batch`` at several
batch sizes. ``--isas native,avx2,default`` runs the grid once per kernel ISA, each in a process of
its own under ``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA`` (read when torch loads), all
sharing one kernel-scratch cache: a figure cached under one ISA must not be served to another.

    python studies/memory_prediction.py [--sizes 1e5,1e7] [--families ...] [--precisions ...]
    python studies/memory_prediction.py --sizes 1e5,1e6 --optimizers adamw --repeats 1 \
        --isas native,avx2,default
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from scaling_bench.core import precision as precisions
from scaling_bench.core.optimizers import default_implementation, make_optimizer
from scaling_bench.meters.tensor_memory import TensorMemory
from scaling_bench.models import FAMILY_NAMES, family
from scaling_bench.predict.memory import affine_in_batch, step_peak
from scaling_bench.workloads.steps import train_step


def measure(name: str, size: float, prec_name: str, optimizer: str, batch_size: int | None,
            impl: str, repeats: int) -> dict:  # fmt: skip
    """The tensor meter's peak of one step after a warm-up, and the step's time without it."""
    fam = family(name)
    prec = precisions.get(prec_name)
    cfg = fam.config_for(size)
    batch_size = batch_size or fam.DEFAULT_BATCH_SIZE
    torch.manual_seed(0)
    model = fam.build(cfg, "cpu", prec.param_dtype)
    batch = fam.sample_batch(cfg, batch_size, "cpu", prec.param_dtype)
    opt = make_optimizer(optimizer, model.parameters(), implementation=impl)
    step = train_step(model, opt, batch, prec)
    step()
    opt.zero_grad(set_to_none=True)
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    held = [*model.parameters(), *model.buffers(), *state, *batch]
    with TensorMemory(held) as meter:
        train_step(model, opt, batch, prec, phase=meter.phase)()
    plain, metered = [], []  # alternated, so a busy machine slows both alike
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        plain.append(time.perf_counter() - start)
        opt.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with TensorMemory(held):
            step()
        metered.append(time.perf_counter() - start)
    return {"peak": meter.peak_bytes, "phase": meter.peak_phase, "cfg": cfg,
            "step_s": statistics.median(plain), "metered_s": statistics.median(metered),
            "batch_size": batch_size}  # fmt: skip


#: The environment of each ISA ``--isas`` names: oneDNN capped at AVX2 below the native one.
ISAS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def run_isas(args: argparse.Namespace) -> None:
    """This grid again in a process per ISA of ``args.isas``, one table, a column for the ISA."""
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "isas"]
    for n, isa in enumerate(args.isas.split(",")):
        env = {k: v for k, v in os.environ.items() if k not in ISAS["avx2"]} | ISAS[isa]
        done = subprocess.run([sys.executable, __file__, *argv], env=env, text=True,
                              capture_output=True, check=True)  # fmt: skip
        header, rule, *rows = done.stdout.splitlines()
        if n == 0:
            print(f"| ISA {header}\n|---{rule}")
        print("\n".join(f"| {isa} {row}" for row in rows), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILY_NAMES))
    parser.add_argument("--sizes", default="1e5,1e7")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--optimizers", default="adamw,sgd")
    parser.add_argument("--implementation", default=default_implementation("cpu"))
    parser.add_argument("--batch-sizes", default="", help="check affine_in_batch at these")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--isas", default="", help=f"a process per ISA of {', '.join(ISAS)}")
    args = parser.parse_args()
    if args.isas:
        run_isas(args)
        return
    print("| case | predicted | measured peak | measured − predicted | peak during (pred/meas) "
          "| kernel scratch at peak | step s | metered step s (×) | replay s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.families.split(","):
        for size in map(float, args.sizes.split(",")):
            for prec in args.precisions.split(","):
                for optimizer in args.optimizers.split(","):
                    m = measure(
                        name, size, prec, optimizer, None, args.implementation, args.repeats
                    )
                    start = time.perf_counter()
                    p = step_peak(name, m["cfg"], m["batch_size"], precisions.get(prec), optimizer,
                                  args.implementation)  # fmt: skip
                    plan_s = time.perf_counter() - start
                    print(f"| {name} {size:.0e} {prec} {optimizer} | {p.peak_bytes:,} | "
                          f"{m['peak']:,} | {m['peak'] - p.peak_bytes:+,} | {p.peak_phase}/"
                          f"{m['phase']} | {p.phases[p.peak_phase]['kernel_scratch']:,} | "
                          f"{m['step_s']:.4f} | {m['metered_s']:.4f} "
                          f"({m['metered_s'] / m['step_s']:.2f}×) | {plan_s:.2f} |",
                          flush=True)  # fmt: skip
                    for b in filter(None, args.batch_sizes.split(",")):
                        line = affine_in_batch(name, m["cfg"], precisions.get(prec), optimizer,
                                               args.implementation)  # fmt: skip
                        mb = measure(name, size, prec, optimizer, int(b), args.implementation, 1)
                        pred = line.bytes_at(int(b))
                        print(f"|   batch {b} (affine) | {pred:,} | {mb['peak']:,} | "
                              f"{mb['peak'] / pred:.3f} | | | | | |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
