"""Energy, device state and isolation against a fake NVML (as the memory-meter tests fake it):
every branch a driver can take, without a GPU. The real-GPU paths are at the end, skipped here."""

import os
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest
import torch
from fake_nvml import FakeNVML, install, not_supported

from scaling_bench.analysis.compare import _verdict
from scaling_bench.core.metrics import LOWER
from scaling_bench.core.stats import summarize
from scaling_bench.engine import isolation
from scaling_bench.hardware import nvml as device_nvml
from scaling_bench.hardware import peaks
from scaling_bench.meters import energy
from scaling_bench.meters.device_state import DeviceStateMeter
from scaling_bench.meters.energy import Counter, EnergyMeter, rapl_counter
from scaling_bench.meters.specs import clock_states_differ
from scaling_bench.meters.timing import measure
from scaling_bench.workloads.base import Context, get
from scaling_bench.workloads.timed import derived_metrics

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def fake_gpu(monkeypatch):
    """``fake_gpu(fake)``: a CUDA device whose NVML ``fake`` answers."""
    return lambda fake: install(monkeypatch, fake)


def _blocks(meter, count, calls=2):
    for _ in range(count):
        meter.block_started()
        meter.block_in_flight()
        meter.block_ended(0.0, calls)


def test_nvml_energy_counter_gives_joules_per_step_per_window(fake_gpu):
    fake_gpu(FakeNVML(energy=[1_000, 1_000, 4_000, 4_000, 10_000]))  # millijoules

    with EnergyMeter("cuda:0", min_window_s=0) as meter:
        _blocks(meter, 2)

    metrics = meter.metrics()
    # Window 1 read 1000 -> 4000 mJ over 2 steps, window 2 4000 -> 10000 mJ.
    assert metrics["energy_per_step_j"]["samples"] == [1.5, 3.0]
    assert metrics["energy_per_step_j"]["source"] == "nvml_total_energy"
    assert metrics["power_w"]["n"] == 2


def test_without_an_energy_counter_power_draw_is_integrated(fake_gpu):
    fake_gpu(FakeNVML(energy=[None], power_mw=100_000))

    with EnergyMeter("cuda:0", min_window_s=0.05) as meter:
        meter.block_started()
        while not meter.metrics():
            meter.block_ended(0.0, 1)

    power = meter.metrics()["power_w"]
    assert power["source"] == "nvml_power_sampling"
    assert power["value"] == pytest.approx(100.0, rel=0.05)


def test_a_device_with_neither_energy_nor_power_has_no_energy_figures(fake_gpu):
    fake_gpu(FakeNVML(energy=[None], power_mw=None))

    with EnergyMeter("cuda:0", min_window_s=0) as meter:
        _blocks(meter, 3)

    assert meter.metrics() == {}
    assert meter.left_out == "the device reports neither energy nor power"


def test_without_nvml_energy_is_absent_and_says_why(fake_gpu, monkeypatch):
    monkeypatch.setattr(peaks, "pynvml", None)

    with EnergyMeter("cuda:0") as meter:
        _blocks(meter, 3)

    assert meter.metrics() == {}
    assert meter.left_out == "NVML is not available"


def test_a_gpu_nvml_does_not_know_has_no_energy_figures(fake_gpu):
    fake = fake_gpu(FakeNVML())
    fake.nvmlDeviceGetHandleByUUID = not_supported

    with EnergyMeter("cuda:0") as meter:
        _blocks(meter, 2)

    assert meter.metrics() == {}
    assert meter.left_out == "NVML does not know this device"


def _counter(readings, wrap=None):
    values = iter(readings)
    return Counter("fake", lambda: float(next(values)), 1.0, wrap)


def test_a_counter_that_wraps_is_unwrapped_and_the_wrap_counted():
    with EnergyMeter("cpu", counter=_counter([90, 10], wrap=100), min_window_s=0) as meter:
        _blocks(meter, 1, calls=4)

    step = meter.metrics()["energy_per_step_j"]
    assert step["samples"] == [5.0]  # (100 - 90 + 10) J over 4 steps
    assert step["counter_wraps"] == 1


def test_a_counter_that_went_back_without_a_range_drops_its_window():
    with EnergyMeter("cpu", counter=_counter([50, 10, 10, 30]), min_window_s=0) as meter:
        _blocks(meter, 2, calls=1)

    step = meter.metrics()["energy_per_step_j"]
    assert step["samples"] == [20.0]
    assert step["counter_resets_dropped"] == 1


