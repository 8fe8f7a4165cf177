"""The foreign-load meter: other processes' CPU time over the timed blocks, and the busy mark."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from scaling_bench.meters.foreign_load import (
    BUSY_SHARE,
    ForeignLoad,
    busy_state,
    own_cpu_s,
    run_supervisors,
)
from scaling_bench.meters.specs import RUNNER_PID_ENV
from scaling_bench.meters.timing import measure


class Readings:
    """Counters a test sets by hand: the machine's busy seconds, this process's, the clock."""

    def __init__(self) -> None:
        self.machine = self.own = self.clock = 0.0
        self.load = 1.5

    def meter(self, cores: int = 4, tick_s: float = 0.0) -> ForeignLoad:
        return ForeignLoad(lambda: self.machine, lambda: self.own, lambda: self.clock,
                           lambda: self.load, cores=cores, tick_s=tick_s)  # fmt: skip

    def block(self, meter: ForeignLoad, wall: float, machine: float, own: float) -> None:
        meter.block_started()
        self.clock += wall
        self.machine += machine
        self.own += own
        meter.block_ended(wall, 1)


def test_foreign_share_is_the_machines_cpu_seconds_less_this_processes_over_wall_and_cores():
    r = Readings()
    meter = r.meter(cores=4)
    r.block(meter, wall=1.0, machine=3.0, own=2.0)  # others: 1.0 s
    r.clock += 5.0  # between blocks: not counted
    r.machine += 20.0
    r.block(meter, wall=3.0, machine=5.0, own=4.0)  # others: 1.0 s
    m = meter.metrics()["foreign_cpu_fraction"]
    assert m["foreign_cores"] == pytest.approx(2.0 / 4.0)
    assert m["value"] == pytest.approx(2.0 / 4.0 / 4)
    assert (m["n"], m["cores"], m["wall_s"]) == (2, 4, 4.0)
    assert m["busy"] is True
    assert meter.annotation() == {"busy": True, "foreign_cpu_fraction": pytest.approx(0.125)}


def test_a_block_whose_ticks_read_less_machine_than_own_time_counts_no_foreign_time():
    r = Readings()
    meter = r.meter(cores=2)
    r.block(meter, wall=1.0, machine=0.99, own=1.0)
    assert meter.metrics()["foreign_cpu_fraction"]["value"] == 0.0
    assert meter.busy is False


def test_ticks_that_fall_apart_either_way_cancel_over_the_blocks():
    """Blocks one tick long read a tick too many as often as a tick too few on an idle machine:
    pooled, that is no foreign time (not a tick per block of it)."""
    r = Readings()
    meter = r.meter(cores=2)
    for i in range(100):
        tick = 0.01 if i % 2 else -0.01
        r.block(meter, wall=0.01, machine=0.01 + tick, own=0.01)
    assert meter.metrics()["foreign_cpu_fraction"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert meter.busy is False


def test_a_figure_is_busy_only_above_the_busy_share_of_the_machine():
    cores = 2
    for share, busy in ((BUSY_SHARE * 0.9, False), (BUSY_SHARE * 1.1, True)):
        r = Readings()
        meter = r.meter(cores=cores)
        r.block(meter, wall=1.0, machine=1.0 + share * cores, own=1.0)
        assert meter.metrics()["foreign_cpu_fraction"]["busy"] is busy
        assert meter.annotation()["busy"] is busy


def test_a_share_the_ticks_alone_can_explain_is_not_busy():
    r = Readings()
    meter = r.meter(cores=2, tick_s=0.01)
    for _ in range(100):  # 100 blocks of 10 ms: ±0.058 of the machine from ticks alone
        r.block(meter, wall=0.01, machine=0.01 + 0.09 * 0.01 * 2, own=0.01)
    m = meter.metrics()["foreign_cpu_fraction"]
    assert m["tick_margin"] == pytest.approx(2 * 0.01 * (100 * 2 / 6) ** 0.5 / 1.0 / 2)
    assert m["value"] == pytest.approx(0.09)  # above BUSY_SHARE, within the ticks' margin
    assert m["busy"] is False
    for _ in range(100):  # as many blocks again, with a neighbour on half a core
        r.block(meter, wall=0.01, machine=0.01 + 0.5 * 0.01, own=0.01)
    assert meter.busy is True


def test_the_load_average_is_summarised_over_the_blocks():
    r = Readings()
    meter = r.meter()
    for load in (1.0, 2.0, 3.0):
        r.load = load
        r.block(meter, wall=0.1, machine=0.0, own=0.0)
    m = meter.metrics()["load_avg_1m"]
    assert (m["value"], m["n"], m["unit"]) == (2.0, 3, "tasks")


def test_a_meter_that_read_no_block_records_nothing():
    meter = Readings().meter()
    assert meter.metrics() == {}
    assert meter.annotation() == {}


def test_busy_state_is_what_a_derived_figure_carries_from_its_source():
    assert busy_state(
        {"value": 1.0, "busy": True, "foreign_cpu_fraction": 0.3, "settled": True}
    ) == {
        "busy": True,
        "foreign_cpu_fraction": 0.3,
    }
    assert busy_state({"value": 1.0}) == {}


def test_own_cpu_time_counts_this_processes_other_threads():
    before = own_cpu_s()

    def spin() -> None:
        start = time.thread_time()
        while time.thread_time() - start < 0.2:
            pass

    thread = threading.Thread(target=spin)
    thread.start()
    thread.join()
    assert own_cpu_s() - before >= 0.15


@pytest.fixture
def neighbour() -> Iterator[subprocess.Popen]:
    """Another process busy-looping on one core for as long as the test runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    start = time.monotonic()
    while psutil.Process(proc.pid).cpu_times().user < 0.05 and time.monotonic() - start < 10:
        time.sleep(0.01)  # running, not still starting the interpreter
    yield proc
    proc.kill()
    proc.wait()


