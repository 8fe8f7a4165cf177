"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from scaling_bench.workloads.base import ordered

ordered()  # the built-in workloads registered: the registry every test may ask about


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state, so random configs are reproducible."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def many_records_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder of ``many_records_study.MANY`` synthetic records, written once."""
    from many_records_study import MANY, many_records

    out = tmp_path_factory.mktemp("many")
    many_records.write(out, MANY)
    return out


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests (and the workers they start) never read or write the user's measured-peak cache."""
    old = os.environ.get("SCALING_BENCH_CACHE_DIR")
    os.environ["SCALING_BENCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        del os.environ["SCALING_BENCH_CACHE_DIR"]
    else:
        os.environ["SCALING_BENCH_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _private_plan_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test keeps its plans to itself: one test's cached plan never answers another's."""
    folder = tmp_path / "plans"
    monkeypatch.setenv("SCALING_BENCH_PLAN_CACHE_DIR", str(folder))
    return folder
