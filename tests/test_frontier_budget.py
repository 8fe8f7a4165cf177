"""``frontier --budget`` keeps to its budget where every run takes longer than planned."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from faults import Case as FaultCase
from test_runner import by_id, run

from scaling_bench.frontier.budget import BudgetKeeper
from scaling_bench.frontier.design import PlannedRun

#: Four budgets 3x apart of five runs each, the design's default shape: 1, 3, 9, 27 s a run.
BUDGETS = (1e9, 3e9, 9e9, 2.7e10)


@dataclass(frozen=True)
class Case:
    case_id: str


def design() -> dict[str, PlannedRun]:
    return {
        f"b{b}-s{s}": PlannedRun(flops, 1e5 * 2**s, 100_000, 1000, 10, predicted_s=3.0**b)
        for b, flops in enumerate(BUDGETS)
        for s in range(5)
    }


class SlowMachine:
    """A fake runner on a fake clock: each run takes ``slowdown`` times its prediction."""

    def __init__(self, slowdown: float) -> None:
        self.now = 0.0
        self.slowdown = slowdown

    def run(self, keeper: BudgetKeeper, runs: dict[str, PlannedRun]) -> list[str]:
        ran = []
        for case_id, planned in runs.items():
            if keeper.stop(Case(case_id)):
                break
            self.now += self.slowdown * planned.predicted_s
            ran.append(case_id)
        return ran


def test_a_machine_three_times_slower_than_planned_stops_within_the_budget_at_a_whole_budget():
    runs = design()
    planned_s = sum(r.predicted_s for r in runs.values())  # 200 s
    machine = SlowMachine(slowdown=3.0)
    keeper = BudgetKeeper(runs, deadline=planned_s, clock=lambda: machine.now)
    ran = machine.run(keeper, runs)
    assert machine.now <= planned_s
    # 3x slower: the first three budgets (5 + 15 + 45 s planned) take 195 s; the fourth is left.
    assert ran == [i for i in runs if not i.startswith("b3")]
    assert keeper.left == [i for i in runs if i.startswith("b3")]
    assert keeper.note(len(runs)) == (
        "frontier: kept to --budget: ran 15 of the design's 20 runs, fitted on those that "
        "finished; the 5 run(s) of the budget of 2.7e+10 FLOPs would take 405s at the pace seen "
        "(3x the prediction), and 5s are left; --resume runs the 5 left"
    )


def test_a_machine_as_fast_as_planned_runs_the_whole_design_and_says_nothing():
    runs = design()
    machine = SlowMachine(slowdown=1.0)
    keeper = BudgetKeeper(runs, deadline=200.0, clock=lambda: machine.now)
    assert machine.run(keeper, runs) == list(runs)
    assert keeper.note(len(runs)) is None


def test_a_begun_budget_goes_on_run_by_run_while_each_run_fits():
    runs = {i: r for i, r in design().items() if i.startswith("b3")}  # a resumed top budget
    machine = SlowMachine(slowdown=2.0)
    keeper = BudgetKeeper(runs, deadline=110.0, begun={BUDGETS[3]}, clock=lambda: machine.now)
    # 27 s planned, 54 s taken: the second run fits (108 s), the third would end at 162 s.
    assert machine.run(keeper, runs) == ["b3-s0", "b3-s1"]
    assert "the 1 run(s) of the budget of 2.7e+10 FLOPs would take 54s" in keeper.note(20)


def test_the_runner_leaves_the_cases_from_the_first_stopped_one_unrecorded(tmp_path: Path):
    cases = [FaultCase(f"c{i}") for i in range(4)]
    asked = []

    def stop(case: FaultCase) -> bool:
        asked.append(case.case_id)
        return case.case_id == "c2"

    records = run(cases, tmp_path, stop=stop)
    assert [r["case_id"] for r in records] == ["c0", "c1"]
    assert set(by_id(records)) == {"c0", "c1"}
    assert asked == ["c0", "c1", "c2"]
    resumed = run(cases, tmp_path, resume=True)  # --resume runs what the budget left
    assert [r["case_id"] for r in resumed] == ["c2", "c3"]