def test_a_counter_that_never_advanced_leaves_energy_out_as_too_short():
    with EnergyMeter("cpu", counter=_counter([7] * 10), min_window_s=0) as meter:
        _blocks(meter, 4)

    assert meter.metrics() == {}
    assert "did not advance" in meter.left_out


def test_blocks_shorter_than_the_window_are_pooled_and_a_short_tail_left_out():
    readings = iter(range(0, 1000, 10))
    counter = Counter("fake", lambda: float(next(readings)), 1.0)
    with EnergyMeter("cpu", counter=counter, min_window_s=3600) as meter:
        _blocks(meter, 5)

    assert meter.metrics() == {}  # no window lasted an hour
    assert "too short" in meter.left_out


def test_the_timer_reads_its_block_meters_at_every_sampling_block():
    readings = iter(range(0, 10**6, 3))
    counter = Counter("fake", lambda: float(next(readings)), 1.0)
    with EnergyMeter("cpu", counter=counter, min_window_s=0) as meter:
        timing = measure(lambda: None, "cpu", budget_s=0.01, min_samples=10, max_samples=10,
                         meters=(meter,))  # fmt: skip

    step = meter.metrics()["energy_per_step_j"]
    assert step["n"] == len(timing.step_s) == 10
    assert step["samples"] == [3 / timing.steps_per_sample] * 10


def test_the_timer_reads_the_device_state_once_per_sampling_block(fake_gpu):
    fake_gpu(FakeNVML(bits=[0x4]))
    with DeviceStateMeter("cuda:0") as state:
        measure(lambda: None, "cpu", budget_s=0.01, min_samples=10, max_samples=10,
                meters=(state,))  # fmt: skip

    assert state.metrics()["sm_clock_mhz"]["n"] == len(state.readings) == 10
    assert state.metrics()["throttled_blocks"]["value"] == 1.0


def _powercap(root: Path, zones: dict[str, tuple[str, int]]) -> Path:
    for zone, (name, uj) in zones.items():
        (root / zone).mkdir(parents=True)
        (root / zone / "name").write_text(name + "\n")
        (root / zone / "energy_uj").write_text(f"{uj}\n")
        (root / zone / "max_energy_range_uj").write_text("1000000\n")
    return root


def test_rapl_reads_package_zones_only(tmp_path):
    root = _powercap(tmp_path, {
        "intel-rapl:0": ("package-0", 500),
        "intel-rapl:0:0": ("core", 400),
        "intel-rapl:1": ("psys", 9000),
        "intel-rapl-mmio:0": ("package-0", 500),
    })  # fmt: skip

    counter, _ = rapl_counter(root)

    assert counter.read() == 500.0
    assert counter.range == 1_000_000.0
    assert counter.joules_per_unit == 1e-6


def test_without_readable_rapl_cpu_energy_is_absent_not_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(energy, "POWERCAP", tmp_path)

    with EnergyMeter("cpu") as meter:
        _blocks(meter, 3)

    assert meter.metrics() == {}
    assert "RAPL" in meter.left_out


def test_ranks_sharing_one_machine_leave_energy_out():
    with EnergyMeter("cpu", shared_machine=True) as meter:
        _blocks(meter, 3)

    assert meter.metrics() == {}
    assert "share" in meter.left_out


def test_throttle_bits_flag_blocks_and_name_their_reasons(fake_gpu):
    power_cap, hw_thermal, idle = 0x4, 0x40, 0x1
    fake_gpu(FakeNVML(bits=[0, power_cap | hw_thermal, idle, power_cap]))

    with DeviceStateMeter("cuda:0") as state:
        _blocks(state, 4)

    throttled = state.metrics()["throttled_blocks"]
    assert throttled["value"] == 0.5  # idle is not throttling
    assert throttled["throttle_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"]
    assert state.annotation() == {
        "sm_clock_mhz": 1980,
        "throttled": True,
        "throttle_reasons": ["sw_power_cap", "hw_thermal_slowdown"],
    }
    assert state.metrics()["power_limit_w"]["value"] == 700.0


def test_an_older_driver_answers_through_the_throttle_reasons_call(fake_gpu):
    fake = fake_gpu(FakeNVML(bits=[None]))
    fake.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 0x8

    with DeviceStateMeter("cuda:0") as state:
        _blocks(state, 2)

    assert state.metrics()["throttled_blocks"]["throttle_reasons"] == ["hw_slowdown"]


