"""asv suites: the cases of ``scaling-bench run``, tracked over commits; generated from registries.

**Parameters.** One asv parameter per axis that tells a grid's cases apart (``suites.ASV_AXES``:
family, target_params as its size token ``'1e5'``, dtype, device, batch_size, optimizer, …; every
``multi`` axis of ``config.axes.AXES`` and the device), with the values present in the grid the
``SCALING_BENCH_*`` variables choose (docs/frontends.md), so asv's web UI plots each figure along
the size. A combination that is no case of the grid (a size one family lacks) is skipped, and so
is a case this machine cannot run in-process (a GPU case without a GPU, a distributed case).

**Benchmarks**, one class per workload of the registry (``workloads.base``), plugins included
(``$SCALING_BENCH_PLUGINS``): nothing here names a workload.

- ``{Workload}Step.time_{workload}_sample``, for each workload with a step (``with_step()``): the
  step timed by ``suites.SampleClock``, which synchronises on CUDA and divides by the batch, so it
  reads seconds per sample. The model is built once per process (asv_runner re-runs ``setup``
  before every timed call; ``setup`` only looks it up).
- ``{Workload}.track_{metric}``, for each metric spec of each workload (``core.metrics``) that is
  lower-is-better and measured or counted: times in seconds, bytes, losses, error rates, counts,
  each in its spec's unit, under the record's metric name (so ``scaling-bench compare`` joins it
  with the other front-ends). asv takes lower as better, so the rest is left out: higher-is-better
  figures (throughput, FLOP/s, MFU, bandwidth) are each derived from a tracked time by a constant
  and share its verdict; derived lower-is-better ones (seconds per sample) likewise, their source
  being tracked; figures without a direction (the best LR) and bookkeeping are no verdict at all.

**One run feeds every track.** The ``track_`` classes share one ``setup_cache`` (asv keys a
cache by the function's file and line, so one function inherited by every class runs once per
``asv run``, and asv passes its value as the first argument of each ``track_`` call): it measures
each workload of each case once, in one process (``suites.measure_all``), and every track reads
its figure from the result. A figure this machine does not record (a GPU peak on a CPU, a
distributed-only figure) is skipped; a workload that failed on a case fails its tracks with the
message.
"""

import re

from scaling_bench.core.metrics import LOWER, MetricSpec
from scaling_bench.frontends import suites
from scaling_bench.workloads.base import Workload, ordered, with_step

suites.load_plugins()
GRID = suites.AsvGrid(suites.bench_cases())
#: asv's names for the units it formats (others are shown as they are).
ASV_UNITS = {"s": "seconds", "bytes": "bytes"}


class _Case:
    params = GRID.params
    param_names = GRID.param_names
    timeout = 600.0  # one benchmark process: import, build and measure the largest full-grid case


class _Figures(_Case):
    timeout = 60.0  # a track reads its figure from the cache

    def setup_cache(self) -> dict[str, dict[str, dict]]:
        return suites.measure_all(GRID.runnable())

    setup_cache.timeout = GRID.timeout_s


def tracked(spec: MetricSpec) -> bool:
    """Whether a metric is an asv ``track_`` benchmark (module docstring)."""
    return spec.compared and spec.better == LOWER and spec.kind in ("measured", "counted")


def _class_name(workload: Workload) -> str:
    return "".join(part.title() for part in re.split(r"[^0-9A-Za-z]+", workload.name) if part)


def _step_suite(w: Workload) -> type:
    clock = suites.SampleClock()

    def setup(self: object, *values: object) -> None:
        self.step = suites.asv_step(GRID.case_for(values, w), w, clock)

    def time_sample(self: object, *values: object) -> None:
        self.step()

    time_sample.__doc__ = f"One {w.name} step, in seconds per sample."
    body = {"timer": clock, "setup": setup, f"time_{w.name}_sample": time_sample}
    return type(f"{_class_name(w)}Step", (_Case,), body | {"__doc__": time_sample.__doc__})


def _track(w: Workload, spec: MetricSpec) -> object:
    def track(self: object, figures: dict, *values: object) -> float:
        return suites.asv_figure(figures, GRID.case_for(values, w), w, spec.name)

    track.unit = ASV_UNITS.get(spec.unit, spec.unit)
    track.__doc__ = f"{spec.label or spec.name} ({spec.unit}), from the {w.name} workload."
    return track


def _track_suite(w: Workload) -> type | None:
    body = {f"track_{s.name}": _track(w, s) for s in w.specs if tracked(s)}
    if not body:
        return None
    doc = f"The {w.name} workload's figures."
    return type(_class_name(w), (_Figures,), body | {"__doc__": doc})


SUITES = [
    *(_step_suite(w) for w in with_step()),
    *filter(None, (_track_suite(w) for w in ordered())),
]
globals().update({suite.__name__: suite for suite in SUITES})
