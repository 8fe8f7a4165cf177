"""An IsoFLOP design on this machine, run as ordinary cases: the data of a compute-optimal study.

A study's compute is split into ``budgets`` budgets, each ``ratio`` times the one below; each
budget C trains ``sizes_per_budget`` sizes around the size a prior expects to be best,
N₀ = √(C / (6·r)) for r tokens per parameter (Chinchilla's 20 by default), spaced ``SIZE_STEP``
apart, each on D = C / (6N) tokens rounded to whole steps, with a cosine schedule over exactly
those steps. Every run is a convergence case with a token budget (``convergence tokens=D``, one
seed, evaluation at the start and the end only), so it is a record in ``DIR/results.jsonl``
like any other, with the runner's locks, resume and fault handling.

**From time to FLOPs.** The design needs the machine's training throughput: a budget in seconds
buys C = Σ 6·N·D only at the tokens/s each size runs at. It is measured first, by the train
workload (ordinary cases too, timed for ``probe_budget_s`` each) at a ladder of sizes that
covers the design: for ``--flops`` the design's own sizes; for a time budget those of a design
made with the optimistic throughput peak FLOP/s ÷ (6N), which bounds the real sizes from above,
extended ×4 downwards and ×2 upwards. The largest budget is then the one whose runs' predicted
time (training at the measured tokens/s, the two evaluations, ``RUN_OVERHEAD_S`` per run for the
worker, the data set and the model) fills what is left of the budget after the probe.

The design is kept in ``DIR/frontier-design.json`` before any run starts: ``--resume`` runs the
same design, never one re-derived from a throughput measured anew.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from scaling_bench.config.case import Case
from scaling_bench.config.grid import GridSpec
from scaling_bench.core import precision as precisions
from scaling_bench.core.errors import UserError
from scaling_bench.core.units import fmt_count
from scaling_bench.engine.protocol import Settings
from scaling_bench.models import FAMILY_NAMES, family, tokens_per_sample
from scaling_bench.store.records import RESULTS_FILE, load_records
from scaling_bench.workloads.catalog import CONVERGENCE, TRAIN

DESIGN_FILE = "frontier-design.json"
#: Chinchilla's compute-optimal ratio: where the sizes of each budget are centred.
PRIOR_TOKENS_PER_PARAM = 20.0
#: Neighbouring sizes of one budget differ by this factor.
SIZE_STEP = 2.0
#: Neighbouring sizes of the throughput probe differ by at most this factor.
PROBE_STEP = 2.5
#: The probe's sizes reach this far beyond an optimistic design's (module docstring).
PROBE_BELOW, PROBE_ABOVE = 4.0, 2.0
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
MIN_SIZES, MIN_BUDGETS, MIN_RATIO = 3, 2, 2.0
#: The sizes a design may hold: the smallest is about the tiniest gpt, the largest far
#: beyond what a study here trains.
MIN_TARGET, MAX_TARGET = 1e3, 1e11
#: A case may run this many times its predicted time (plus a minute) before it is stopped.
TIMEOUT_FACTOR = 4.0


@dataclass(frozen=True)
class FrontierOptions:
    """What the user asked for; exactly one of ``seconds`` and ``flops`` is the study's size."""

    family: str = "gpt"
    seconds: float | None = None
    flops: float | None = None
    dataset: str = "text"
    budgets: int = 4
    ratio: float = 3.0
    sizes_per_budget: int = 5
    tokens_per_param: float = PRIOR_TOKENS_PER_PARAM
    seq_len: int | None = 64
    batch_size: int | None = None
    lrs: tuple[float, ...] = (2e-3,)
    precision: str = "fp32"
    device: str = "cpu"
    heldout_size: int = 512
    probe_budget_s: float = 1.0
    #: Torch threads per worker (None: torch's default, one per core).
    threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lrs", tuple(float(lr) for lr in self.lrs))
        if (self.seconds is None) == (self.flops is None):
            raise UserError("give the study's size as one of --budget (time) and --flops")
        fam = family(self.family)
        if not hasattr(fam, "tokens_per_sample"):
            with_tokens = [n for n in FAMILY_NAMES if hasattr(family(n), "tokens_per_sample")]
            raise UserError(
                f"--family {self.family}: a frontier is in tokens, and the {self.family} family "
                f"has no token count per sample; use {' or '.join(with_tokens)}"
            )
        from scaling_bench.models.datasets import check_dataset  # torch: not to read records

        check_dataset(self.dataset, self.family)
        if self.sizes_per_budget < MIN_SIZES:
            raise UserError(
                f"--sizes-per-budget {self.sizes_per_budget}: a budget's parabola in log N "
                f"needs at least {MIN_SIZES} sizes"
            )
        if self.budgets < MIN_BUDGETS:
            raise UserError(
                f"--budgets {self.budgets}: the scaling exponents need at least {MIN_BUDGETS}"
            )
        if not self.ratio >= MIN_RATIO:
            raise UserError(
                f"--ratio {self.ratio:g}: budgets must be at least {MIN_RATIO:g}x apart"
            )
        for name in ("seconds", "flops", "tokens_per_param", "probe_budget_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"frontier {name}={value!r} must be a positive number")
        precisions.get(self.precision)
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads}: must be at least 1")

    @property
    def overrides(self) -> dict[str, object]:
        return {} if self.seq_len is None else {"seq_len": self.seq_len}

    @property
    def batch(self) -> int:
        return self.batch_size or family(self.family).DEFAULT_BATCH_SIZE


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


