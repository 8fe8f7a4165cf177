"""An IsoFLOP design: the budgets, the sizes of each and the tokens of each size.

A study's compute is split into ``budgets`` budgets, each ``ratio`` times the one below; each
budget C trains ``sizes_per_budget`` sizes around the size a prior expects to be best,
N₀ = √(C / (6·r)) for r tokens per parameter (Chinchilla's 20 by default), spaced ``SIZE_STEP``
apart, each on D = C / (6N) tokens rounded to whole steps, with a cosine schedule over exactly
those steps. Every run is a convergence case with a token budget (``convergence tokens=D``, one
seed, evaluation at the start and the end only).

**From time to FLOPs.** A budget in seconds buys C = Σ 6·N·D only at the tokens/s each size
runs at (``frontier.throughput``, measured by ``frontier.run``'s probe). The largest budget is
the one whose runs' predicted time (training at the measured tokens/s, the two evaluations,
``RUN_OVERHEAD_S`` per run for the worker, the data set and the model) fills what is left of the
budget after the probe.

The design is kept in ``DIR/frontier-design.json`` before any run starts: ``--resume`` runs the
same design, never one re-derived from a throughput measured anew.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from scaling_bench.core.errors import UserError
from scaling_bench.core.units import fmt_count
from scaling_bench.frontier.options import MIN_SIZES, FrontierOptions
from scaling_bench.frontier.throughput import TokenRate
from scaling_bench.models import family, tokens_per_sample

DESIGN_FILE = "frontier-design.json"
#: Neighbouring sizes of one budget differ by this factor.
SIZE_STEP = 2.0
#: Neighbouring sizes of the throughput probe differ by at most this factor.
PROBE_STEP = 2.5
#: Seconds per run besides its steps and evaluations: the worker, the data set, the model
#: (measured here: 1–3 s for the sizes of a 15-minute study on this 2-core CPU).
RUN_OVERHEAD_S = 2.0
#: Seconds kept back for the fits, the bootstrap and the report at the end.
ANALYSIS_S = 20.0
#: An evaluation's forward pass costs about a third of a training step per token.
FORWARD_SHARE = 1 / 3
#: Evaluations of a run (before the first step, after the last), each of the held-out set and
#: as many training samples.
EVALUATIONS = 2
WARMUP_SHARE = 0.05
#: The largest size a design may hold: far beyond what a study here trains. The smallest is the
#: family's (``smallest_params``).
MAX_TARGET = 1e11
#: A design's smallest size sits this (relative) margin above the family's smallest config, so
#: that rounding in the budgets' arithmetic never asks for a size below it.
FLOOR_MARGIN = 1e-9


@dataclass(frozen=True)
class PlannedRun:
    """One run of the design: its budget, size, tokens (whole steps) and predicted seconds."""

    budget: float
    target_params: float
    params: int
    tokens: int
    steps: int
    predicted_s: float


@dataclass(frozen=True)
class Design:
    options: FrontierOptions
    budgets: tuple[float, ...]
    runs: tuple[PlannedRun, ...]
    probe_sizes: tuple[float, ...]
    #: Training samples every run draws from: as many as the longest run trains on, so no run
    #: sees a sample twice and all are evaluated on the same held-out set.
    train_size: int
    probe_s: float = 0.0

    @property
    def predicted_s(self) -> float:
        return sum(r.predicted_s for r in self.runs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Design:
        """The design ``to_dict`` wrote (``frontier-design.json``)."""
        return cls(
            FrontierOptions(**data["options"]),
            tuple(data["budgets"]),
            tuple(PlannedRun(**r) for r in data["runs"]),
            tuple(data["probe_sizes"]),
            data["train_size"],
            data["probe_s"],
        )

    def convergence(self, run: PlannedRun) -> dict[str, object]:
        """The run's convergence settings: its tokens, a cosine over its steps, one seed."""
        return self.common_convergence() | {
            "tokens": run.tokens,
            "warmup_steps": max(1, round(WARMUP_SHARE * run.steps)),
            "eval_every": run.steps,
        }

    def common_convergence(self) -> dict[str, object]:
        o = self.options
        return {
            "schedule": "cosine",
            "seeds": 1,
            "lrs": o.lrs,
            "dataset": o.dataset,
            "train_size": self.train_size,
            "heldout_size": o.heldout_size,
        }


