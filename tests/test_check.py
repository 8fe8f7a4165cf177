"""``scaling-bench check``: it passes on this CPU, prints its table, and fails loudly."""

import json
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from fake_nvml import FakeNVML, install

from scaling_bench.frontends import check
from scaling_bench.frontends.check import FAIL, PASS, Result
from scaling_bench.frontends.cli import main


def _passing(device):
    return [Result("fake pass", PASS, "12.5 widgets/s", {"widgets_per_s": 12.5})]


def _failing(device):
    return [Result("fake fail", FAIL, "0 widgets/s")]


def _raising(device):
    raise RuntimeError("the meter broke\nwith a second line")


@pytest.fixture
def only(monkeypatch):
    """Make ``check`` run just these checks."""

    def use(*checks):
        monkeypatch.setattr(check, "checks_for", lambda device: list(checks))

    return use


@pytest.fixture(scope="module")
def cpu_results():
    """The real CPU checks, the tiny cases cut to one family and two workloads to stay quick."""
    tiny = partial(check.check_tiny_cases, families=("mlp",), workloads=("forward", "train"))
    tiny.__name__ = "check_tiny_cases"
    checks = [check.check_device, check.check_memory_meter, check.check_tensor_meter,
              check.check_energy, tiny]  # fmt: skip
    return check.run_checks(torch.device("cpu"), checks)


def test_the_cpu_checks_pass_here(cpu_results):
    by_name = {r.name: r for r in cpu_results}

    assert [r.status for r in cpu_results if r.status == FAIL] == []
    assert by_name["tiny mlp"].summary.startswith("forward, train in ")
    assert by_name["memory meter"].figures["peak_cpu_rss_above_baseline_bytes"] >= 256 * 2**20
    assert by_name["tensor meter"].figures["peak_bytes"] == 100 * 2**20


def test_cpu_energy_is_measured_where_rapl_is_readable_else_not_available(cpu_results):
    energy = next(r for r in cpu_results if r.name == "energy counter")

    assert energy.status in (PASS, check.UNAVAILABLE)
    if energy.status == PASS:
        assert energy.figures["value"] > 0


def test_the_cpu_check_list_holds_the_cpu_checks():
    names = [c.__name__ for c in check.checks_for(torch.device("cpu"))]

    assert names == [
        "check_device",
        "check_gemm_peak",
        "check_drift",
        "check_bandwidth",
        "check_memory_meter",
        "check_tensor_meter",
        "check_energy",
        "check_tiny_cases",
    ]


def test_check_exits_0_and_writes_json_when_every_check_passes(only, tmp_path, capsys):
    only(_passing)
    out = tmp_path / "check.json"

    assert main(["check", "--device", "cpu", "--json", str(out)]) == 0

    assert json.loads(out.read_text()) == [
        {"name": "fake pass", "status": "pass", "summary": "12.5 widgets/s",
         "figures": {"widgets_per_s": 12.5}},
    ]  # fmt: skip
    assert "all checks passed" in capsys.readouterr().out


def test_one_failed_check_makes_the_exit_status_1(only, capsys):
    only(_passing, _failing)

    assert main(["check", "--device", "cpu"]) == 1
    assert "1 of 2 checks failed" in capsys.readouterr().out


def test_a_check_that_raises_fails_with_its_error_and_the_rest_still_run(only, tmp_path):
    only(_raising, _passing)
    out = tmp_path / "check.json"

    assert main(["check", "--device", "cpu", "--json", str(out)]) == 1

    rows = json.loads(out.read_text())
    assert [(r["name"], r["status"]) for r in rows] == [("raising", "fail"), ("fake pass", "pass")]
    assert rows[0]["summary"] == "RuntimeError: the meter broke"


def test_the_table_prints_every_figure_whole_at_80_columns(only, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    only(_passing, _failing)

    main(["check", "--device", "cpu"])

    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "12.5 widgets/s" in out
    assert "0 widgets/s" in out


def test_an_unwritable_json_file_is_a_one_line_error(only, tmp_path, capsys):
    only(_passing)

    assert main(["check", "--device", "cpu", "--json", str(tmp_path / "no" / "x.json")]) == 2
    assert "--json" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without GPU")
def test_check_on_cuda_without_a_gpu_is_a_user_error(capsys):
    assert main(["check", "--device", "cuda"]) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_cuda_checks_pass_on_this_gpu(tmp_path):
    out = tmp_path / "check.json"

    status = main(["check", "--device", "cuda", "--json", str(out)])

    failed = [r for r in json.loads(out.read_text()) if r["status"] == FAIL]
    assert (status, failed) == (0, [])


def test_a_gpu_in_the_peak_table_passes_and_an_unknown_one_fails(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    (known,) = check.check_peak_table(torch.device("cuda:0"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA Z9")
    (unknown,) = check.check_peak_table(torch.device("cuda:0"))

    assert (known.status, known.figures["bf16"]) == (PASS, 989.4e12)
    assert unknown.status == FAIL


def test_nvml_check_reads_memory_clocks_and_names_throttling(monkeypatch):
    fake = install(monkeypatch, FakeNVML(bits=[0x4]))
    fake.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(used=3 * 2**30)

    (result,) = check.check_nvml(torch.device("cuda:0"))

    assert result.status == check.WARN  # a throttled device measures low
    assert "3.0 GiB used" in result.summary
    assert "throttled: sw_power_cap" in result.summary
