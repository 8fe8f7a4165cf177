"""`run --shard K/N` splits a grid into parts every host computes alike; `merge` joins them."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from scaling_bench.config import grid
from scaling_bench.config.shard import Shard, parse_shard, split
from scaling_bench.core.errors import UserError
from scaling_bench.engine import campaign
from scaling_bench.engine.protocol import Settings
from scaling_bench.frontends.cli import main
from scaling_bench.models import FAMILY_NAMES
from scaling_bench.store.records import RESULTS_FILE, load_records

TINY = ["--families", "mlp", "--sizes", "1e4,2e4,3e4", "--workloads", "checkpoint"]
TINY += ["--budget", "0.05", "--no-progress"]
IDS = ["mlp-1e4-fp32-cpu", "mlp-2e4-fp32-cpu", "mlp-3e4-fp32-cpu"]


def _cases(**given: str) -> list:
    spec = grid.select("quick", given, resolve=lambda _: "cpu")
    return grid.build_cases(spec, "cpu")


def _ids(cases: list) -> list[str]:
    return [c.case_id for c in cases]


# --- the split ----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 60])
def test_the_shards_partition_the_grid_the_same_way_every_time(count: int) -> None:
    cases = _cases(precision="fp32,bf16", optimizer="adamw,sgd")  # families x 3 sizes x 2 x 2
    assert len(cases) == len(FAMILY_NAMES) * 3 * 2 * 2
    shards = split(cases, count)
    every = [case_id for shard in shards for case_id in _ids(shard)]
    assert Counter(every) == Counter(_ids(cases)), "each case in exactly one shard"
    assert max(map(len, shards)) - min(map(len, shards)) <= 1, "sizes differ by one at most"
    again = split(_cases(precision="fp32,bf16", optimizer="adamw,sgd"), count)
    assert [_ids(s) for s in again] == [_ids(s) for s in shards], "a second build splits alike"
    for shard in shards:  # each keeps the grid's run order
        assert _ids(shard) == [i for i in _ids(cases) if i in set(_ids(shard))]


def test_the_split_does_not_depend_on_the_order_the_grid_lists_its_cases() -> None:
    cases = _cases(precision="fp32,bf16")
    families = ",".join(reversed(FAMILY_NAMES))
    listed = _cases(family=families, precision="bf16,fp32")  # the same cases, listed otherwise
    assert set(_ids(listed)) == set(_ids(cases)) and _ids(listed) != _ids(cases)
    shuffled = list(cases)
    random.Random(1).shuffle(shuffled)
    for other in (listed, shuffled):
        assert [set(_ids(s)) for s in split(other, 4)] == [set(_ids(s)) for s in split(cases, 4)]


def test_each_shard_gets_its_share_of_every_size() -> None:
    cases = _cases(target_params="1e4,1e5,1e6,1e7")  # families x 4 sizes: round-robin over
    for shard in split(cases, 4):  # the grid's own order would give one shard every 1e7
        assert len({c.target_params for c in shard}) >= 3


def test_a_grid_and_the_same_grid_under_a_strategy_split_alike() -> None:
    cases = _cases(family="mlp", optimizer="adamw,sgd", precision="fp32,bf16")
    ddp = [c.__class__(**{**vars(c), "strategy": "ddp", "nproc_per_node": 2}) for c in cases]
    assert all(d.case_id == f"{c.case_id}-ddp2" for c, d in zip(cases, ddp, strict=True))
    for one, two in zip(split(cases, 3), split(ddp, 3), strict=True):
        assert [f"{i}-ddp2" for i in _ids(one)] == _ids(two)


def test_parse_shard_counts_from_one() -> None:
    assert parse_shard("1/4") == Shard(1, 4)
    assert parse_shard(" 4 / 4 ") == Shard(4, 4)
    assert str(parse_shard("2/3")) == "2/3"


def test_a_grid_of_fewer_cases_than_shards_is_refused() -> None:
    with pytest.raises(UserError, match=r"--shard 4/4: the grid has 3 cases, fewer than 4"):
        Shard(4, 4).select(_cases(family="mlp"))


# --- run --shard: its input ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0/4", "5/4", "1/0", "abc", "1/2/3", "", "-1/4", "1.5/4"])
def test_a_bad_shard_exits_2_with_one_line_naming_it(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", *TINY, f"--shard={value}", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scaling-bench: error: --shard")
    assert value in err
    assert not (tmp_path / "out").exists(), "refused before anything is made"


def test_more_shards_than_cases_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *TINY, "--shard", "4/4", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shard 4/4" in err and "3 cases" in err


def test_max_cases_bounds_the_whole_grid_not_the_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", *TINY, "--shard", "1/3", "--max-cases", "2", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "3 cases, more than --max-cases 2" in capsys.readouterr().err


def test_skipped_cases_are_recorded_by_their_own_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skips are decided on the whole grid (a grid nothing of which can run is refused) and go
    with each case to its shard; a shard whose every case is skipped is no error."""
    monkeypatch.setattr(
        campaign, "unsupported", lambda c, _: "not 2e4" if c.target_params == 2e4 else None
    )
    spec = grid.select("quick", {"family": "mlp", "target_params": "1e4,2e4,3e4"},
                       resolve=lambda _: "cpu")  # fmt: skip
    settings = Settings(peak_flops=2e11)
    one = campaign.prepare(spec, tmp_path, settings=settings, shard=Shard(1, 2))
    two = campaign.prepare(spec, tmp_path, settings=settings, shard=Shard(2, 2))
    assert _ids(one.cases) == [IDS[0], IDS[2]] and one.skipped == {}
    assert _ids(two.cases) == [IDS[1]] and two.skipped == {IDS[1]: "not 2e4"}