# Throughput ---------------------------------------------------------------------------------

TOKENS_PER_S = f"{TRAIN.name}_tokens_per_s"


@dataclass(frozen=True)
class Throughput:
    """Training tokens/s against N, measured; log–log interpolation inside the measured sizes."""

    params: tuple[float, ...]
    tokens_per_s: tuple[float, ...]

    def __post_init__(self) -> None:
        order = sorted(range(len(self.params)), key=lambda i: self.params[i])
        object.__setattr__(self, "params", tuple(float(self.params[i]) for i in order))
        object.__setattr__(self, "tokens_per_s", tuple(float(self.tokens_per_s[i]) for i in order))

    def __call__(self, n: float | np.ndarray) -> float | np.ndarray:
        """Tokens/s at ``n``; beyond the measured sizes the end segments' slopes continue, but
        never rising with N (a noisy end segment must not make smaller models slower). Only
        ``engine.frontier``'s design extrapolates; the time-optimal search stays inside."""
        logs_n, logs_t = np.log(self.params), np.log(self.tokens_per_s)
        ln = np.log(n)
        inside = np.interp(ln, logs_n, logs_t)
        if len(logs_n) < 2:
            return np.exp(inside)
        first = min(0.0, (logs_t[1] - logs_t[0]) / (logs_n[1] - logs_n[0]))
        last = min(0.0, (logs_t[-1] - logs_t[-2]) / (logs_n[-1] - logs_n[-2]))
        low = logs_t[0] + (ln - logs_n[0]) * first
        high = logs_t[-1] + (ln - logs_n[-1]) * last
        return np.exp(np.where(ln < logs_n[0], low, np.where(ln > logs_n[-1], high, inside)))

    def to_dict(self) -> dict:
        return {"params": list(self.params), "tokens_per_s": list(self.tokens_per_s)}


def record_case(record: dict) -> Case | None:
    """The case a record describes, or None where its ``case`` is not one."""
    try:
        return Case.from_dict(record.get("case") or {})
    except (TypeError, ValueError):
        return None


def setting_of(case: Case) -> tuple:
    """What throughput depends on besides N: family, device, precision, batch, config fields."""
    return (case.family, case.device, case.precision, case.batch_size, case.overrides)


def throughput_of(records: Iterable[dict], settings: set[tuple] | None = None) -> Throughput:
    """Training tokens/s against N from the train workload's records, of the ``settings``
    (``setting_of``) where given; the best figure per size (contention only ever slows)."""
    best: dict[int, float] = {}
    for r in records:
        case = record_case(r)
        metric = (r.get("metrics") or {}).get(TOKENS_PER_S)
        if case is None or r.get("status") != "ok" or not isinstance(metric, dict):
            continue
        if settings is not None and setting_of(case) not in settings:
            continue
        value = metric.get("value")
        if isinstance(value, int | float) and value > 0 and r.get("params"):
            best[int(r["params"])] = max(best.get(int(r["params"]), 0.0), float(value))
    return Throughput(tuple(best), tuple(best.values()))


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
            steps = round(budget / (6 * params) / (options.batch * per_sample))
            out.append(_Run(budget, target, params, per_sample, steps, options.batch))
    return out


