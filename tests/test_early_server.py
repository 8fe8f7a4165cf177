"""The campaign starts the run's fork server while it plans the grid, and never leaves it behind."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from scaling_bench.config import grid
from scaling_bench.core.errors import UserError
from scaling_bench.engine import campaign, launchers
from scaling_bench.engine.protocol import Settings
from scaling_bench.report.progress import case_progress

TINY = {"family": "mlp", "target_params": "1e4", "workloads": "train", "budget_s": "0.05"}


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _ended(pid: int, limit_s: float = 30.0) -> bool:
    deadline = time.monotonic() + limit_s
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[launchers.ForkServer]:
    """Every server the campaign starts early."""
    servers: list[launchers.ForkServer] = []

    def recorded(settings: Settings) -> launchers.ForkServer | None:
        server = launchers.early_launcher(settings)
        servers.append(server)
        return server

    monkeypatch.setattr(campaign, "early_launcher", recorded)
    return servers


def test_the_server_started_while_planning_runs_the_cases_and_ends_with_the_run(
    tmp_path: Path, started: list[launchers.ForkServer]
) -> None:
    spec = grid.select("quick", TINY, resolve=lambda _: "cpu")
    prepared = campaign.prepare(spec, tmp_path, settings=Settings(peak_flops=2e11))

    (server,) = started
    assert prepared.launcher is server and _running(server.parent_pid)
    (record,) = prepared.run(progress=case_progress(bar=False))

    assert record["status"] == "ok"
    assert prepared.launcher is None
    assert _ended(server.parent_pid)


def test_a_mistake_found_while_planning_ends_the_server_started_for_the_run(
    tmp_path: Path, started: list[launchers.ForkServer]
) -> None:
    spec = grid.select("quick", TINY | {"workloads": "convergence"}, resolve=lambda _: "cpu")
    spec = replace(spec, convergence={"train_size": 10**9})  # more than the host's memory

    with pytest.raises(UserError, match="train_size"):
        campaign.prepare(spec, tmp_path, settings=Settings(peak_flops=2e11))

    (server,) = started
    assert _ended(server.parent_pid)


def test_fresh_workers_start_no_server_early(
    tmp_path: Path, started: list[launchers.ForkServer]
) -> None:
    spec = grid.select("quick", TINY, resolve=lambda _: "cpu")
    prepared = campaign.prepare(spec, tmp_path, settings=Settings(peak_flops=2e11,
                                                                   fresh_workers=True))  # fmt: skip

    assert started == [None] and prepared.launcher is None