# --- real shards, merged ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tiny grid run as two shards, each into its own folder."""
    root = tmp_path_factory.mktemp("shards")
    outs = [root / "shard-1", root / "shard-2"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCALING_BENCH_PEAK_FLOPS", "2e11")
        for k, out in enumerate(outs, start=1):
            assert main(["run", *TINY, "--shard", f"{k}/2", "--out", str(out)]) == 0
    return outs


def _merge(capsys: pytest.CaptureFixture[str], *args: Path | str) -> tuple[int, str]:
    code = main(["merge", *map(str, args)])
    return code, capsys.readouterr().err


def test_each_shard_runs_its_part_and_merge_joins_the_whole_grid(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = (load_records(out / RESULTS_FILE) for out in shards)
    assert [r["case_id"] for r in first] == [IDS[0], IDS[2]]
    assert [r["case_id"] for r in second] == [IDS[1]]
    assert all(r["status"] == "ok" for r in first + second), [r["error"] for r in first + second]
    code, err = _merge(capsys, *shards, "--out", tmp_path / "all")
    assert code == 0, err
    merged = load_records(tmp_path / "all" / RESULTS_FILE)
    assert merged == first + second, "every record as it was, in the sources' order"
    assert "3 records added" in err


def test_a_folder_merged_twice_is_kept_once(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = shards[1] / RESULTS_FILE  # a folder, and the same records as a file
    code, err = _merge(capsys, shards[0], shards[1], shards[0], results, "--out", tmp_path)
    assert code == 0, err
    assert [r["case_id"] for r in load_records(tmp_path / RESULTS_FILE)] == [IDS[0], IDS[2], IDS[1]]
    assert "3 records added, 3 of the 6 read were already there" in err


def _conflicting_copy(shard: Path, to: Path) -> Path:
    """``shard``'s results with the first record's duration changed."""
    to.mkdir()
    lines = (shard / RESULTS_FILE).read_text().splitlines()
    record = json.loads(lines[0])
    record["duration_s"] += 1.0
    lines[0] = json.dumps(record, sort_keys=True)
    (to / RESULTS_FILE).write_text("\n".join(lines) + "\n")
    return to


def test_two_different_records_of_a_case_are_refused_and_nothing_is_written(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edited = _conflicting_copy(shards[0], tmp_path / "edited")
    out = tmp_path / "all"
    code, err = _merge(capsys, shards[0], shards[1], edited, "--out", out)
    assert code == 2
    assert err.count("\n") == 1 and f"case {IDS[0]}" in err
    assert f"{shards[0] / RESULTS_FILE} line 1" in err and f"{edited / RESULTS_FILE} line 1" in err
    assert not out.exists()


def test_merging_into_a_folder_that_holds_records_appends_only_the_missing_ones(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "all"
    assert _merge(capsys, shards[1], "--out", out)[0] == 0  # the shard that finished first
    before = (out / RESULTS_FILE).read_bytes()
    code, err = _merge(capsys, *shards, "--out", out)  # all of them, once they have finished
    assert code == 0, err
    after = (out / RESULTS_FILE).read_bytes()
    assert after.startswith(before), "what was there stays, first"
    assert [r["case_id"] for r in load_records(out / RESULTS_FILE)] == [IDS[1], IDS[0], IDS[2]]
    assert "2 records added, 1 of the 3 read were already there; it holds 3" in err
    assert _merge(capsys, *shards, "--out", out)[0] == 0, "merging again changes nothing"
    assert (out / RESULTS_FILE).read_bytes() == after


def test_a_source_that_contradicts_the_folder_merged_into_is_refused(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "all"
    assert _merge(capsys, shards[0], "--out", out)[0] == 0
    before = (out / RESULTS_FILE).read_bytes()
    edited = _conflicting_copy(shards[0], tmp_path / "edited")
    code, err = _merge(capsys, shards[1], edited, "--out", out)
    assert code == 2 and err.count("\n") == 1
    assert f"{out / RESULTS_FILE} line 1" in err and f"case {IDS[0]}" in err
    assert (out / RESULTS_FILE).read_bytes() == before


def test_merge_refuses_missing_sources_a_folder_without_results_and_a_file_as_out(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("")
    for args, expected in (
        ((tmp_path / "nowhere", "--out", tmp_path / "a"), "no such file or folder"),
        ((tmp_path / "empty", "--out", tmp_path / "a"), f"no {RESULTS_FILE} in this folder"),
        ((shards[0], "--out", tmp_path / "file"), "not a folder"),
    ):
        code, err = _merge(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "a").exists()


def test_merge_takes_the_folder_lock(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scaling_bench.store.lock import ResultsLock

    with ResultsLock(tmp_path):
        code, err = _merge(capsys, shards[0], "--out", tmp_path)
    assert code == 2 and "in use by another scaling-bench run" in err
    assert not (tmp_path / RESULTS_FILE).exists()


def test_a_merged_copy_of_a_bad_record_is_refused_by_the_schema(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(shards[1], bad)
    record = load_records(bad / RESULTS_FILE)[0]
    record["status"] = "finished"
    (bad / RESULTS_FILE).write_text(json.dumps(record) + "\n")
    code, err = _merge(capsys, bad, "--out", tmp_path / "all")
    assert code == 2 and err.count("\n") == 1 and "line 1" in err
