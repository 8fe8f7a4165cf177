import json
import math
import subprocess

import pynvml
import pytest
import torch

from scaling_bench.core.errors import UserError
from scaling_bench.hardware import peaks as hardware
from scaling_bench.hardware.peaks import (
    fingerprint,
    measured_gemm_peak,
    nvml,
    peak_flops,
    table_peak_flops,
)

pytestmark = pytest.mark.kernels  # what the CPU's kernels select: run under a second ISA too

T = 1e12


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch, tmp_path):
    """Each test sees no user peak and a cache of its own."""
    monkeypatch.delenv(hardware.PEAK_FLOPS_ENV, raising=False)
    monkeypatch.setenv(hardware.CACHE_DIR_ENV, str(tmp_path / "cache"))


def test_fingerprint_names_cpu_memory_and_software_with_units():
    env = fingerprint()

    assert {
        "cpu_model",
        "cpu_physical_cores",
        "cpu_logical_cores",
        "torch_threads",
        "ram_bytes",
        "hostname",
        "platform",
        "python_version",
    } <= env.keys()
    assert env["ram_bytes"] > 2**20
    assert env["torch_version"] == torch.__version__
    assert env.get("torch_cuda_version") == torch.version.cuda
    assert None not in env.values()
    json.dumps(env)