class _Run(NamedTuple):
    budget: float
    target: float
    params: int
    per_sample: int
    steps: int
    batch: int

    @property
    def tokens(self) -> int:
        return self.steps * self.batch * self.per_sample


def _budgets(options: FrontierOptions, top: float) -> tuple[float, ...]:
    k = options.budgets
    return tuple(top / options.ratio ** (k - 1 - i) for i in range(k))


def _targets(options: FrontierOptions, flops: float) -> list[float]:
    centre = math.sqrt(flops / (6 * options.tokens_per_param))
    half = (options.sizes_per_budget - 1) / 2
    return [centre * SIZE_STEP ** (j - half) for j in range(options.sizes_per_budget)]


def _runs(options: FrontierOptions, top: float) -> list[_Run]:
    """Every run for largest budget ``top``; a run of less than one step has ``steps=0``."""
    fam = family(options.family)
    out = []
    for budget in _budgets(options, top):
        for target in _targets(options, budget):
            cfg = fam.config_for(target, **options.overrides)
            params, per_sample = fam.param_count(cfg), tokens_per_sample(options.family, cfg)
            assert per_sample is not None  # FrontierOptions refuses a family without one
            steps = round(budget / (6 * params) / (options.batch * per_sample))
            out.append(_Run(budget, target, params, per_sample, steps, options.batch))
    return out


def _seconds(options: FrontierOptions, run: _Run, train_size: int, throughput: TokenRate) -> float:
    """A run's predicted wall time: its steps, its evaluations, and the fixed overhead."""
    eval_samples = EVALUATIONS * (options.heldout_size + min(train_size, options.heldout_size))
    eval_tokens = eval_samples * run.per_sample * FORWARD_SHARE
    return (run.tokens + eval_tokens) / throughput(run.params) + RUN_OVERHEAD_S


def _train_size(runs: Sequence[_Run]) -> int:
    return max(r.steps * r.batch for r in runs)


def _total_s(options: FrontierOptions, runs: Sequence[_Run], throughput: TokenRate) -> float:
    size = _train_size(runs)
    return sum(_seconds(options, r, size, throughput) for r in runs)


def _problem(options: FrontierOptions, runs: Sequence[_Run]) -> str | None:
    """Why a design cannot be trained: a run of no step, a budget of fewer distinct sizes."""
    for r in runs:
        if r.steps < 1:
            return (
                f"the budget of {r.budget:.3g} FLOPs trains the {fmt_count(r.params)}-parameter "
                f"model for less than one step of {r.batch * r.per_sample:,} tokens"
            )
    for budget in sorted({r.budget for r in runs}):
        distinct = {r.params for r in runs if r.budget == budget}
        if len(distinct) < MIN_SIZES:
            return f"the budget of {budget:.3g} FLOPs has only {len(distinct)} distinct sizes"
    return None