def _seconds(options: FrontierOptions, run: _Run, train_size: int, throughput: Throughput) -> float:
    """A run's predicted wall time: its steps, its evaluations, and the fixed overhead."""
    eval_samples = EVALUATIONS * (options.heldout_size + min(train_size, options.heldout_size))
    eval_tokens = eval_samples * run.per_sample * FORWARD_SHARE
    return (run.tokens + eval_tokens) / throughput(run.params) + RUN_OVERHEAD_S


def _train_size(runs: Sequence[_Run]) -> int:
    return max(r.steps * r.batch for r in runs)


def _total_s(options: FrontierOptions, runs: Sequence[_Run], throughput: Throughput) -> float:
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


def _bisect(options: FrontierOptions, holds: Callable[[float], bool]) -> float:
    """The largest largest-budget C (FLOPs) at which ``holds``, on a log scale between the
    designs whose smallest size is ``MIN_TARGET`` and whose largest is ``MAX_TARGET``."""
    half = (options.sizes_per_budget - 1) / 2
    spread = options.ratio ** (options.budgets - 1)
    low = 6 * options.tokens_per_param * (MIN_TARGET * SIZE_STEP**half) ** 2 * spread
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
    throughput: Throughput,
    probe_sizes: tuple[float, ...] = (),
    probe_s: float = 0.0,
) -> Design:
    """The design for ``options`` at ``throughput`` (tokens/s against N), with ``probe_s``
    already spent of a time budget. ``UserError`` where the study is too small to train."""
    if options.flops is not None:
        top = options.flops / (options.sizes_per_budget * sum(_budgets(options, 1.0)))
        smallest_target = _targets(options, _budgets(options, top)[0])[0]
        runs = _runs(options, top) if smallest_target >= MIN_TARGET else []
        problem = (
            _problem(options, runs)
            if runs
            else (
                f"its smallest budget's sizes start at {fmt_count(smallest_target)} parameters, "
                f"below the smallest model a design trains ({fmt_count(MIN_TARGET)})"
            )
        )
        if problem:
            need = 6 * sum(r.params * r.tokens for r in _smallest(options))
            raise UserError(
                f"--flops {options.flops:.3g}: too small: {problem}; give at least {need:.2g}, "
                "or lower --budgets or --ratio"
            )
    else:
        left = options.seconds - probe_s - ANALYSIS_S
        top = _bisect(options, lambda c: _total_s(options, _runs(options, c), throughput) <= left)
        runs = _runs(options, top)
        problem = _problem(options, runs)
        if problem or _total_s(options, runs, throughput) > left:
            need = _total_s(options, _smallest(options), throughput) + probe_s + ANALYSIS_S
            raise UserError(
                f"--budget {options.seconds:g}s: too small on this machine: "
                f"{problem or 'the smallest design does not fit in it'}; give at least "
                f"{math.ceil(need)}s, or lower --budgets or --ratio"
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


# Running --------------------------------------------------------------------------------------


def _spec(
    options: FrontierOptions, workload: str, sizes: Sequence[float], **values: tuple
) -> GridSpec:
    return GridSpec(
        sizes={options.family: tuple(sorted(set(sizes)))},
        values={
            "workloads": ((workload,),),
            "precision": (options.precision,),
            "device": (options.device,),
            "batch_size": (options.batch_size,),
        }
        | values,
        overrides={options.family: options.overrides} if options.overrides else {},
    )


def _probe(
    options: FrontierOptions, sizes: Sequence[float], out: Path, resume: bool, progress: bool
) -> Throughput:
    """Train-workload cases at ``sizes``; their tokens/s against N is the design's throughput."""
    from scaling_bench.engine.campaign import prepare

    spec = _spec(options, TRAIN.name, sizes, budget_s=(options.probe_budget_s,), timeout_s=(300.0,))
    campaign = prepare(spec, out, resume=resume, settings=Settings(threads=options.threads))
    campaign.run(progress=progress)
    wanted = {setting_of(c) for c in campaign.cases}
    measured = throughput_of(load_records(out / RESULTS_FILE), wanted)
    if len(measured.params) < 2:
        raise UserError(
            f"{out}: the throughput probe measured {len(measured.params)} size(s), two are "
            "needed; its records say why"
        )
    return measured


def _optimistic(options: FrontierOptions) -> Throughput:
    """Tokens/s at the device's peak FLOP/s: no size can train faster."""
    from scaling_bench.hardware.peaks import peak_flops

    prec = precisions.get(options.precision)
    peak, _ = peak_flops(options.device, prec.compute_dtype, tf32=prec.tf32)
    return lambda n: peak / (6 * n)


def load_design(out: Path) -> Design | None:
    path = out / DESIGN_FILE
    if not path.exists():
        return None
    try:
        return Design.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a frontier design ({exc}); use a new --out") from None


def _save_design(out: Path, d: Design) -> None:
    path = out / DESIGN_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _same_options(held: FrontierOptions, asked: FrontierOptions, out: Path) -> None:
    for f in fields(FrontierOptions):
        if getattr(held, f.name) != getattr(asked, f.name):
            raise UserError(
                f"{out / DESIGN_FILE} was designed with {f.name}={getattr(held, f.name)!r}, and "
                f"this run asks for {getattr(asked, f.name)!r}; resume with the same options, "
                "or use a new --out"
            )


def prepare_design(options: FrontierOptions, out: Path, resume: bool, progress: bool) -> Design:
    """The folder's design (``--resume``), or a new one after the throughput probe."""
    held = load_design(out)
    if held is not None:
        if not resume:
            raise UserError(
                f"{out} already holds a frontier design ({DESIGN_FILE}); pass --resume to run "
                "the runs it lacks, or use a new --out"
            )
        _same_options(held.options, options, out)
        return held
    started = time.perf_counter()
    try:
        first = design(options, _optimistic(options) if options.seconds else _flat)
    except UserError as exc:
        if options.seconds is None:
            raise
        raise UserError(
            f"{exc} (a bound at the device's peak FLOP/s: expect to need more)"
        ) from None
    below = PROBE_BELOW if options.seconds else 1.0
    ladder = probe_ladder([r.params for r in first.runs], below, PROBE_ABOVE)
    measured = _probe(options, ladder, out, resume, progress)
    d = design(options, measured, ladder, time.perf_counter() - started)
    _save_design(out, d)
    return d


def _flat(n: float) -> float:
    """A stand-in throughput for a FLOP-sized design, whose runs do not depend on it."""
    return 1.0


def run_design(d: Design, out: Path, resume: bool, progress: bool) -> tuple[list[dict], str | None]:
    """Every run of the design, as convergence cases through the campaign and the runner, and
    the line saying why some were left where a time budget ran out (``engine.frontier_budget``:
    the runs get what the design left them after the probe and the analysis)."""
    from scaling_bench.engine.campaign import prepare
    from scaling_bench.engine.frontier_budget import BudgetKeeper

    started = time.perf_counter()
    o = d.options
    timeout = TIMEOUT_FACTOR * max(r.predicted_s for r in d.runs) + 60.0
    spec = _spec(o, CONVERGENCE.name, [r.target_params for r in d.runs], timeout_s=(timeout,))
    spec = replace(spec, convergence=d.common_convergence())
    campaign = prepare(spec, out, resume=True, settings=Settings(threads=o.threads))
    by_size = {c.target_params: c for c in campaign.cases}
    cases, skipped = [], {}
    for run in d.runs:
        base = by_size[run.target_params]
        case = replace(base, convergence=tuple(sorted(d.convergence(run).items())))
        cases.append(case)
        if base.case_id in campaign.skipped:
            skipped[case.case_id] = campaign.skipped[base.case_id]
    campaign = replace(campaign, cases=cases, skipped=skipped, resume=resume)
    if o.seconds is None:
        return campaign.run(progress=progress), None
    done = {r["case_id"] for r in load_records(out / RESULTS_FILE)}
    plans = [(c.case_id, r) for c, r in zip(cases, d.runs, strict=True) if c.case_id not in skipped]
    keeper = BudgetKeeper(
        {i: r for i, r in plans if i not in done},
        deadline=started + o.seconds - d.probe_s - ANALYSIS_S,
        begun={r.budget for i, r in plans if i in done},
    )
    return campaign.run(progress=progress, stop=keeper.stop), keeper.note(len(d.runs))
