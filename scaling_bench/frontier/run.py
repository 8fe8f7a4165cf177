"""Running a design on this machine, as ordinary cases: the throughput probe, then the runs.

The design needs the machine's training throughput, measured first by the train workload
(ordinary cases too, timed for ``probe_budget_s`` each) at a ladder of sizes that covers the
design: for ``--flops`` the design's own sizes; for a time budget those of a design made with
the optimistic throughput peak FLOP/s ÷ (6N), which bounds the real sizes from above, extended
×4 downwards and ×2 upwards. Every run is then a record in ``DIR/results.jsonl`` like any other,
with the runner's locks, resume and fault handling; a time budget is kept by
``frontier.budget``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from scaling_bench.config.grid import GridSpec
from scaling_bench.core.errors import UserError
from scaling_bench.engine.protocol import Settings
from scaling_bench.frontier.design import (
    ANALYSIS_S,
    DESIGN_FILE,
    Design,
    design,
    load_design,
    probe_ladder,
    save_design,
)
from scaling_bench.frontier.options import FrontierOptions
from scaling_bench.frontier.records import setting_of
from scaling_bench.frontier.throughput import Throughput, TokenRate, throughput_of
from scaling_bench.store.records import RESULTS_FILE, load_records
from scaling_bench.workloads.catalog import CONVERGENCE, TRAIN

if TYPE_CHECKING:
    from scaling_bench.engine.runner import ShowProgress

#: The probe's sizes reach this far beyond an optimistic design's (module docstring).
PROBE_BELOW, PROBE_ABOVE = 4.0, 2.0
#: A case may run this many times its predicted time (plus a minute) before it is stopped.
TIMEOUT_FACTOR = 4.0


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
    options: FrontierOptions,
    sizes: Sequence[float],
    out: Path,
    resume: bool,
    progress: ShowProgress | None,
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


def _optimistic(options: FrontierOptions) -> TokenRate:
    """Tokens/s at the device's peak FLOP/s: no size can train faster."""
    from scaling_bench.hardware.peaks import peak_flops

    prec = options.precision_of
    peak, _ = peak_flops(options.device, prec.compute_dtype, tf32=prec.tf32)
    return lambda n: peak / (6 * n)


def _same_options(held: FrontierOptions, asked: FrontierOptions, out: Path) -> None:
    for f in fields(FrontierOptions):
        if getattr(held, f.name) != getattr(asked, f.name):
            raise UserError(
                f"{out / DESIGN_FILE} was designed with {f.name}={getattr(held, f.name)!r}, and "
                f"this run asks for {getattr(asked, f.name)!r}; resume with the same options, "
                "or use a new --out"
            )


def prepare_design(
    options: FrontierOptions, out: Path, resume: bool, progress: ShowProgress | None
) -> Design:
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
    save_design(out, d)
    return d


def _flat(n: float) -> float:
    """A stand-in throughput for a FLOP-sized design, whose runs do not depend on it."""
    return 1.0


def run_design(
    d: Design, out: Path, resume: bool, progress: ShowProgress | None
) -> tuple[list[dict], str | None]:
    """Every run of the design, as convergence cases through the campaign and the runner, and
    the line saying why some were left where a time budget ran out (``frontier.budget``:
    the runs get what the design left them after the probe and the analysis)."""
    from scaling_bench.engine.campaign import prepare
    from scaling_bench.frontier.budget import BudgetKeeper

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