@functools.cache
def smallest_params(name: str, overrides: tuple[tuple[str, object], ...] = ()) -> int:
    """The parameter count of family ``name``'s smallest buildable config (with the study's
    config fields ``overrides``): the smallest size a design may hold. The family says it by
    refusing any smaller target (``config_for``), so its ladder's floor is found by bisection
    on the target, never restated here (llama's is 1,082, moe's 1,350, gpt's a few hundred)."""
    fam = family(name)
    fields = dict(overrides)

    def builds(target: int) -> bool:
        try:
            fam.config_for(target, **fields)
        except UserError:
            return False
        return True

    low, high = 1, 1
    while not builds(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if builds(mid) else (mid, high)
    return fam.param_count(fam.config_for(high, **fields))


def _floor(options: FrontierOptions) -> float:
    """The smallest size a design of ``options`` may hold, with ``FLOOR_MARGIN``."""
    overrides = tuple(sorted(options.overrides.items()))
    return smallest_params(options.family, overrides) * (1 + FLOOR_MARGIN)


def _bisect(options: FrontierOptions, holds: Callable[[float], bool]) -> float:
    """The largest largest-budget C (FLOPs) at which ``holds``, on a log scale between the
    designs whose smallest size is the family's smallest (``_floor``) and whose largest is
    ``MAX_TARGET``."""
    half = (options.sizes_per_budget - 1) / 2
    spread = options.ratio ** (options.budgets - 1)
    low = 6 * options.tokens_per_param * (_floor(options) * SIZE_STEP**half) ** 2 * spread
    high = 6 * options.tokens_per_param * (MAX_TARGET / SIZE_STEP**half) ** 2
    if not holds(low):
        return low
    for _ in range(60):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if holds(mid) else (low, mid)
    return low


def _smallest(options: FrontierOptions) -> list[_Run]:
    """The runs of the smallest design that trains every run for a step or more."""
    top = _bisect(options, lambda c: _problem(options, _runs(options, c)) is not None)
    return _runs(options, top * 1.01)


def design(
    options: FrontierOptions,
    throughput: TokenRate,
    probe_sizes: tuple[float, ...] = (),
    probe_s: float = 0.0,
) -> Design:
    """The design for ``options`` at ``throughput`` (tokens/s against N), with ``probe_s``
    already spent of a time budget. ``UserError`` where the study is too small to train."""
    if options.flops is not None:
        top = options.flops / (options.sizes_per_budget * sum(_budgets(options, 1.0)))
        smallest_target = _targets(options, _budgets(options, top)[0])[0]
        floor = _floor(options)
        runs = _runs(options, top) if smallest_target >= floor else []
        problem = (
            _problem(options, runs)
            if runs
            else (
                f"its smallest budget's sizes start at {fmt_count(smallest_target)} parameters, "
                f"below the {options.family} family's smallest model ({fmt_count(floor)})"
            )
        )
        if problem:
            need_flops = 6 * sum(r.params * r.tokens for r in _smallest(options))
            raise UserError(
                f"--flops {options.flops:.3g}: too small: {problem}; "
                f"give at least {need_flops:.2g}, or lower --budgets or --ratio"
            )
    else:
        assert options.seconds is not None  # FrontierOptions holds exactly one of the two
        left = options.seconds - probe_s - ANALYSIS_S
        top = _bisect(options, lambda c: _total_s(options, _runs(options, c), throughput) <= left)
        runs = _runs(options, top)
        problem = _problem(options, runs)
        if problem or _total_s(options, runs, throughput) > left:
            need_s = _total_s(options, _smallest(options), throughput) + probe_s + ANALYSIS_S
            raise UserError(
                f"--budget {options.seconds:g}s: too small on this machine: "
                f"{problem or 'the smallest design does not fit in it'}; give at least "
                f"{math.ceil(need_s)}s, or lower --budgets or --ratio"
            )
    size = _train_size(runs)
    planned = tuple(
        PlannedRun(
            r.budget, r.target, r.params, r.tokens, r.steps, _seconds(options, r, size, throughput)
        )
        for r in runs
    )
    return Design(options, _budgets(options, top), planned, probe_sizes, size, probe_s)


def probe_ladder(sizes: Sequence[float], below: float, above: float) -> tuple[float, ...]:
    """Sizes from ``min(sizes)/below`` to ``max(sizes)·above``, at most ``PROBE_STEP`` apart."""
    lo, hi = min(sizes) / below, max(sizes) * above
    count = max(2, math.ceil(math.log(hi / lo) / math.log(PROBE_STEP)) + 1)
    return tuple(float(f"{lo * (hi / lo) ** (i / (count - 1)):.3g}") for i in range(count))


def load_design(out: Path) -> Design | None:
    path = out / DESIGN_FILE
    if not path.exists():
        return None
    try:
        return Design.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a frontier design ({exc}); use a new --out") from None


def save_design(out: Path, d: Design) -> None:
    path = out / DESIGN_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
