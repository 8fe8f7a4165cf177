"""Which records are a design's training runs, and the setting their throughput is measured in.

Light on purpose (no torch, no scipy): the report asks of every record whether it belongs to the
frontier (``frontier.section``), so this module is what the report's seam loads.
"""

from __future__ import annotations

from collections.abc import Iterable

from scaling_bench.config.case import Case


def record_case(record: dict) -> Case | None:
    """The case a record describes, or None where its ``case`` is not one."""
    try:
        return Case.from_dict(record.get("case") or {})
    except (TypeError, ValueError):
        return None


def setting_of(case: Case) -> tuple:
    """What throughput depends on besides N: family, device, precision, batch, config fields."""
    return (case.family, case.device, case.precision, case.batch_size, case.overrides)


def token_budget(case: Case) -> object:
    """The case's convergence token budget (``convergence tokens=D``), None without one."""
    return dict(case.convergence).get("tokens")


def is_frontier_record(record: dict) -> bool:
    """Whether ``record`` is one of a design's training runs: a case with a token budget. Each
    trains its own D, so its N is not the only axis that moves: it belongs to the frontier's
    figures, never to a scaling series against N."""
    case = record_case(record)
    return case is not None and bool(token_budget(case))


def frontier_records(records: Iterable[dict]) -> list[dict]:
    """The records of a design's training runs (``is_frontier_record``), any status."""
    return [r for r in records if is_frontier_record(r)]
