"""Serving: the latency of single requests, its tail, and for decoders prefill and decode.

Every family: a forward pass of the case's batch (one request of ``B`` samples) timed one call
at a time (``meters.latency``): p50, p90, p95, p99, and throughput ``B / p50``; across the batch
axis these draw the throughput–latency curve. Families that can decode (their module provides
``kv_cache``, ``prefill`` and ``decode_step``, gpt today) also serve a prompt of ``P`` tokens
into a KV cache, timed per call (time to first token, TTFT), then decode one token per call with
the cache (time per output token, TPOT): the cache is filled to ``P + G`` positions and then
rewound to ``P``, so the decode samples cover every cache length the generation has. A decode
step reads every weight and the whole cache to make ``B`` tokens, so it is bandwidth-bound: the
bytes it reads (the weights as stored, and the cache at its mean length over the generation)
over TPOT, against the device's memory bandwidth (``hardware.bandwidth``), is recorded like MFU.

Quality: a precision other than ``fp32`` is held against the fp32 model of the same seed on
the case's batch (top-1 agreement and the mean KL divergence of the next-sample/token
distribution), and every precision gets the held-out loss on the family's real offline data
set (gpt: the stdlib text; the image families: digits) where it has one. The model is untrained,
so the loss itself is near chance; what matters is the difference between precisions.
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F

from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import scaled, single
from scaling_bench.hardware.bandwidth import memory_bandwidth
from scaling_bench.meters.latency import measure_calls
from scaling_bench.models import family
from scaling_bench.models.datasets import feeds, load_dataset
from scaling_bench.models.loss import loss_of
from scaling_bench.workloads import catalog
from scaling_bench.workloads.base import Context, Workload, register
from scaling_bench.workloads.catalog import INFERENCE_DECODE as _D
from scaling_bench.workloads.catalog import INFERENCE_NAME as NAME
from scaling_bench.workloads.catalog import INFERENCE_PREFILL as _P
from scaling_bench.workloads.catalog import INFERENCE_REFERENCE_PRECISION as REFERENCE_PRECISION
from scaling_bench.workloads.catalog import LOSS_UNIT

if TYPE_CHECKING:
    from torch import nn

    from scaling_bench.config.case import Case
    from scaling_bench.models.protocol import Decoder
    from scaling_bench.workloads.setup import CaseSetup

#: Real offline data sets, for the held-out loss (synthetic data says nothing of quality, and
#: CIFAR-10 needs a download).
QUALITY_DATASETS = ("text", "digits")
HELDOUT_SAMPLES = 16


def decoder(family_name: str) -> Decoder | None:
    """The family's module where it can decode with a KV cache (its declared capability)."""
    fam = family(family_name)
    return cast("Decoder", fam) if hasattr(fam, "kv_cache") else None


