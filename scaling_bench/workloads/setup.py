"""A case's model, batch and optimizer, built once and shared by its workloads; and whether a
case can run at all.

Building costs seconds at large sizes, so the workloads of a case share one model; the pytest and
asv front-ends keep one ``CaseSetup`` per process for the same reason. The case's recipe
(``config.recipe.Recipe``, resolved once from the case) is applied here: the precision's
parameter dtype and model conversion (fp8's float8 layers), activation checkpointing,
``torch.compile`` and a ``max`` batch size, found by prediction and confirmed by a real step.

``skip_reason`` is the one answer to "can this case run": each recipe axis's own rule (its
owner's ``skip_reason``: the precision, the compile mode, the checkpointing policy), the rules
of their combination, and each workload's; ``scaling-bench run``, pytest and asv all ask it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from scaling_bench.config.case import Case
from scaling_bench.config.recipe import Recipe
from scaling_bench.core.optimizers import make_optimizer
from scaling_bench.core.precision import Precision
from scaling_bench.models import checkpointing, family
from scaling_bench.predict.batch import max_batch
from scaling_bench.predict.plan import Plan, plan_for
from scaling_bench.workloads import batch_search, compiled
from scaling_bench.workloads.base import ordered
from scaling_bench.workloads.compiled import compile_model
from scaling_bench.workloads.steps import forward_step, train_step


def skip_reason(case: Case, recipe: Recipe | None = None) -> str | None:
    """Why ``case`` (in ``recipe``, its own where None) cannot run: a precision the device lacks
    or that cannot train, CUDA graphs on a CPU, checkpointing without blocks, a recipe that runs
    on one process with a ``--strategy``, or one of its workloads (its family, its strategy);
    None where it can."""
    recipe = recipe or Recipe.of(case)
    prec = recipe.precision
    if reason := prec.skip_reason(torch.device(recipe.device)):
        return f"--precision {prec.name}: {reason}"
    if not prec.trains and any(w.trains for w in ordered(case.workloads)):
        return f"--precision {prec.name} is for inference; leave the training workloads out"
    if reason := compiled.skip_reason(recipe.compile, recipe.device):
        return reason
    if reason := checkpointing.skip_reason(case.family, recipe.activation_checkpointing):
        return reason
    if case.strategy and (recipe.batch_size == "max" or recipe.compile != compiled.EAGER):
        return "--batch-sizes max and --compile run on one process; leave them out with --strategy"
    return next((r for w in ordered(case.workloads) if (r := w.skip_reason(case))), None)


@dataclass
class CaseSetup:
    """``model`` is the module as built (what checkpoints save: no ``_orig_mod.`` prefix);
    ``step_model`` is what the timed steps call, the compiled module where the case compiles.
    ``found`` holds figures that setting up measured (how a ``max`` batch was found)."""

    case: Case
    recipe: Recipe
    plan: Plan
    device: torch.device
    model: nn.Module
    batch: tuple[torch.Tensor, torch.Tensor]
    optimizer: torch.optim.Optimizer
    step_model: nn.Module
    scaler: torch.amp.GradScaler | None = None
    found: dict[str, dict] = field(default_factory=dict)

    @property
    def precision(self) -> Precision:
        return self.recipe.precision

    @classmethod
    def build(
        cls, case: Case, plan: Plan | None = None, seed: int = 0, recipe: Recipe | None = None
    ) -> CaseSetup:
        """The case built on its device from a fixed seed (``plan``: the case's, if known;
        ``recipe``: the case's own where None)."""
        recipe = recipe or Recipe.of(case)
        prec = recipe.precision
        device = torch.device(recipe.device)
        fit = max_batch(case, recipe) if recipe.batch_size == "max" and plan is None else None
        if fit is not None:
            recipe = recipe.with_batch(fit.batch_size)
        p = plan or plan_for(case, recipe)
        recipe = recipe.with_batch(p.batch_size)
        fam = family(case.family)
        prec.set_backends(device)
        torch.manual_seed(seed)
        model = fam.build(p.config, device=device, dtype=prec.param_dtype)
        model = prec.convert(model, device)
        checkpointing.apply(model, case.family, recipe.activation_checkpointing)
        setup = cls(
            case,
            recipe,
            p,
            device,
            model,
            fam.sample_batch(p.config, p.batch_size, device=device, dtype=prec.param_dtype),
            make_optimizer(
                recipe.optimizer, model.parameters(), implementation=recipe.optimizer_implementation
            ),
            compile_model(model, recipe.compile),
            torch.amp.GradScaler(device.type) if prec.grad_scaler else None,
        )
        if fit is not None:
            setup.found = batch_search.confirm(setup, fit)
        return setup

    def with_batch_size(self, batch_size: int) -> None:
        """Replan and rebuild the batch at ``batch_size`` (a ``max`` batch backing off)."""
        del self.batch  # the old batch's memory is free before the new one is built
        self.recipe = self.recipe.with_batch(batch_size)
        self.plan = plan_for(self.case, self.recipe)
        fam = family(self.case.family)
        dtype = self.precision.param_dtype
        self.batch = fam.sample_batch(self.plan.config, batch_size, self.device, dtype=dtype)

    def train_step(self) -> Callable[[], torch.Tensor]:
        """The case's training step, in its precision, on ``step_model``."""
        return train_step(self.step_model, self.optimizer, self.batch, self.precision, self.scaler)

    def forward_step(self, grad_mode: bool = False) -> Callable[[], object]:
        """The case's inference step, in its precision, on ``step_model``."""
        return forward_step(self.step_model, self.batch[0], grad_mode, self.precision)

    def ensure_training_state(self) -> None:
        """One training step where none ran: the optimizer's state exists only after one."""
        if not self.optimizer.state:
            self.train_step()()
