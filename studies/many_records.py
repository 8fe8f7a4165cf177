"""A results folder of N synthetic records, to measure how the readers scale with the record count.

Each record has a real record's shape (the store's ``make_record``, the ``stats`` helpers the
workloads use, 30 raw samples per timed step) and its own case: five families, two precisions,
two batch sizes (so every case of the report's batch plot is a line) over N/20 sizes. Records are
serialised as ``append_record`` writes them and written in one append, not fsync'd one by one:
100k records take seconds.

    python studies/many_records.py OUT N
    /usr/bin/time -v scaling-bench report OUT --html OUT/r.html --markdown OUT/r.md
    /usr/bin/time -v scaling-bench compare OUT OUT
    /usr/bin/time -v scaling-bench merge OUT --out OUT-merged
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import UTC, datetime
from pathlib import Path

from scaling_bench.config.case import Case
from scaling_bench.core.stats import scaled, single, summarize
from scaling_bench.store.records import RESULTS_FILE, append_text, make_record, problem_with

FAMILIES = ("mlp", "cnn", "resnet", "vit", "gpt")
PRECISIONS = ("fp32", "bf16")
BATCHES = (8, 64)
ENV = {"cpu_model": "Synthetic CPU", "hostname": "many-records", "torch_version": "2.5.0"}
S_PER_FLOP = 1e-11
SAMPLES = 30


def record(i: int, rng: random.Random) -> dict:
    """The ``i``-th record: its case from ``i`` alone, so every index is a distinct case."""
    family = FAMILIES[i % len(FAMILIES)]
    precision = PRECISIONS[i // len(FAMILIES) % len(PRECISIONS)]
    batch = BATCHES[i // (len(FAMILIES) * len(PRECISIONS)) % len(BATCHES)]
    per = len(FAMILIES) * len(PRECISIONS) * len(BATCHES)
    target = 1e4 * 1.001 ** (i // per)  # distinct to format_size's 4 digits
    case = Case(family, target, precision, batch_size=batch)
    params = round(target)
    metrics, predicted = {}, {}
    for workload, flops in (("forward", 2 * params), ("train", 6 * params)):
        median = flops * batch * S_PER_FLOP
        step = summarize([median * (1 + rng.gauss(0, 0.02)) for _ in range(SAMPLES)], "s")
        metrics[f"{workload}_step_s"] = step
        metrics[f"{workload}_samples_per_s"] = scaled(step, batch, "samples/s", invert=True)
        predicted[f"{workload}_flops_per_sample"] = single(flops, "FLOP")
    memory = "train_peak_cpu_rss_above_baseline_bytes"
    metrics[memory] = single(16 * params * (1 + rng.gauss(0, 0.01)), "bytes")
    predicted[memory] = single(16 * params, "bytes")
    metrics["checkpoint_bytes"] = single(4 * params + 1000, "bytes")
    predicted["checkpoint_bytes"] = single(4 * params + 1000, "bytes")
    return make_record(
        case.case_id,
        case.to_dict(),
        "ok",
        env=ENV,
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        duration_s=1.0,
        params=params,
        metrics=metrics,
        predicted=predicted,
    )


def write(out: Path, n: int, seed: int = 0, chunk: int = 5000) -> Path:
    """``out/results.jsonl`` with ``n`` records (the first checked against the schema)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    path = out / RESULTS_FILE
    if problem := problem_with(record(0, random.Random(seed))):
        raise SystemExit(problem)
    for start in range(0, n, chunk):
        lines = (
            json.dumps(record(i, rng), sort_keys=True, allow_nan=False) + "\n"
            for i in range(start, min(n, start + chunk))
        )
        append_text(path, "".join(lines), "synthetic records", "run again")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write(args.out, args.n, args.seed))


if __name__ == "__main__":
    main()
