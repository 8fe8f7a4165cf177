"""One case, inside its worker: build the model once, then run each asked-for workload on it.

Workloads share the worker because starting Python and importing torch costs seconds (DESIGN §4).
They run in a fixed order, forward before train, so the inference peak is not inflated by
gradients and optimizer state, and checkpoint last, so it can save the optimizer state that
training created; convergence trains fresh models of its own, last. A case whose every
convergence run diverged is recorded as ``diverged``. ``CaseSetup`` is also what the pytest and
asv front-ends time in-process.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from traceback import format_exc

import torch
from torch import nn

from scaling_bench.config.grid import Case
from scaling_bench.core.dtypes import parse_dtype
from scaling_bench.core.stats import single
from scaling_bench.engine.worker import clip, is_oom, save_partial
from scaling_bench.hardware.peaks import peak_flops
from scaling_bench.meters.memory import baseline_rss
from scaling_bench.models import family
from scaling_bench.predict.plan import Plan
from scaling_bench.store.records import TRAIN_PEAK_NAMES
from scaling_bench.workloads.checkpoint import measure_checkpoint
from scaling_bench.workloads.convergence import run_convergence
from scaling_bench.workloads.forward import forward_step
from scaling_bench.workloads.timed import measure_step
from scaling_bench.workloads.train import make_optimizer, train_step


def predicted_metrics(p: Plan, device: torch.device) -> dict[str, dict]:
    """Theory under the names of the measurements it predicts, so analysis can pair them by name."""
    memory = p.train_memory
    out = {
        TRAIN_PEAK_NAMES[device.type]: single(memory.total_bytes, "bytes"),
        "checkpoint_bytes": single(p.checkpoint_bytes, "bytes"),
        "checkpoint_bytes_with_optimizer": single(p.checkpoint_bytes_with_optimizer, "bytes"),
        "forward_flops_per_sample": single(p.forward_flops_per_sample, "FLOP"),
        "train_flops_per_sample": single(p.train_flops_per_sample, "FLOP"),
    }
    for name, value in asdict(memory).items():
        out[f"train_{name}"] = single(value, "bytes")
    return out


@dataclass
class CaseSetup:
    """A case's plan, model, batch and optimizer, built once and shared by its workloads."""

    case: Case
    plan: Plan
    device: torch.device
    model: nn.Module
    batch: tuple[torch.Tensor, torch.Tensor]
    optimizer: torch.optim.Optimizer

    @classmethod
    def build(cls, case: Case, seed: int = 0) -> CaseSetup:
        p = case.plan()
        fam = family(case.family)
        device = torch.device(case.device)
        dtype = parse_dtype(case.dtype)
        torch.manual_seed(seed)
        model = fam.build(p.config, device=device, dtype=dtype)
        batch = fam.sample_batch(p.config, p.batch_size, device=device, dtype=dtype)
        optimizer = make_optimizer(case.optimizer, model.parameters())
        return cls(case, p, device, model, batch, optimizer)

    def step(self, workload: str) -> Callable[[], object]:
        """The timed step of ``forward`` or ``train``."""
        if workload == "forward":
            return forward_step(self.model, self.batch[0])
        if workload == "train":
            return train_step(self.model, self.optimizer, self.batch)
        raise ValueError(f"{workload!r} has no single timed step")

    def flops_per_sample(self, workload: str) -> int:
        if workload == "forward":
            return self.plan.forward_flops_per_sample
        return self.plan.train_flops_per_sample

    def measure(self, workload: str, baseline_rss_bytes: int | None = None) -> dict[str, dict]:
        """Record metrics of one workload."""
        if workload == "convergence":
            return convergence_metrics(self.case, self.plan)
        if workload == "checkpoint":
            if not self.optimizer.state:
                self.step("train")()  # the optimizer's state exists only after a step
            with tempfile.TemporaryDirectory(prefix="scaling-bench-") as scratch:
                return measure_checkpoint(
                    self.model, self.optimizer, scratch, budget_s=4 * self.case.budget_s
                )
        peak, _ = case_peak_flops(self.case)
        metrics, _ = measure_step(
            workload,
            self.step(workload),
            self.device,
            batch_size=self.plan.batch_size,
            flops_per_sample=self.flops_per_sample(workload),
            tokens_per_sample=self.plan.tokens_per_sample,
            peak_flops=peak,
            budget_s=self.case.budget_s,
            baseline_rss_bytes=baseline_rss_bytes,
        )
        return metrics


#: The order workloads run in within a case (see the module docstring).
ORDER = ("forward", "train", "checkpoint", "convergence")
#: Families whose compute is mostly convolutions: on CUDA their fp32 runs at cuDNN's TF32 setting
#: (on by default), not cuBLAS's, so their peak follows it.
CONV_FAMILIES = ("cnn", "resnet")


def case_peak_flops(case: Case) -> tuple[float, str]:
    """The device's peak FLOP/s for the case's dtype and the source of the figure."""
    tf32 = torch.backends.cudnn.allow_tf32 if case.family in CONV_FAMILIES else None
    return peak_flops(torch.device(case.device), parse_dtype(case.dtype), tf32=tf32)


def convergence_metrics(case: Case, p: Plan) -> dict[str, dict]:
    """The convergence workload: fresh models per seed and LR, so it needs no built case."""
    settings = case.convergence_settings()
    return run_convergence(
        case.family, p.config, settings, torch.device(case.device), parse_dtype(case.dtype)
    )


def warm_up_runtime(device: torch.device) -> None:
    """Pay the runtime's one-time costs before the RSS baseline is taken.

    The first operator starts the thread pools and maps the kernel libraries: about 170 MB of RSS
    on a CPU, whatever the model. Taken after it, ``*_above_baseline_bytes`` is the case's own
    memory and can be held against the prediction.
    """
    layer = nn.Linear(8, 8, device=device)
    optimizer = make_optimizer("adamw", layer.parameters())
    layer(torch.ones(2, 8, device=device)).sum().backward()
    optimizer.step()


def run_case(case_dict: dict) -> dict:
    """The worker's entry point: record fields for one case (params, config, metrics, predicted).

    A workload that fails (out of memory, an error) ends the case with its status and error, but
    the figures of the workloads before it stay in the record; they are also saved before each
    workload starts, so a timeout or a killed worker keeps them too.
    """
    case = Case.from_dict(case_dict)
    device = torch.device(case.device)
    warm_up_runtime(device)
    baseline = baseline_rss()
    setup = CaseSetup.build(case)
    p = setup.plan
    peak, source = case_peak_flops(case)
    metrics: dict[str, dict] = {"peak_flops_per_s": single(peak, "FLOP/s") | {"source": source}}
    outcome: dict[str, object] = {"status": "ok", "error": None}
    known = {"params": p.params, "config": asdict(p.config)}
    known["predicted"] = predicted_metrics(p, device)
    for workload in (w for w in ORDER if w in case.workloads):
        save_partial(known | {"metrics": metrics})
        try:
            if workload == "convergence":
                setup = None  # its fresh models must not share memory with the timed one
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                metrics |= convergence_metrics(case, p)
            else:
                metrics |= setup.measure(workload, baseline_rss_bytes=baseline)
        except Exception as exc:
            status = "oom" if is_oom(exc) else "crashed"
            detail = f"{type(exc).__name__}: {exc}" if status == "oom" else format_exc()
            outcome = {"status": status, "error": clip(f"{workload}: {detail}")}
            break
    if outcome["status"] == "ok" and metrics.get("diverged_fraction", {}).get("value") == 1:
        outcome["status"] = "diverged"
    return outcome | known | {"metrics": metrics}
