"""Batches that cannot fit are refused before they are tried, and a ``max`` batch of quantized
weights is measured (issue 26: r09b, r15, r15b)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaling_bench.core import int8_weight
from scaling_bench.frontends.cli import main
from scaling_bench.meters.tensor_memory import storage_bytes
from scaling_bench.models import mlp
from scaling_bench.store.records import RESULTS_FILE, load_records
from scaling_bench.workloads.batch_search import try_step


def test_a_forward_only_case_whose_batch_cannot_fit_is_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALING_BENCH_PEAK_FLOPS", "2e11")  # no GEMM measured first
    args = ["run", "--families", "mlp", "--sizes", "1e4", "--workloads", "forward",
            "--batch-sizes", "1000000000000", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    [record] = load_records(tmp_path / RESULTS_FILE)
    assert record["status"] == "skipped"
    assert record["error"].startswith("predicted to need 2859.45 TiB, more than 80% of the")


@pytest.mark.skipif(int8_weight.skip_reason("cpu") is not None, reason="no int8 backend here")
def test_a_max_batch_step_of_int8_weights_counts_their_inner_tensors() -> None:
    """Quantized weights are tensor subclasses without a storage of their own: the step before
    a ``max`` batch is confirmed counts the int8 data and scales behind them."""
    cfg = mlp.config_for(1e4)
    fp32 = mlp.build(cfg, device="cpu", dtype=torch.float32)
    fp32_bytes = sum(p.nbytes for p in fp32.parameters())
    model = int8_weight.convert(fp32, torch.device("cpu"))
    x = torch.randn(64, cfg.d_in)
    resident = [*model.parameters(), x]
    held = storage_bytes(resident)
    assert x.nbytes < held < fp32_bytes + x.nbytes  # the weights counted, at about a byte each
    peak = try_step(lambda: model(x), torch.device("cpu"), resident)
    assert peak is not None and peak > held
