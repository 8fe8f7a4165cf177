"""``scaling-bench ab``: base and current alternated on one machine, judged pair by pair."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import synthetic
from test_compare import compare

from scaling_bench.engine.ab import (
    DONE_FILE,
    Plan,
    Side,
    absolute_paths,
    resolve_side,
    run_ab,
    running_tree,
    side_folder,
)
from scaling_bench.frontends.cli import main
from scaling_bench.store.records import RESULTS_FILE, load_records


def rounds_of(values: Sequence[float]) -> list[dict]:
    """Synthetic records whose train step's per-process values are ``values``, in order."""
    records = synthetic.run(families=("mlp",), sizes=(1e6,), seed=0)
    for metric in records[0]["metrics"].values():
        if "samples" in metric:
            scale = metric["value"]
            metric["process_values"] = [scale * v for v in values]
            metric["value"] = metric["median"] = scale * sorted(values)[len(values) // 2]
    return records


DRIFT = [1.0, 1.1, 1.2, 1.3, 1.4]  # the machine slows down over the A/B


def test_a_slowdown_within_drift_is_seen_only_pair_by_pair(capsys, tmp_path: Path) -> None:
    base = synthetic.write(tmp_path / "b", rounds_of(DRIFT))
    slow = synthetic.write(tmp_path / "c", rounds_of([1.07 * d for d in DRIFT]))
    _, unpaired, _ = compare(capsys, base, slow, "--metric", "train_step_s")
    assert {r["verdict"] for r in unpaired["rows"]} == {"inconclusive"}
    code, paired, _ = compare(capsys, base, slow, "--metric", "train_step_s", "--paired")
    (row,) = paired["rows"]
    assert row["verdict"] == "regressed" and code == 1
    assert row["ratio"] == pytest.approx(1.07)
    assert paired["paired"]


def test_pairs_that_agree_within_noise_pass(capsys, tmp_path: Path) -> None:
    rng = random.Random(0)
    base = synthetic.write(tmp_path / "b", rounds_of(DRIFT))
    same = [d * (1 + rng.gauss(0, 0.01)) for d in DRIFT]
    rerun = synthetic.write(tmp_path / "c", rounds_of(same))
    code, report, _ = compare(capsys, base, rerun, "--metric", "train_step_s", "--paired")
    assert code == 0 and {r["verdict"] for r in report["rows"]} == {"unchanged"}


def test_sides_with_different_rounds_are_tested_unpaired_and_say_so(capsys, tmp_path) -> None:
    base = synthetic.write(tmp_path / "b", rounds_of(DRIFT))
    fewer = synthetic.write(tmp_path / "c", rounds_of([2 * d for d in DRIFT[:3]]))
    _, report, _ = compare(capsys, base, fewer, "--metric", "train_step_s", "--paired")
    assert "unpaired" in report["rows"][0]["note"]


def test_a_hundredfold_slowdown_over_two_rounds_fails_the_gate(capsys, tmp_path) -> None:
    """Reproduces ``ab --rounds 2`` passing a 131x slowdown: base drifted 20% between its rounds
    while the slow side did not, so the two pairs disagree and one degree of freedom leaves the
    t-test at p = 0.012."""
    base = synthetic.write(tmp_path / "b", rounds_of([1.0, 1.2]))
    slow = synthetic.write(tmp_path / "c", rounds_of([131.0, 132.0]))
    code, report, _ = compare(capsys, base, slow, "--metric", "train_step_s", "--paired")
    (row,) = report["rows"]
    assert row["p_value"] > 0.01 and row["verdict"] == "regressed" and code == 1
    assert "beyond 10× the rounds' spread" in row["note"]


def test_a_move_within_ten_times_the_rounds_spread_needs_the_t_test(capsys, tmp_path) -> None:
    base = synthetic.write(tmp_path / "b", rounds_of([1.0, 1.2]))
    slower = synthetic.write(tmp_path / "c", rounds_of([1.3, 1.45]))
    code, report, _ = compare(capsys, base, slower, "--metric", "train_step_s", "--paired")
    assert code == 0 and report["rows"][0]["verdict"] == "inconclusive"


class FakeRuns:
    """Stands in for ``scaling-bench run``: each side-round writes one case whose step time is
    the side's factor times the round's machine speed; calls are logged in order."""

    def __init__(self, factors: dict[str, float], fail: set[tuple[str, int]] = frozenset()):
        self.factors, self.fail, self.calls = factors, fail, []
        self.interrupt_at: int | None = None

    def __call__(self, side: Side, run_args: Sequence[str], folder: Path) -> None:
        n = int(folder.name.split("-")[0])
        if self.interrupt_at == len(self.calls):
            raise KeyboardInterrupt
        self.calls.append((n, side.name))
        status = "crashed" if (side.name, n) in self.fail else "ok"
        record = synthetic.record(
            "mlp", 1e6, rng=random.Random(n), slowdown=self.factors[side.name] * DRIFT[n - 1],
            status=status, noise=0.001,
        )  # fmt: skip
        synthetic.write(folder, [record])


def plan(tmp_path: Path, rounds: int = 4) -> Plan:
    tree = str(running_tree())
    return Plan(Side("base", "", tree), Side("current", "", tree), ("--families", "mlp"), rounds)


def test_rounds_alternate_which_side_goes_first_and_pool_in_order(tmp_path: Path) -> None:
    runs = FakeRuns({"base": 1.0, "current": 1.0})
    run_ab(plan(tmp_path), tmp_path, runs, progress=lambda line: None)
    assert runs.calls == [(1, "base"), (1, "current"), (2, "current"), (2, "base"),
                          (3, "base"), (3, "current"), (4, "current"), (4, "base")]  # fmt: skip
    for side in ("base", "current"):
        (record,) = load_records(tmp_path / side / RESULTS_FILE)
        values = record["metrics"]["train_step_s"]["process_values"]
        assert len(values) == 4 and values == sorted(values)  # round order: the drift shows


def test_a_round_a_side_failed_is_left_out_of_the_pairs_and_fails_the_gate(capsys, tmp_path):
    runs = FakeRuns({"base": 1.0, "current": 1.0}, fail={("current", 2)})
    run_ab(plan(tmp_path), tmp_path, runs, progress=lambda line: None)
    base, current = (load_records(tmp_path / s / RESULTS_FILE)[0] for s in ("base", "current"))
    assert len(base["metrics"]["train_step_s"]["process_values"]) == 3
    assert base["metrics"]["train_step_s"]["process_values"] == pytest.approx(
        current["metrics"]["train_step_s"]["process_values"], rel=0.01
    )
    assert current["status"] == "crashed" and current["error"].startswith("round 2 of 4: ")
    code, report, _ = compare(capsys, tmp_path / "base", tmp_path / "current", "--paired")
    assert code == 1 and report["status_changes"][0]["current"] == "crashed"


def test_an_interrupted_ab_keeps_its_rounds_and_resumes_without_repeating(tmp_path) -> None:
    runs = FakeRuns({"base": 1.0, "current": 1.0})
    runs.interrupt_at = 3  # in round 2, the second side
    with pytest.raises(KeyboardInterrupt, match="interrupted in round 2"):
        run_ab(plan(tmp_path), tmp_path, runs, progress=lambda line: None)
    (pooled,) = load_records(tmp_path / "base" / RESULTS_FILE)
    assert "process_values" not in pooled["metrics"]["train_step_s"]  # round 1 alone
    runs.interrupt_at = None
    run_ab(plan(tmp_path), tmp_path, runs, progress=lambda line: None)
    assert sorted(runs.calls) == sorted({*runs.calls})  # no side-round ran twice
    assert len(runs.calls) == 8
    assert all((side_folder(tmp_path, r, s) / DONE_FILE).exists()
               for r in range(4) for s in plan(tmp_path).sides)  # fmt: skip


def test_more_rounds_extend_an_ab_and_another_plan_is_refused(tmp_path: Path) -> None:
    runs = FakeRuns({"base": 1.0, "current": 1.0})
    run_ab(plan(tmp_path, rounds=2), tmp_path, runs, progress=lambda line: None)
    run_ab(plan(tmp_path, rounds=3), tmp_path, runs, progress=lambda line: None)
    assert len(runs.calls) == 6
    other = Plan(*plan(tmp_path).sides, ("--families", "gpt"), 3)
    with pytest.raises(Exception, match="holds another A/B"):
        run_ab(other, tmp_path, runs, progress=lambda line: None)


def test_a_git_revision_is_extracted_and_a_folder_taken_as_it_is(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "scaling_bench").mkdir(parents=True)
    (repo / "scaling_bench" / "__init__.py").write_text("MARK = 1\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    side = resolve_side("base", "HEAD", {}, repo)
    assert side.revision and Path(side.tree, "scaling_bench", "__init__.py").read_text() == (
        "MARK = 1\n"
    )
    assert resolve_side("base", str(repo), {}, tmp_path).tree == str(repo.resolve())


def test_path_flags_become_absolute_for_runs_started_in_the_tree(tmp_path: Path) -> None:
    (tmp_path / "g.toml").write_text("")
    args = absolute_paths(["--grid", "g.toml", "--data-root=g.toml", "--dataset", "g.toml"],
                          tmp_path)  # fmt: skip
    assert args == ("--grid", str(tmp_path / "g.toml"), f"--data-root={tmp_path / 'g.toml'}",
                    "--dataset", "g.toml")  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--rounds", "1", "--", "--families", "mlp"], "--rounds 1"),
        (["--base-env", "1X=2", "--", "--families", "mlp"], "--base-env '1X=2'"),
        (["--", "--families", "mlp", "--out", "x"], "--out is set by the A/B"),
        (["--", "--families", "mlp", "--processes", "3"], "--processes is set by the A/B"),
        ([], "give the grid after --"),
        (["--", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--threshold", "x", "--", "--families", "mlp"], "--threshold 'x'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, named) -> None:
    code = main(["ab", "--base", str(running_tree()), "--out", str(tmp_path / "ab"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and named in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ab").exists()


@pytest.mark.parametrize("rounds", ["abc", [1], 1, 10**9])
def test_an_edited_plan_file_of_the_wrong_type_is_named_in_one_line(capsys, tmp_path, rounds):
    out = tmp_path / "ab"
    out.mkdir()
    kept = plan(tmp_path).to_dict() | {"rounds": rounds}
    (out / "ab.json").write_text(json.dumps(kept))
    code = main(["ab", "--base", str(running_tree()), "--out", str(out), "--rounds", "2",
                 "--", "--families", "mlp"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"{out / 'ab.json'}: rounds: " in err[0]
    assert not (out / "rounds").exists()


def test_a_relative_out_holds_every_round_though_each_side_runs_in_its_tree(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    """Reproduces ``ab --out <relative dir>``: each side-round runs in its side's tree, where
    a relative folder named another place, and the verdict found no records."""
    import scaling_bench.engine.ab as ab

    tree = tmp_path / "tree"
    (tree / "scaling_bench").mkdir(parents=True)
    (tree / "scaling_bench" / "__init__.py").write_text("")
    fake = FakeRuns({"base": 1.0, "current": 1.0})

    def in_tree(side: Side, run_args: Sequence[str], folder: Path) -> None:
        fake(side, run_args, Path(side.tree, folder))  # a run started in the side's tree

    real_run_ab = ab.run_ab
    monkeypatch.setattr(ab, "run_ab", lambda plan, out: real_run_ab(plan, out, in_tree))
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.chdir(caller)
    code = main(["ab", "--base", str(tree), "--current", str(tree), "--rounds", "2",
                 "--out", "rel", "--json", "--", "--families", "mlp"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(fake.calls) == 4 and not (tree / "rel").exists()
    (record,) = load_records(caller / "rel" / "current" / RESULTS_FILE)
    assert len(record["metrics"]["train_step_s"]["process_values"]) == 2


def test_a_base_that_is_neither_revision_nor_tree_is_named(capsys, tmp_path: Path) -> None:
    code = main(["ab", "--base", "no-such-rev", "--", "--families", "mlp"])
    err = capsys.readouterr().err
    assert code == 2 and "--base no-such-rev: neither a git revision" in err


@pytest.mark.slow
def test_an_ab_of_real_runs_pairs_its_rounds_and_names_the_thread_difference(tmp_path) -> None:
    """Two rounds of a tiny forward case, the base under two threads and the current side under
    one (both named, so a caller's own OMP_NUM_THREADS=1 changes nothing): each side runs its own
    tree's ``run`` into the relative ``--out``; the gate's JSON names the thread difference."""
    out = tmp_path / "ab"
    command = [sys.executable, "-m", "scaling_bench.frontends.cli", "ab", "--base",
               str(running_tree()), "--base-env", "OMP_NUM_THREADS=2", "--current-env",
               "OMP_NUM_THREADS=1", "--rounds", "2",
               "--out", "ab", "--json", "--", "--families", "mlp", "--sizes", "1e4",
               "--workloads", "forward", "--budget", "0.05"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["paired"]
    assert any("torch_threads" in d and d.endswith("→ 1") for d in report["machine_differences"])
    (record,) = load_records(out / "current" / RESULTS_FILE)
    assert len(record["metrics"]["forward_step_s"]["process_values"]) == 2
    assert "ab: round 2/2" in done.stderr