def test_a_neighbour_looping_on_one_core_reads_as_about_one_core_of_foreign_load(neighbour):
    meter = ForeignLoad()
    with meter:
        for _ in range(5):
            meter.block_started()
            time.sleep(0.2)  # this process idles: what the machine did is the neighbour's
            meter.block_ended(0.2, 1)
    m = meter.metrics()["foreign_cpu_fraction"]
    assert m["foreign_cores"] > 0.3  # a shared machine only adds load; 1 core if alone
    assert m["value"] == pytest.approx(m["foreign_cores"] / psutil.cpu_count())
    assert m["busy"] is True


def test_a_step_timed_beside_a_neighbour_is_read_at_every_sampling_block(neighbour):
    with ForeignLoad() as meter:
        timed = measure(lambda: time.sleep(0.002), "cpu", budget_s=0.2, meters=(meter,))
    assert meter.blocks == len(timed.step_s)
    assert meter.metrics()["foreign_cpu_fraction"]["foreign_cores"] > 0.3


def test_a_timed_workload_beside_a_neighbour_marks_its_figures_busy(neighbour):
    from scaling_bench.config.case import Case
    from scaling_bench.engine import execute
    from scaling_bench.engine.protocol import Settings

    case = Case("mlp", 1e4, workloads=("forward",), budget_s=0.2)
    metrics = execute.run_case(case.to_dict(), Settings())["metrics"]
    assert metrics["forward_foreign_cpu_fraction"]["foreign_cores"] > 0.3
    assert metrics["forward_load_avg_1m"]["n"] == metrics["forward_step_s"]["n"]
    for name in ("forward_step_s", "forward_samples_per_s", "forward_mfu"):
        assert metrics[name]["busy"] is True, name


def test_a_figure_is_busy_where_any_of_its_processes_was_timed_on_a_busy_machine():
    from scaling_bench.core.stats import summarize
    from scaling_bench.engine.processes import combine_processes

    def fields(busy: bool) -> dict:
        return {
            "status": "ok",
            "metrics": {"train_step_s": summarize([1.0, 1.1], "s") | {"busy": busy}},
        }

    assert combine_processes([fields(False), fields(True)], 2)["metrics"]["train_step_s"]["busy"]
    assert not combine_processes([fields(False), fields(False)], 2)["metrics"]["train_step_s"][
        "busy"
    ]


def test_the_supervisors_are_the_ancestors_up_to_the_runner_the_environment_names(monkeypatch):
    parents = psutil.Process().parents()[:2]  # the runner: the grandparent, where there is one
    monkeypatch.setenv(RUNNER_PID_ENV, str(parents[-1].pid))
    assert [p.pid for p in run_supervisors()] == [p.pid for p in parents]
    monkeypatch.setenv(RUNNER_PID_ENV, str(2**22 + 1))  # no ancestor: none is the run's own
    assert run_supervisors() == ()
    monkeypatch.delenv(RUNNER_PID_ENV)
    assert run_supervisors() == ()


WORKER = """
import time
from scaling_bench.meters.foreign_load import ForeignLoad
meter = ForeignLoad()
for _ in range(5):
    meter.block_started()
    time.sleep(0.2)
    meter.block_ended(0.2, 1)
print(meter.metrics()["foreign_cpu_fraction"]["foreign_cores"])
"""


@pytest.mark.parametrize("named", [True, False])
def test_the_runners_own_cpu_time_is_not_a_neighbours(named, monkeypatch):
    """A worker whose runner (here: this test, spinning a thread) works while it times reads
    that work as the run's own where the runner named itself, and as foreign where not."""
    env = {RUNNER_PID_ENV: str(os.getpid())} if named else {}
    monkeypatch.delenv(RUNNER_PID_ENV, raising=False)
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True,
                              env=os.environ | env)  # fmt: skip
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            pass

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        foreign = float(worker.communicate(timeout=60)[0])
    finally:
        done.set()
        thread.join()
    if named:
        assert foreign < 0.3  # a quiet machine reads ~0; other jobs only add
    else:
        assert foreign > 0.5  # the spinning thread: ~1 core