def lengths(fam: Decoder, case: Case, cfg: object) -> tuple[int, int]:
    """(prompt, generation) tokens: the case's, or half and a quarter of ``fam``'s context."""
    context = fam.context_length(cfg)
    prompt = case.prompt_len or max(1, context // 2)
    return prompt, case.gen_len or min(max(1, context // 4), context - prompt)


class Inference(Workload, declared=catalog.INFERENCE):
    strategies = (None,)

    def skip_reason(self, case: Case) -> str | None:
        if reason := super().skip_reason(case):
            return reason
        given = [
            f for f, v in (("--prompt-len", case.prompt_len), ("--gen-len", case.gen_len)) if v
        ]
        fam = decoder(case.family)
        if fam is None:
            return (
                f"{', '.join(given)}: the {case.family} family does not decode" if given else None
            )
        try:
            cfg = fam.config_for(case.target_params, **dict(case.overrides))
        except UserError:  # the planner reports a config it cannot size, with its reason
            return None
        prompt, gen = lengths(fam, case, cfg)
        context = fam.context_length(cfg)
        if gen < 1 or prompt + gen > context:
            return (
                f"a prompt of {prompt} and {max(gen, 0)} generated tokens (--prompt-len, "
                f"--gen-len) do not fit the {context}-token context of {case.case_id}"
            )
        return None

    def measure(self, setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        budget = setup.case.budget_s
        step = setup.forward_step()
        latency = measure_calls(step, setup.device, budget_s=budget, rel_ci=setup.case.ci_target)
        out = latency.metrics(NAME)
        out[f"{NAME}_latency_p50_s"]["batch_size"] = setup.plan.batch_size
        out[f"{NAME}_checkpoint_bytes"] = single(_state_dict_bytes(setup.model), "bytes")
        if fam := decoder(setup.case.family):
            out |= _serve(fam, setup, budget)
        out |= _quality(setup)
        return out

    def derive(self, metrics: dict[str, dict], setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        batch = setup.plan.batch_size
        out = {
            f"{NAME}_samples_per_s": scaled(
                metrics[f"{NAME}_latency_p50_s"], batch, "samples/s", invert=True
            )
        }
        tpot = metrics.get(f"{_D}_latency_p50_s")
        if tpot is None:
            return out
        out[f"{NAME}_decode_tokens_per_s"] = scaled(tpot, batch, "tokens/s", invert=True)
        step_bytes = metrics[f"{NAME}_decode_bytes_per_step"]["value"]
        achieved = scaled(tpot, step_bytes, "B/s", invert=True)
        out[f"{NAME}_decode_bandwidth_bytes_per_s"] = achieved
        try:
            bandwidth, source = memory_bandwidth(setup.device)
        except UserError as exc:
            achieved["utilisation_left_out"] = str(exc)
            return out
        out[f"{NAME}_memory_bandwidth_bytes_per_s"] = single(bandwidth, "B/s") | {"source": source}
        if achieved["value"] <= bandwidth:
            out[f"{NAME}_bandwidth_utilisation"] = scaled(
                tpot, step_bytes / bandwidth, "fraction", invert=True
            )
        else:
            achieved["utilisation_left_out"] = (
                f"achieved {achieved['value']:.4g} B/s is above the {source} bandwidth of "
                f"{bandwidth:.4g}: the data fit a cache, or the bandwidth is too low"
            )
        return out


def _state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(state_dict)``: what the served weights cost on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def _serve(fam: Decoder, setup: CaseSetup, budget_s: float) -> dict[str, dict]:
    """Prefill and decode of the case's batch, timed per call, and the bytes a step reads."""
    cfg, model, device = setup.plan.config, setup.model, setup.device
    batch = setup.plan.batch_size
    prompt_len, gen_len = lengths(fam, setup.case, cfg)
    rel_ci = setup.case.ci_target
    prompt = setup.batch[0][:, :prompt_len]
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    model.eval()
    try:
        with torch.inference_mode(), setup.precision.autocast_context(device):
            cache = fam.kv_cache(cfg, batch, prompt_len + gen_len, device, dtype)

            def prefill() -> torch.Tensor:
                cache.length = 0
                return fam.prefill(model, prompt, cache)

            out = measure_calls(prefill, device, budget_s=budget_s, rel_ci=rel_ci).metrics(_P)
            token = [prefill()]

            def decode() -> torch.Tensor:
                if cache.length == cache.capacity:  # rewind: every length of the generation
                    cache.length = prompt_len
                token[0] = fam.decode_step(model, token[0], cache)
                return token[0]

            timed = measure_calls(
                decode, device, budget_s=budget_s, warmup_calls=gen_len, rel_ci=rel_ci
            )
            out |= timed.metrics(_D)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise type(exc)(
            f"serving batch {batch}, prompt {prompt_len} + {gen_len} tokens: {exc}"
        ) from exc
    mean_cache = cache.nbytes * (prompt_len + (gen_len + 1) / 2) / cache.capacity
    weights = sum(t.numel() * t.element_size() for t in _stored_tensors(model))
    predicted = fam.kv_cache_bytes(cfg, batch, cache.capacity, dtype.itemsize)
    return out | {
        f"{NAME}_kv_cache_bytes": single(cache.nbytes, "bytes") | {"predicted": predicted},
        f"{NAME}_decode_bytes_per_step": single(round(weights + mean_cache), "bytes")
        | {"prompt_len": prompt_len, "gen_len": gen_len},
    }


def _stored_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The tensors the weights are stored in, each once (a tied weight, a quantized weight's
    int8 data and scales, a packed dynamic-quantized weight's int8 copy)."""
    seen: dict[int, torch.Tensor] = {}
    for value in model.state_dict(keep_vars=True).values():
        for t in _inner_tensors(value):
            seen.setdefault(id(t), t)
    return list(seen.values())


def _inner_tensors(value: object) -> list[torch.Tensor]:
    """Plain tensors inside ``value``: a tensor subclass's own (torchao's ``qdata``, ``scale``),
    the weight of PyTorch's packed quantized linear params."""
    if isinstance(value, tuple):
        return [t for v in value for t in _inner_tensors(v)]
    if isinstance(value, torch.Tensor) and hasattr(value, "__tensor_flatten__"):
        names, _ = value.__tensor_flatten__()
        return [t for n in names for t in _inner_tensors(getattr(value, n))]
    if isinstance(value, torch.Tensor) and value.is_quantized:
        return [value.int_repr()]
    if isinstance(value, torch.Tensor):
        return [value]
    return []


def _quality(setup: CaseSetup) -> dict[str, dict]:
    """Top-1 agreement and mean KL against the fp32 model of the same seed, and the held-out
    loss on the family's real data set where it has one."""
    case, model = setup.case, setup.model
    model.eval()
    out: dict[str, dict] = {}
    reference = None
    if case.precision != REFERENCE_PRECISION:  # built outside inference mode: its plan traces
        from scaling_bench.workloads.setup import CaseSetup

        reference = CaseSetup.build(replace(case, precision=REFERENCE_PRECISION)).model.eval()
    with torch.inference_mode(), setup.precision.autocast_context(setup.device):
        if reference is not None:
            inputs = setup.batch[0]
            ref = F.log_softmax(reference(inputs).float(), dim=-1)
            served = F.log_softmax(model(inputs).float(), dim=-1)
            agree = (ref.argmax(-1) == served.argmax(-1)).float().mean().item()
            kl = F.kl_div(served, ref, log_target=True, reduction="none").sum(-1).mean().item()
            out[f"{NAME}_top1_agreement"] = single(agree, "fraction")
            out[f"{NAME}_kl_divergence"] = single(kl, LOSS_UNIT)
            del reference
        name = next((d for d in QUALITY_DATASETS if feeds(d, case.family)), None)
        if name is not None:
            data = load_dataset(name, case.family, setup.plan.config, train_size=1,
                                heldout_size=HELDOUT_SAMPLES)  # fmt: skip
            x, y = (t.to(setup.device) for t in data.heldout)
            loss = loss_of(model, (x, y)).item()
            out[f"{NAME}_heldout_loss"] = single(loss, LOSS_UNIT) | {"dataset": name}
    return out


register(Inference())
