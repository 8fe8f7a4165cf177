"""A case's workloads in one worker: a failing workload keeps what was measured before it."""

from __future__ import annotations

import pytest
import torch

from scaling_bench.config.case import Case
from scaling_bench.engine import execute
from scaling_bench.engine.protocol import Settings
from scaling_bench.workloads import checkpoint
from scaling_bench.workloads.setup import CaseSetup

CASE = Case("mlp", 1e4, workloads=("forward", "train", "checkpoint"), budget_s=0.2)


def test_every_workload_fills_its_metrics() -> None:
    fields = execute.run_case(CASE.to_dict(), Settings())
    assert fields["status"] == "ok"
    assert {"forward_step_s", "train_step_s", "checkpoint_bytes"} <= set(fields["metrics"])
    assert fields["params"] == sum(p.numel() for p in CaseSetup.build(CASE).model.parameters())


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("disk on fire"), "crashed"), (torch.OutOfMemoryError("no room"), "oom")],
)
def test_a_failing_workload_keeps_the_figures_measured_before_it(
    monkeypatch: pytest.MonkeyPatch, error: Exception, status: str
) -> None:
    def fail(*args: object, **kwargs: object) -> dict:
        raise error

    monkeypatch.setattr(checkpoint, "measure_checkpoint", fail)
    fields = execute.run_case(CASE.to_dict(), Settings())
    assert fields["status"] == status
    assert fields["error"].startswith("checkpoint: ")
    assert str(error) in fields["error"]
    assert {"forward_step_s", "train_step_s"} <= set(fields["metrics"])
    assert "checkpoint_bytes" not in fields["metrics"]
    assert fields["predicted"]["checkpoint_bytes"]["value"] > 0