def test_device_state_is_absent_on_a_cpu_and_without_nvml(fake_gpu, monkeypatch):
    with DeviceStateMeter("cpu") as cpu:
        _blocks(cpu, 2)
    monkeypatch.setattr(peaks, "pynvml", None)
    with DeviceStateMeter("cuda:0") as gpu:
        _blocks(gpu, 2)

    assert cpu.metrics() == gpu.metrics() == {}
    assert cpu.annotation() == {}


def _step(values, **state):
    return summarize(values, "s") | state


def test_compare_calls_a_move_between_clock_states_inconclusive():
    fast, slow = [1.0 + i / 100 for i in range(20)], [1.2 + i / 100 for i in range(20)]
    same = _verdict(_step(fast, sm_clock_mhz=1980), _step(slow, sm_clock_mhz=1975),
                    LOWER, 0.05, 0.01, False)  # fmt: skip
    apart = _verdict(_step(fast, sm_clock_mhz=1965), _step(slow, sm_clock_mhz=1580),
                     LOWER, 0.05, 0.01, False)  # fmt: skip
    throttled = _verdict(_step(fast, throttled=False), _step(slow, throttled=True),
                         LOWER, 0.05, 0.01, False)  # fmt: skip

    assert same[2] == "regressed"
    assert apart[2:] == ("inconclusive", "clocks differ: 1965 vs 1580 MHz")
    assert throttled[2:] == ("inconclusive", "throttled on the current side only")
    assert clock_states_differ({}, {"sm_clock_mhz": 1500}) == ""


def test_processes_of_others_are_foreign_and_this_one_is_not(fake_gpu):
    fake_gpu(FakeNVML(processes=[(os.getpid(), 2**30), (4242, 5 * 2**30), (4343, None)]))

    found = isolation.foreign_processes(torch.device("cuda:0"))

    assert found == [{"pid": 4242, "used_bytes": 5 * 2**30}, {"pid": 4343}]


def test_in_another_pid_namespace_the_newcomer_is_taken_to_be_this_process(fake_gpu):
    fake = fake_gpu(FakeNVML(processes=[(4242, None)]))
    start = isolation.foreign_processes(torch.device("cuda:0"))
    fake.processes.append((777, 2**30))  # this worker, under the host's pid

    assert isolation.foreign_processes(torch.device("cuda:0"), start) == [{"pid": 4242}]


def test_isolation_warn_keeps_the_case_and_records_the_processes():
    fields = {"status": "ok", "error": None, "metrics": {"x": {"value": 1}}}
    start = [{"pid": 4242}]

    kept = isolation.with_isolation(fields, "warn", start, [])

    assert kept["status"] == "ok"
    assert kept["metrics"]["x"] == {"value": 1}
    assert kept["metrics"]["foreign_processes"]["value"] == 1
    assert kept["metrics"]["foreign_processes"]["at_start"] == start


def test_isolation_error_refuses_to_start_and_skips_a_case_shared_at_its_end():
    fields = {"status": "ok", "error": None, "metrics": {"x": {"value": 1}}}

    assert isolation.refusal("warn", [{"pid": 1}]) is None
    assert isolation.refusal("error", []) is None
    assert "pid 4242" in isolation.refusal("error", [{"pid": 4242}])
    skipped = isolation.with_isolation(fields, "error", [], [{"pid": 4242}])
    assert skipped["status"] == "skipped"
    assert skipped["error"].startswith("--isolation error: 1 other compute process(es)")
    assert "x" not in skipped["metrics"]
    assert isolation.with_isolation(fields, "error", None, None) == fields  # a CPU: nothing known


def test_the_run_summary_names_the_cases_kept_on_a_shared_gpu():
    from scaling_bench.report.summary import shared_device

    fields = {"status": "ok", "error": None, "metrics": {}}
    shared = isolation.with_isolation(fields, "warn", [{"pid": 4242}], []) | {"case_id": "a"}
    alone = isolation.with_isolation(fields, "warn", [], []) | {"case_id": "b"}

    assert shared_device([shared, alone, fields | {"case_id": "cpu"}]) == ["a"]


def test_isolation_axis_refuses_an_unknown_policy():
    from scaling_bench.config.axes import axis
    from scaling_bench.core.errors import UserError

    assert axis("isolation").parse("error") == ("error",)
    with pytest.raises(UserError, match="--isolation"):
        axis("isolation").parse("strict")


