"""A case's workloads in one worker: a failing workload keeps what was measured before it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaling_bench.config import grid
from scaling_bench.config.case import Case
from scaling_bench.config.recipe import Recipe
from scaling_bench.engine import campaign, execute
from scaling_bench.engine.protocol import Settings
from scaling_bench.predict.plan import plan_for
from scaling_bench.workloads import checkpoint, setup
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


def test_a_case_handed_its_plan_is_not_planned_again(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_for(CASE)

    def replayed(*args: object) -> None:
        raise AssertionError("the worker planned the case again")

    monkeypatch.setattr(setup, "plan_for", replayed)
    fields = execute.run_case(CASE.to_dict(), Settings(), plan=plan)
    assert fields["status"] == "ok" and fields["params"] == plan.params


def test_the_campaign_keeps_each_fixed_batch_plan_and_leaves_a_max_batch_to_its_worker(
    tmp_path: Path,
) -> None:
    axes = {"family": "mlp", "target_params": "1e4", "workloads": "train", "batch_size": "8,max"}
    spec = grid.select("quick", axes, resolve=lambda _: "cpu")
    prepared = campaign.prepare(spec, tmp_path, settings=Settings(peak_flops=2e11))
    prepared.launcher.close()

    fixed, _ = sorted(prepared.cases, key=lambda c: c.batch_size == "max")
    assert list(prepared.plans) == [fixed.case_id]
    assert prepared.plans[fixed.case_id] == plan_for(fixed)


def test_a_case_the_planner_fails_on_is_skipped_with_the_reason_and_the_grid_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --families gpt,vit,resnet --precision fp32,amp-bf16`` recorded nothing when one
    case's plan raised: that case is skipped with the planner's error, the others planned."""

    def plan_or_fail(case: Case, recipe: Recipe | None = None):
        if case.family == "cnn":
            raise RuntimeError("mixed dtype (CPU): expect parameter to have scalar type of Float")
        return plan_for(case, recipe)

    monkeypatch.setattr(campaign, "plan_for", plan_or_fail)
    axes = {"family": "mlp,cnn", "target_params": "1e4", "workloads": "train"}
    spec = grid.select("quick", axes, resolve=lambda _: "cpu")
    prepared = campaign.prepare(spec, tmp_path, settings=Settings(peak_flops=2e11))
    prepared.launcher.close()

    mlp, cnn = sorted(prepared.cases, key=lambda c: c.family != "mlp")
    assert prepared.skipped == {
        cnn.case_id: "could not be planned: RuntimeError: mixed dtype (CPU): expect parameter "
        "to have scalar type of Float"
    }
    assert list(prepared.plans) == [mlp.case_id]