def test_fingerprint_names_the_kernel_selection_and_its_key_follows_the_isa_cap(monkeypatch):
    """Two runs under different ISA caps are two machines: the record says which, by name and
    by the key the kernel caches use."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    env, key = fingerprint(), hardware.cpu_cache_key("gemm peak")
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "onednn_max_cpu_isa" not in env
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = fingerprint()
    assert capped["onednn_max_cpu_isa"] == "AVX2"
    assert capped["kernel_key"] != env["kernel_key"]
    assert hardware.cpu_cache_key("gemm peak") != key


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_fingerprint_has_no_gpu_keys_without_a_gpu():
    assert not [key for key in fingerprint() if key.startswith("gpu_")]


def test_fingerprint_records_commit_and_dirty_flag_of_a_checkout(tmp_path):
    git = [
        "git",
        "-C",
        str(tmp_path),
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "-c",
        "commit.gpgsign=false",
    ]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    (tmp_path / "untracked.jsonl").write_text("{}")

    clean = fingerprint(tmp_path)
    (tmp_path / "f.txt").write_text("b")
    dirty = fingerprint(tmp_path)

    assert len(clean["git_commit"]) == 40
    assert clean["git_dirty"] is False
    assert dirty["git_dirty"] is True


def test_fingerprint_outside_a_git_checkout_has_no_git_keys(tmp_path):
    env = fingerprint(tmp_path)

    assert "git_commit" not in env
    assert "git_dirty" not in env


@pytest.mark.parametrize(
    ("device_name", "precision", "tflops"),
    [
        ("NVIDIA H200", "bf16", 989.4),
        ("NVIDIA H200", "fp32", 67),
        ("NVIDIA H100 80GB HBM3", "tf32", 494.7),
        ("NVIDIA H100 PCIe", "fp32", 51.2),
        ("NVIDIA H100 PCIe", "bf16", 756),
        ("NVIDIA H100 NVL", "bf16", 835.5),
        ("NVIDIA A100-SXM4-80GB", "fp32", 19.5),
        ("NVIDIA A100-SXM4-40GB", "tf32", 156),
        ("NVIDIA A100 80GB PCIe", "fp16", 312),
        ("NVIDIA L4", "bf16", 121),
        ("NVIDIA A10", "fp32", 31.2),
        ("Tesla V100-SXM2-16GB", "fp16", 125),
        ("Tesla V100-PCIE-32GB", "fp16", 112),
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
        ("NVIDIA GeForce RTX 3090", "fp32", 35.6),
    ],
)
def test_table_matches_real_device_names(device_name, precision, tflops):
    assert table_peak_flops(device_name, precision) == pytest.approx(tflops * T)


@pytest.mark.parametrize(
    ("device_name", "precision"),
    [
        ("NVIDIA L40S", "bf16"),  # not the L4
        ("NVIDIA A10G", "fp32"),  # not the A10
        ("NVIDIA GeForce RTX 3090 Ti", "fp32"),  # not the 3090
        ("Tesla V100-SXM2-16GB", "bf16"),  # Volta has no bf16 tensor cores
        ("NVIDIA H200", "fp64"),
    ],
)
def test_table_has_no_figure_rather_than_a_neighbours(device_name, precision):
    assert table_peak_flops(device_name, precision) is None


def test_table_figures_are_dense_not_sparse():
    # The data sheets' headline figures use 2:4 sparsity: 1979 (H100/H200 bf16), 624 (A100 bf16).
    assert table_peak_flops("NVIDIA H100 80GB HBM3", "bf16") < 1000 * T
    assert table_peak_flops("NVIDIA A100-SXM4-80GB", "bf16") < 400 * T
    assert table_peak_flops("NVIDIA L4", "bf16") < 200 * T


def test_override_argument_beats_the_environment(monkeypatch):
    monkeypatch.setenv(hardware.PEAK_FLOPS_ENV, "1T")

    assert peak_flops("cpu", torch.float32, override=5e12) == (5e12, "override")


@pytest.mark.parametrize(("text", "flops"), [("989.4e12", 989.4e12), ("989.4T", 989.4e12)])
def test_environment_peak_beats_measuring(monkeypatch, text, flops):
    monkeypatch.setenv(hardware.PEAK_FLOPS_ENV, text)
    monkeypatch.setattr(hardware, "_measure_gemm_flops", pytest.fail)

    peak, source = peak_flops("cpu", torch.float32)

    assert source == "env"
    assert peak == pytest.approx(flops)


@pytest.mark.parametrize("text", ["fast", "-1T", "0", "12X", "inf"])
def test_a_bad_environment_peak_is_a_one_line_user_error(monkeypatch, text):
    monkeypatch.setenv(hardware.PEAK_FLOPS_ENV, text)

    with pytest.raises(UserError, match=hardware.PEAK_FLOPS_ENV) as error:
        peak_flops("cpu", torch.float32)
    assert "\n" not in str(error.value)


def test_a_non_positive_override_is_a_user_error():
    with pytest.raises(UserError, match="positive"):
        peak_flops("cpu", torch.float32, override=0.0)


def _fake_gpu(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


def test_gpu_fp32_peak_is_tf32_only_where_tf32_matmuls_are_allowed(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB")

    assert peak_flops("cuda", torch.float32, tf32=False) == (19.5 * T, "table")
    assert peak_flops("cuda", torch.float32, tf32=True) == (156 * T, "table")
    assert peak_flops("cuda", torch.bfloat16) == (312 * T, "table")


def test_gpu_fp32_peak_follows_the_matmul_precision_setting(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA H200")
    monkeypatch.setattr(hardware, "matmul_tf32_enabled", lambda: True)

    assert peak_flops("cuda", torch.float32)[0] == pytest.approx(494.7 * T)


def test_a_gpu_without_tf32_reports_its_fp32_peak_when_tf32_is_allowed(monkeypatch):
    _fake_gpu(monkeypatch, "Tesla V100-SXM2-16GB")

    assert peak_flops("cuda", torch.float32, tf32=True) == (15.7 * T, "table")


def test_an_unknown_gpu_asks_for_the_override(monkeypatch):
    _fake_gpu(monkeypatch, "Imaginary Accelerator 9000")

    with pytest.raises(UserError, match=hardware.PEAK_FLOPS_ENV):
        peak_flops("cuda", torch.bfloat16)


def test_cpu_gemm_peak_is_measured_once_then_read_from_the_cache(monkeypatch, tmp_path):
    measured = []
    monkeypatch.setattr(
        hardware, "_measure_gemm_flops", lambda dtype, size_s=None: measured.append(dtype) or 7e10
    )

    first = peak_flops("cpu", torch.float32)
    second = peak_flops("cpu", torch.float32)
    other_dtype = measured_gemm_peak(torch.bfloat16)

    assert first == second == (7e10, "measured")
    assert other_dtype == 7e10
    assert measured == [torch.float32, torch.bfloat16]
    assert len(json.loads((tmp_path / "cache" / "gemm_peak.json").read_text())) == 2


def test_a_corrupt_gemm_cache_is_measured_over_and_rewritten(monkeypatch, tmp_path):
    cache = tmp_path / "cache" / "gemm_peak.json"
    cache.parent.mkdir()
    cache.write_text("{not json")
    monkeypatch.setattr(hardware, "_measure_gemm_flops", lambda dtype, size_s=None: 7e10)

    assert measured_gemm_peak(torch.float32) == 7e10
    assert list(json.loads(cache.read_text()).values()) == [7e10]


@pytest.mark.parametrize("via", [hardware.CACHE_DIR_ENV, "HOME"])
def test_an_unwritable_gemm_cache_is_measured_over_with_a_one_line_warning(
    monkeypatch, tmp_path, capsys, via
):
    (tmp_path / "file").write_text("")  # nothing can be made under a file, even by root
    monkeypatch.setenv(via, str(tmp_path / "file" / "below"))
    if via == "HOME":
        monkeypatch.delenv(hardware.CACHE_DIR_ENV)
    measured = []
    monkeypatch.setattr(
        hardware, "_measure_gemm_flops", lambda dtype, size_s=None: measured.append(1) or 7e10
    )

    assert measured_gemm_peak(torch.float32) == measured_gemm_peak(torch.float32) == 7e10

    assert len(measured) == 2
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    assert warnings[0] == (
        f"scaling-bench: warning: cannot write the GEMM peak cache at {hardware._cache_path()} "
        "(Not a directory); measuring without caching"
    )


def test_a_real_gemm_measurement_is_a_finite_rate(monkeypatch):
    monkeypatch.setattr(hardware, "_GEMM_SIZES", (64, 128))
    monkeypatch.setattr(hardware, "_GEMM_SIZE_S", 0.01)

    assert 0 < measured_gemm_peak(torch.float32) < math.inf


def test_nvml_is_none_without_a_driver_or_without_the_module(monkeypatch):
    def driver_not_loaded():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", driver_not_loaded)
    with nvml() as lib:
        assert lib is None
    monkeypatch.setattr(hardware, "pynvml", None)
    with nvml() as lib:
        assert lib is None


def test_refreshing_the_gemm_peak_keeps_the_higher_figure(monkeypatch):
    figures = iter([5e10, 9e10, 6e10])
    monkeypatch.setattr(hardware, "_measure_gemm_flops", lambda dtype, size_s=None: next(figures))

    assert measured_gemm_peak(torch.float32) == 5e10
    assert measured_gemm_peak(torch.float32, refresh=True) == 9e10
    assert measured_gemm_peak(torch.float32, refresh=True) == 9e10
    assert measured_gemm_peak(torch.float32) == 9e10


def test_a_refresh_of_a_cached_cpu_peak_repeats_each_size_for_less_time(monkeypatch):
    asked = []
    monkeypatch.setattr(hardware, "_measure_gemm_flops",
                        lambda dtype, size_s=None: asked.append(size_s) or 7e10)  # fmt: skip

    measured_gemm_peak(torch.float32, refresh=True)  # nothing cached: the full measurement
    measured_gemm_peak(torch.float32, refresh=True)

    assert asked == [None, hardware._GEMM_REFRESH_S]
    assert hardware._GEMM_REFRESH_S < hardware._GEMM_SIZE_S


@pytest.mark.parametrize(
    ("flags", "dtype", "warns"),
    [
        ({"avx512f", "avx512_bf16"}, "bf16", False),
        ({"amx_bf16"}, "bf16", False),
        ({"avx512f"}, "bf16", True),
        ({"avx512_bf16"}, "fp16", True),
        (set(), "fp32", False),
    ],
)
def test_a_cpu_dtype_warns_only_without_native_units(monkeypatch, flags, dtype, warns) -> None:
    from scaling_bench.hardware import devices

    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
    assert (devices.dtype_warning("cpu", dtype) is not None) == warns
