"""The frontier of a results folder: its design's runs, both approaches, the time-optimal size.

**Counting.** N is every parameter of the model as its family counts it (``record["params"]``):
for gpt the tied token embedding once and the position table, as Chinchilla counts (Kaplan et
al. left embeddings out, which Pearce & Song 2024 show biases small-scale exponents). D is the
tokens trained, steps × batch × tokens per sample; C = 6·N·D. The loss is the held-out loss
after the last step (the runs see each training sample at most once, as Chinchilla's do).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scaling_bench.config.convergence import settings_for
from scaling_bench.core.errors import UserError
from scaling_bench.frontier.fit import BOOTSTRAP, CONFIDENCE, Approach2, Run, approach2
from scaling_bench.frontier.law import Approach3, approach3
from scaling_bench.frontier.machine import TimeOptimal, time_optimal, time_to_loss
from scaling_bench.frontier.records import (
    frontier_records,
    record_case,
    setting_of,
    token_budget,
)
from scaling_bench.frontier.throughput import Throughput, throughput_of
from scaling_bench.models import family, tokens_per_sample

LOSS_METRIC = "heldout_loss"
COUNTING = (
    "N counts every parameter (the tied token embedding once, the position table too), as "
    "Chinchilla does; D is the tokens trained; C = 6·N·D"
)


def _measured_loss(record: dict) -> float | None:
    metric = (record.get("metrics") or {}).get(LOSS_METRIC)
    value = metric.get("value") if isinstance(metric, dict) else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def trained_tokens(record: dict) -> int | None:
    """Tokens a convergence record with a token budget trained (steps × batch × tokens per
    sample); None for a record without a token budget."""
    case = record_case(record)
    if case is None or not record.get("config") or token_budget(case) is None:
        return None
    try:
        settings = settings_for(case)
    except (TypeError, UserError):  # settings this version does not know
        return None
    fam = family(case.family)
    per_sample = tokens_per_sample(case.family, fam.Config(**record["config"]))
    if not per_sample:
        return None
    batch = settings.batch_size or fam.DEFAULT_BATCH_SIZE
    from scaling_bench.workloads.convergence import steps_for  # torch, as the family has

    return steps_for(settings, batch, per_sample) * batch * per_sample


def frontier_runs(records: Iterable[dict]) -> list[Run]:
    """The finished runs of a design: convergence records with a token budget and a held-out
    loss (a diverged run has none: it is left out)."""
    runs = []
    for r in records:
        if r.get("status") != "ok" or not r.get("params"):
            continue
        tokens, loss = trained_tokens(r), _measured_loss(r)
        if tokens is not None and loss is not None:
            runs.append(Run(r["case_id"], int(r["params"]), tokens, loss, r.get("duration_s")))
    return runs


def envelope(runs: Sequence[Run]) -> list[Run]:
    """The frontier's lower envelope: runs with a lower loss than every run of less compute."""
    out: list[Run] = []
    for run in sorted(runs, key=lambda r: (r.flops, r.loss)):
        if not out or run.loss < out[-1].loss:
            out.append(run)
    return out


@dataclass(frozen=True)
class FrontierAnalysis:
    """Both approaches, N_opt/D_opt per budget, and the time-optimal answer for this machine."""

    runs: tuple[Run, ...]
    approach2: Approach2
    approach3: Approach3
    throughput: Throughput
    time_optimal: TimeOptimal | None
    target_loss: float | None
    time_to_target: list[dict]
    excluded: int = 0

    @property
    def budgets(self) -> list[float]:
        return [b.flops for b in self.approach2.budgets]

    @property
    def time_optimal_reason(self) -> str | None:
        """Why there is no time-optimal answer; None where there is one."""
        if self.time_optimal is not None:
            return None
        if self.approach3.law is None:
            return f"no fitted law ({self.approach3.reason})"
        if len(self.throughput.params) < 2:
            return (
                f"the train workload measured tokens/s at {len(self.throughput.params)} size(s) "
                "of the runs' setting, two are needed: run it at the design's sizes"
            )
        return "no training time (the runs record no duration): give frontier --optimal-for"

    def to_dict(self) -> dict:
        per_budget = [
            {"flops": c} | {k: v.to_dict() for k, v in self.approach3.at(c).items()}
            for c in self.budgets
        ]
        on_envelope = set(envelope(self.runs))
        return {
            "counting": COUNTING,
            "confidence": self.approach3.confidence,
            "runs": [
                r.__dict__ | {"flops": r.flops, "on_envelope": r in on_envelope} for r in self.runs
            ],
            "excluded_runs": self.excluded,
            "approach2": self.approach2.to_dict(),
            "approach3": self.approach3.to_dict() | {"per_budget": per_budget},
            "throughput": self.throughput.to_dict(),
            "time_optimal": self.time_optimal.to_dict() if self.time_optimal else None,
            "time_optimal_reason": self.time_optimal_reason,
            "target_loss": self.target_loss,
            "time_to_target": self.time_to_target,
        }


def analyse(
    records: Sequence[dict],
    seconds: float | None = None,
    target_loss: float | None = None,
    bootstrap: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> FrontierAnalysis | None:
    """The frontier of a results folder's records; None where it holds no design's runs.

    ``seconds`` is the wall-clock training budget for the time-optimal answer (default: the
    summed durations of the design's runs); ``target_loss`` the held-out loss whose time per
    size is given (default: the loss of the time-optimal answer)."""
    design = frontier_records(records)
    runs = frontier_runs(design)
    if not runs:
        return None
    a2 = approach2(runs, confidence)
    a3 = approach3(runs, bootstrap, confidence, seed)
    throughput = throughput_of(records, {setting_of(c) for r in design if (c := record_case(r))})
    if seconds is None:
        seconds = sum(r.duration_s or 0.0 for r in runs) or None
    best = time_optimal(a3, throughput, seconds, confidence) if seconds else None
    if target_loss is None and best is not None:
        target_loss = best.loss.value
    table = time_to_loss(a3, throughput, target_loss) if target_loss is not None else []
    return FrontierAnalysis(
        tuple(runs), a2, a3, throughput, best, target_loss, table, len(design) - len(runs)
    )