def test_energy_per_sample_and_token_follow_from_energy_per_step():
    forward = get("forward")
    plan = SimpleNamespace(batch_size=4, tokens_per_sample=8, forward_flops_per_sample=10)
    metrics = {
        "forward_step_s": summarize([0.5, 0.5, 0.5], "s"),
        "forward_energy_per_step_j": summarize([64.0, 64.0], "J"),
    }

    out = forward.derive(metrics, SimpleNamespace(plan=plan), Context(peak_flops=1e6))

    assert out["forward_energy_per_sample_j"]["value"] == 16.0
    assert out["forward_energy_per_token_j"]["value"] == 2.0


def test_a_throttled_figure_is_marked_in_the_run_summary_with_what_derives_from_it():
    from scaling_bench.report.summary import THROTTLED_MARK, summary_table, throttled

    plan = SimpleNamespace(batch_size=4, tokens_per_sample=None, forward_flops_per_sample=10)
    state = {"sm_clock_mhz": 1580, "throttled": True, "throttle_reasons": ["sw_power_cap"]}
    metrics = {"forward_step_s": summarize([0.5, 0.5, 0.5], "s") | state}
    derived = get("forward").derive(metrics, SimpleNamespace(plan=plan), Context(peak_flops=1e6))
    record = {"case_id": "mlp-1e6", "params": 1, "status": "ok", "predicted": {},
              "metrics": metrics | derived}  # fmt: skip

    assert derived["forward_samples_per_s"]["throttled"] is True
    assert throttled([record])
    assert any(str(cell).endswith(THROTTLED_MARK) for cell in summary_table([record], "").rows[0])


def test_mfu_against_the_achievable_peak_sits_beside_the_data_sheet_mfu():
    step = summarize([1.0, 1.0], "s")
    sizes = {"batch_size": 1, "flops_per_sample": 400, "tokens_per_sample": None}
    both = derived_metrics("train", step, **sizes, peak_flops=1000, achievable_flops=800)
    above = derived_metrics("train", step, **sizes, peak_flops=1000, achievable_flops=300)

    assert both["train_mfu"]["value"] == 0.4
    assert both["train_mfu_achievable"]["value"] == 0.5
    assert "train_mfu_achievable" not in above
    assert "above the peak" in above["train_flops_per_s"]["mfu_achievable_left_out"]


def test_the_gpu_gemm_peak_is_searched_once_per_device_and_dtype(monkeypatch, tmp_path):
    monkeypatch.setenv(peaks.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    searched = []
    monkeypatch.setattr(
        peaks, "_measure_gpu_gemm_flops", lambda dtype, device: searched.append(dtype) or 8e14
    )

    first = peaks.measured_gemm_peak(torch.bfloat16, device="cuda:0")
    again = peaks.measured_gemm_peak(torch.bfloat16, device="cuda:0")
    peaks.measured_gemm_peak(torch.float32, device="cuda:0")

    assert first == again == 8e14
    assert searched == [torch.bfloat16, torch.float32]


def test_throttle_reason_names_cover_the_bits_nvml_defines():
    nvml_bits = {
        pynvml.nvmlClocksEventReasonSwPowerCap: "sw_power_cap",
        pynvml.nvmlClocksEventReasonHwSlowdown: "hw_slowdown",
        pynvml.nvmlClocksEventReasonSwThermalSlowdown: "sw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hw_power_brake_slowdown",
    }
    assert nvml_bits == device_nvml.THROTTLE_REASONS


@needs_gpu
def test_a_busy_gpu_block_reads_energy_and_its_clock_state():
    a = torch.randn(4096, 4096, device="cuda")
    with EnergyMeter("cuda") as joules, DeviceStateMeter("cuda") as state:
        measure(lambda: a @ a, "cuda", budget_s=1.0, meters=(joules, state))

    if joules.left_out is None:  # absent where the container has no NVML
        assert joules.metrics()["energy_per_step_j"]["value"] > 0
    if state.metrics():
        assert state.metrics()["sm_clock_mhz"]["value"] > 0


@needs_gpu
def test_this_process_is_not_foreign_on_its_own_gpu():
    torch.ones(1, device="cuda")
    found = isolation.foreign_processes(torch.device("cuda"))
    assert found is None or all(p["pid"] != os.getpid() for p in found)
