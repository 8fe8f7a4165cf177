"""Every figure a case records has a metric spec: readers ask the spec, so a name nobody
declared would be a figure nobody can read (compare would list it as having no spec)."""

from __future__ import annotations

import pytest

from scaling_bench.config.case import Case
from scaling_bench.core.metrics import all_specs, find
from scaling_bench.engine import execute
from scaling_bench.engine.protocol import Settings
from scaling_bench.models import FAMILY_NAMES
from scaling_bench.workloads.base import ordered

#: Every registered workload, at the least work that still runs each of them.
WORKLOADS = tuple(w.name for w in ordered())
CONVERGENCE = (("steps", 3), ("seeds", 1))
#: A short sequence keeps the gpt case (and its convergence data) small.
OVERRIDES = {"gpt": (("seq_len", 16),)}


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def fields(request: pytest.FixtureRequest) -> dict:
    family = request.param
    case = Case(
        family,
        1e4,
        workloads=WORKLOADS,
        budget_s=0.05,
        convergence=CONVERGENCE,
        overrides=OVERRIDES.get(family, ()),
    )
    out = execute.run_case(case.to_dict(), Settings(peak_flops=2e11))
    assert out["status"] in ("ok", "diverged"), out["error"]
    return out


@pytest.mark.parametrize("section", ["metrics", "predicted"])
def test_every_recorded_metric_has_a_spec(fields: dict, section: str) -> None:
    assert fields[section], f"no {section} at all"
    missing = sorted(name for name in fields[section] if find(name) is None)
    assert not missing, f"{section} without a spec: {', '.join(missing)}"


def test_every_metric_the_summary_shows_has_a_spec() -> None:
    missing = [n for w in ordered() for c in w.columns for n in c.metrics if find(n) is None]
    assert not missing


def test_a_derived_metric_names_a_source_that_has_a_spec() -> None:
    derived = [s for s in all_specs() if s.kind == "derived"]
    assert derived
    assert not [s.name for s in derived if find(s.derived_from) is None]


def test_each_workload_declares_its_specs_under_names_the_registry_knows() -> None:
    for w in ordered():
        for s in (*w.specs, *w.predicted_specs):
            assert find(s.name) == s
        assert find(f"{w.name}_s") is not None  # its whole time, as pytest-benchmark records it
