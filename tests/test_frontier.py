"""The compute-optimal frontier: fits recover known laws, the design is trainable, the CLI runs.

The fit tests train nothing: losses come from a known L(N, D) with noise. One tiny frontier run
(a few hundred tokens per run) covers the command, its records, resume and the report.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from scaling_bench.config.case import Case
from scaling_bench.config.convergence import ConvergenceSettings
from scaling_bench.core.errors import UserError
from scaling_bench.frontends.cli import main
from scaling_bench.frontends.frontier import parse_duration
from scaling_bench.frontier.analysis import analyse, frontier_runs
from scaling_bench.frontier.design import DESIGN_FILE, design, smallest_params
from scaling_bench.frontier.fit import Run, approach2, budget_groups
from scaling_bench.frontier.law import LossLaw, approach3
from scaling_bench.frontier.machine import time_optimal, time_to_loss
from scaling_bench.frontier.options import FrontierOptions
from scaling_bench.frontier.report import FRONTIER_JSON, frontier_section, saved_choices
from scaling_bench.frontier.section import register_frontier
from scaling_bench.frontier.throughput import Throughput, throughput_of
from scaling_bench.models import family, gpt
from scaling_bench.report.html import build_html
from scaling_bench.report.markdown import build_markdown
from scaling_bench.report.tables import Findings
from scaling_bench.store.records import RESULTS_FILE, load_records, make_record
from scaling_bench.workloads.convergence import steps_for

register_frontier()  # as the command line does: the reports below carry the frontier section
TRUTH = LossLaw(E=1.2, A=40.0, B=300.0, alpha=0.35, beta=0.3)
BUDGETS = (1e11, 4e11, 1.6e12, 6.4e12)
NOISE = 0.003  # multiplicative, on the loss


def _isoflop_runs(law: LossLaw, centre_of, seed: int = 1, noise: float = NOISE) -> list[Run]:
    """Five sizes per budget, ×2 apart around ``centre_of(C)``, each on D = C/(6N) tokens."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in BUDGETS:
        for j in range(-2, 3):
            n = centre_of(c) * 2.0**j
            d = c / (6 * n)
            loss = float(law.loss(n, d)) * math.exp(rng.normal(0, noise))
            runs.append(Run(f"c{c:g}-n{j}", round(n), round(d), loss))
    return runs


@pytest.fixture(scope="module")
def centred_runs() -> list[Run]:
    return _isoflop_runs(TRUTH, TRUTH.n_opt)


@pytest.fixture(scope="module")
def fit3(centred_runs: list[Run]):
    return approach3(centred_runs, bootstrap=100)


def test_parametric_fit_recovers_the_law_within_its_intervals(fit3) -> None:
    for name in ("E", "A", "B", "alpha", "beta"):
        assert fit3.intervals[name].contains(getattr(TRUTH, name)), name
    assert fit3.intervals["a"].contains(TRUTH.a)
    assert fit3.intervals["b"].contains(TRUTH.b)
    assert len(fit3.replicates) == 100


def test_compute_optimal_n_and_tokens_per_parameter_are_recovered(fit3) -> None:
    at = fit3.at(BUDGETS[-1])
    assert at["n_opt"].contains(TRUTH.n_opt(BUDGETS[-1]))
    ratio = TRUTH.d_opt(BUDGETS[-1]) / TRUTH.n_opt(BUDGETS[-1])
    assert at["tokens_per_param"].contains(ratio)


def test_closed_form_optimum_is_the_minimum_along_the_isoflop_line() -> None:
    c = 1e12
    ns = np.geomspace(1e3, 1e7, 20001)
    best = ns[np.argmin(TRUTH.loss(ns, c / (6 * ns)))]
    assert TRUTH.n_opt(c) == pytest.approx(best, rel=1e-3)
    assert 6 * TRUTH.n_opt(c) * TRUTH.d_opt(c) == pytest.approx(c)


def test_isoflop_parabolas_recover_the_exponent(centred_runs: list[Run]) -> None:
    fit = approach2(centred_runs)
    assert [b.fitted for b in fit.budgets] == [True] * 4
    assert fit.a.contains(TRUTH.a)
    assert fit.b.value == pytest.approx(1 - fit.a.value)
    for b in fit.budgets:
        assert b.n_opt.value == pytest.approx(TRUTH.n_opt(b.flops), rel=0.1)
        assert b.d_opt.value * b.n_opt.value * 6 == pytest.approx(b.flops)


@pytest.mark.parametrize("noise", [0.003, 0.02])
def test_isoflop_intervals_hold_the_optimum_as_often_as_they_claim(noise: float) -> None:
    """Fieller's interval holds N_opt (or is unbounded) in 91–93% of budgets (bootstrap 70–74%)."""
    runs = [_isoflop_runs(TRUTH, TRUTH.n_opt, s, noise) for s in range(30)]
    budgets = [b for r in runs for b in approach2(r).budgets]
    held = [b.n_opt.low is None or b.n_opt.contains(TRUTH.n_opt(b.flops)) for b in budgets]
    assert sum(held) >= 0.85 * len(held)


def test_a_budget_without_an_interior_minimum_is_reported_not_fitted() -> None:
    """Sizes all below the optimum: the loss falls to the largest one."""
    runs = _isoflop_runs(TRUTH, lambda c: TRUTH.n_opt(c) / 16)
    fit = approach2(runs)
    assert not any(b.fitted for b in fit.budgets)
    assert all("above the largest size" in b.reason for b in fit.budgets)
    assert all(b.n_opt is None and b.d_opt is None for b in fit.budgets)
    assert fit.a is None and "interior minimum" in fit.reason


def test_only_budgets_with_an_optimum_enter_the_exponent(centred_runs: list[Run]) -> None:
    narrow = [r for r in centred_runs if not r.case_id.startswith("c1e+11") or "n-" in r.case_id]
    fit = approach2(narrow)
    assert [b.fitted for b in fit.budgets] == [False, True, True, True]
    assert fit.a is not None


def test_runs_group_into_budgets_despite_whole_steps() -> None:
    runs = [Run(str(i), n, round(c / (6 * n) * f), 3.0) for i, (c, n, f) in enumerate(
        [(1e10, 1e3, 1.02), (1e10, 2e3, 0.98), (3e10, 1e3, 1.0), (3e10, 4e3, 1.03)])]  # fmt: skip
    assert [len(g) for g in budget_groups(runs)] == [2, 2]


def test_parametric_fit_needs_more_runs_than_parameters() -> None:
    fit = approach3(_isoflop_runs(TRUTH, TRUTH.n_opt)[:5])
    assert fit.law is None and "six" in fit.reason


THROUGHPUT = Throughput((1e4, 1e5, 1e6), (3e5, 8e4, 1.8e4))


def test_time_optimal_size_minimises_the_loss_a_time_buys(fit3) -> None:
    best = time_optimal(fit3, THROUGHPUT, 600.0)
    ns = np.geomspace(1e4, 1e6, 5000)
    brute = ns[np.argmin(fit3.law.loss(ns, 600.0 * THROUGHPUT(ns)))]
    assert best.params.value == pytest.approx(brute, rel=0.02)
    assert best.tokens.value == pytest.approx(600.0 * THROUGHPUT(best.params.value))
    assert best.edge is None
    assert best.params.low <= best.params.value <= best.params.high


def test_time_optimal_at_the_edge_of_the_measured_sizes_says_so(fit3) -> None:
    best = time_optimal(fit3, Throughput((1e4, 2e4), (3e5, 2e5)), 3600.0)
    assert "largest measured size" in best.edge


def test_time_to_a_loss_below_a_sizes_floor_is_unreachable(fit3) -> None:
    law = fit3.law
    target = law.floor(1e5) - 0.01
    rows = {r["params"]: r for r in time_to_loss(fit3, THROUGHPUT, target)}
    assert rows[1e4]["seconds"] is None and rows[1e4]["tokens"] is None
    reachable = rows[1e6]
    assert reachable["seconds"] == pytest.approx(reachable["tokens"] / 1.8e4)
    assert float(law.loss(1e6, reachable["tokens"])) == pytest.approx(target)


def test_throughput_interpolates_on_log_log_axes() -> None:
    assert THROUGHPUT(1e4) == pytest.approx(3e5)
    assert THROUGHPUT(math.sqrt(1e4 * 1e5)) == pytest.approx(math.sqrt(3e5 * 8e4))


# The design ---------------------------------------------------------------------------------


def test_design_trains_each_size_on_whole_steps_of_its_budget() -> None:
    o = FrontierOptions(flops=1e14, seq_len=64)
    d = design(o, lambda n: 1e5)
    assert len(d.budgets) == 4 and len(d.runs) == 20
    assert d.budgets[1] == pytest.approx(3 * d.budgets[0])
    step = 16 * 64
    for r in d.runs:
        assert r.tokens == r.steps * step
        assert 6 * r.params * r.tokens == pytest.approx(r.budget, rel=0.5 * step / r.tokens + 1e-9)
    assert sum(6 * r.params * r.tokens for r in d.runs) == pytest.approx(1e14, rel=0.05)
    assert d.train_size == max(r.steps for r in d.runs) * 16
    assert len({(r.params, r.tokens) for r in d.runs}) == 20


def test_design_for_a_time_budget_fills_it_at_the_measured_throughput() -> None:
    o = FrontierOptions(seconds=900.0)
    d = design(o, THROUGHPUT, probe_s=30.0)
    assert d.predicted_s <= 900.0 - 30.0
    assert d.predicted_s > 0.9 * (900.0 - 30.0 - 20.0)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"family": "mlp", "flops": 1e14}, "--family mlp"),
        ({"flops": 1e14, "sizes_per_budget": 2}, "--sizes-per-budget 2"),
        ({"flops": 1e14, "budgets": 1}, "--budgets 1"),
        ({"flops": 1e14, "ratio": 1.2}, "--ratio"),
        ({"flops": 1e14, "dataset": "digits"}, "digits"),
        ({}, "--budget"),
    ],
)
def test_bad_options_are_refused_with_what_to_change(kwargs: dict, words: str) -> None:
    with pytest.raises(UserError, match=re.escape(words)):
        FrontierOptions(**kwargs)


def test_a_budget_too_small_for_one_step_is_refused_with_the_budget_it_needs() -> None:
    with pytest.raises(UserError, match=r"--budget 40s: too small.*give at least \d+s"):
        design(FrontierOptions(seconds=40.0), THROUGHPUT)
    with pytest.raises(UserError, match=r"--flops 1e\+06: too small.*give at least"):
        design(FrontierOptions(flops=1e6), THROUGHPUT)


@pytest.mark.parametrize("name", ["llama", "moe"])
def test_a_design_starts_at_the_familys_smallest_model(name: str) -> None:
    """llama's ladder starts at 1,082 parameters, moe's at 1,350: above the 10³ that was once
    every design's floor, where ``frontier --family llama`` failed to plan and exited 2."""
    fam = family(name)
    floor = smallest_params(name, (("seq_len", 64),))
    assert floor == fam.param_count(fam.config_for(floor, seq_len=64))
    with pytest.raises(UserError, match="below this family's smallest config"):
        fam.config_for(floor - 1, seq_len=64)
    d = design(FrontierOptions(family=name, seconds=900.0), THROUGHPUT, probe_s=30.0)
    assert len(d.runs) == 20 and min(r.params for r in d.runs) >= floor
    with pytest.raises(UserError, match=rf"below the {name} family's smallest model"):
        design(FrontierOptions(family=name, flops=1e6), THROUGHPUT)


def test_a_token_budget_sets_the_steps_and_the_case_id() -> None:
    settings = ConvergenceSettings(tokens=1000)
    assert steps_for(settings, 4, 16) == 16  # ceil(1000 / 64)
    assert steps_for(ConvergenceSettings(steps=7), 4, 16) == 7
    plain = Case("gpt", 1e4)
    assert "tokens" not in plain.case_id
    budgeted = Case("gpt", 1e4, convergence=(("tokens", 1000),))
    assert budgeted.case_id == f"{plain.case_id}-tokens1000"


# Records, report, CLI -------------------------------------------------------------------------


def _record(case: Case, params: int, metrics: dict, config: dict) -> dict:
    return make_record(
        case.case_id, case.to_dict(), "ok", env={}, duration_s=1.0,
        started_at=datetime.now(UTC), params=params, config=config, metrics=metrics,
    )  # fmt: skip


def _records(runs: list[Run]) -> list[dict]:
    """Convergence records of ``runs`` (batch 16, seq_len 64: D a multiple of 1,024) and train
    records of ``THROUGHPUT``."""
    out = []
    for r in runs:
        tokens = max(1, round(r.tokens / 1024)) * 1024
        case = Case("gpt", float(r.params), workloads=("convergence",),
                    overrides=(("seq_len", 64),), convergence=(("tokens", tokens),))  # fmt: skip
        cfg = gpt.config_for(r.params, seq_len=64)
        out.append(_record(case, r.params, {"heldout_loss": {"value": r.loss}}, cfg.__dict__))
    for n, rate in zip(THROUGHPUT.params, THROUGHPUT.tokens_per_s, strict=True):
        case = Case("gpt", n, workloads=("train",), overrides=(("seq_len", 64),))
        out.append(_record(case, int(n), {"train_tokens_per_s": {"value": rate}}, {}))
    return out


def test_records_give_the_runs_and_the_throughput_of_their_setting(centred_runs) -> None:
    records = _records(centred_runs)
    runs = frontier_runs(records)
    assert len(runs) == len(centred_runs)
    assert all(r.tokens % 1024 == 0 for r in runs)
    assert throughput_of(records).params == THROUGHPUT.params
    other = {("gpt", "cpu", "bf16", None, (("seq_len", 64),))}
    assert throughput_of(records, other).params == ()


def test_analysis_and_report_of_a_folder_with_frontier_runs(centred_runs, tmp_path) -> None:
    records = _records(centred_runs)
    analysis = analyse(records, seconds=600.0, bootstrap=20)
    data = analysis.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["time_optimal"]["seconds"] == 600.0
    assert len(data["runs"]) == 20 and data["excluded_runs"] == 0
    assert "embedding" in data["counting"]
    html = build_html(records, str(tmp_path))
    assert "Compute-optimal frontier" in html and 'id="frontier-isoflop"' in html
    assert frontier_section(records[-3:], tmp_path) is None  # train records only


def _below_the_optimum() -> list[Run]:
    """Three sizes of the largest budget, all below its optimum (and above gpt's smallest)."""
    ids = ("c6.4e+12-n-1", "c6.4e+12-n0", "c6.4e+12-n1")
    return [r for r in _isoflop_runs(TRUTH, lambda c: TRUTH.n_opt(c) / 16) if r.case_id in ids]


def test_markdown_summary_carries_the_frontier(centred_runs, tmp_path) -> None:
    """Budgets 1 and 3 fitted; budget 2: two sizes; budget 4: every size below the optimum."""
    below = _below_the_optimum()
    two = [r for r in centred_runs if r.case_id in ("c4e+11-n-1", "c4e+11-n0")]
    fitted = [r for r in centred_runs if r.case_id.startswith(("c1e+11", "c1.6e+12"))]
    text = build_markdown(_records(fitted + two + below), str(tmp_path))
    section = text[text.index("### Compute-optimal frontier") :]
    rows = [line for line in section.splitlines() if re.match(r"\| \d", line)]
    assert len(rows) == 4  # one per budget
    assert "not fitted: 2 distinct sizes: a parabola needs three" in rows[1]
    narrow = "not fitted: the minimum lies above the largest size: the sizes were too narrow"
    assert narrow in rows[3]
    for row in (rows[0], rows[2]):
        assert re.search(r"\| [\d,]+ \[[\d,]+, [\d,]+\] \|", row)
    assert re.search(r"approach 3: L = [\d.]+ \[.*\]/N\^[\d.]+ \[[\d.]+, [\d.]+\]", section)
    assert re.search(r"N_opt ∝ C\^[\d.]+ \[[\d.]+, [\d.]+\], D_opt ∝ C\^", section)
    # the runs' summed durations (1 s each) buy the time-optimal answer
    assert re.search(r"time-optimal for 15 s here: N = .* \(\S+ \[\S+, \S+\] tokens per", section)


def test_frontier_runs_are_not_a_series_against_n(centred_runs, tmp_path) -> None:
    """Each run trains its own D: neither one series (budgets zig-zag) nor one per run."""
    records = _records(centred_runs)
    ordinary = [
        _record(case, n, {"heldout_loss": {"value": 7.0 - i}}, gpt.config_for(n).__dict__)
        for i, n in enumerate((1e4, 1e5))
        if (case := Case("gpt", n, workloads=("convergence",)))
    ]
    findings = Findings(records + ordinary, str(tmp_path))
    assert len(findings.claimed["frontier"]) == 20
    assert {s: len(g) for s, g in findings.groups.items()} == {
        "gpt-fp32-cpu": 2,  # the ordinary convergence cases, whole
        "gpt-fp32-cpu-seq_len=64": 3,  # the train workload's throughput
    }
    assert {f.series for f in findings.fits} <= set(findings.groups)
    assert len(findings.case_rows) == 25  # every case is still listed
    html = build_html(records, str(tmp_path))
    assert "20 run(s) of an IsoFLOP design are left out of the plots against N" in html
    assert "Loss curves per size" in html and 'id="frontier-isoflop"' in html
    assert "left out" in build_markdown(records, str(tmp_path))


def test_figures_without_an_optimum_are_left_out_and_say_why(centred_runs, tmp_path) -> None:
    """One budget, none of its sizes at the minimum, too few runs for the law."""
    section = frontier_section(_records(_below_the_optimum()), tmp_path)
    # no N_opt to draw; the time figure keeps the measured throughput alone
    assert [p.anchor for p in section.plots] == [
        "frontier-isoflop",
        "frontier-loss",
        "frontier-time",
    ]
    assert section.optimal_rows == []
    assert (
        section.lines[-1]
        == "time-optimal: none, no fitted law (3 runs: five parameters need at least six)"
    )
    data = section.analysis.to_dict()
    assert data["time_optimal"] is None and data["time_optimal_reason"].startswith("no fitted")
    alone = frontier_section(_records(centred_runs)[:-3], tmp_path)  # no train records
    assert "the train workload measured tokens/s at 0 size(s)" in alone.lines[-1]


def test_the_report_repeats_the_saved_analysis(centred_runs, tmp_path) -> None:
    records = _records(centred_runs)
    analysis = analyse(records, seconds=600.0, target_loss=5.0, bootstrap=20)
    (tmp_path / FRONTIER_JSON).write_text(json.dumps(analysis.to_dict()))
    assert saved_choices(tmp_path) == {"seconds": 600.0, "target_loss": 5.0, "bootstrap": 20}
    section = frontier_section(records, tmp_path)
    assert section.analysis.to_dict() == analysis.to_dict()
    best = section.analysis.time_optimal
    assert best.tokens_per_param.value == pytest.approx(best.tokens.value / best.params.value)
    assert best.tokens_per_param.low <= best.tokens_per_param.value <= best.tokens_per_param.high
    assert dict(section.optimal_rows)["training time"] == "10 min"


@pytest.mark.parametrize(
    ("args", "what", "change"),
    [
        (["--flops", "1e6"], "--flops 1e+06: too small", "give at least 4.7e+10"),
        (
            ["--flops", "1e6", "--family", "llama"],
            "llama family's smallest model (1,082)",
            "give at least 4.5e+11",
        ),
        (
            ["--flops", "1e12", "--batch-size", "512", "--seq-len", "256"],
            "for less than one step of 131,072 tokens",
            "give at least",
        ),
        (["--budget", "1s"], "--budget 1s: too small", "give at least"),
        (["--flops", "1e14", "--family", "mlp"], "--family mlp", "use gpt"),
        (["--flops", "1e14", "--sizes-per-budget", "2"], "--sizes-per-budget 2", "at least 3"),
    ],
)
def test_bad_frontier_input_exits_2_with_one_line(
    args: list[str], what: str, change: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["frontier", *args, "--out", str(tmp_path / "f"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert what in err and change in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f").exists()  # refused before anything ran


def test_parse_duration() -> None:
    assert parse_duration("15m", "--budget") == 900.0
    assert parse_duration("90s", "--budget") == parse_duration("90", "--budget") == 90.0
    with pytest.raises(UserError, match="--budget 'soon'"):
        parse_duration("soon", "--budget")


TINY = ["frontier", "--flops", "1.2e8", "--budgets", "2", "--ratio", "2",
        "--sizes-per-budget", "3", "--tokens-per-param", "0.5", "--seq-len", "16",
        "--batch-size", "4", "--heldout-size", "16", "--probe-budget", "0.05",
        "--bootstrap", "20", "--no-progress"]  # fmt: skip


def test_tiny_frontier_records_every_run_resumes_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "f"
    assert main([*TINY, "--out", str(out)]) == 0
    records = load_records(out / RESULTS_FILE)
    runs = [r for r in records if r["case"]["convergence"].get("tokens")]
    assert len(runs) == 6 and all(r["status"] == "ok" for r in runs)
    assert len({r["case_id"] for r in runs}) == 6
    design_data = json.loads((out / DESIGN_FILE).read_text())
    assert len(design_data["runs"]) == 6
    for r in runs:
        assert r["metrics"]["heldout_loss"]["value"] > 0
    data = json.loads((out / FRONTIER_JSON).read_text())
    assert len(data["runs"]) == 6 and len(data["approach2"]["budgets"]) == 2
    assert "Compute-optimal frontier" in (out / "report.html").read_text()
    assert "time-optimal" in capsys.readouterr().out
    assert main([*TINY, "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*TINY, "--out", str(out), "--resume"]) == 0
    assert len(load_records(out / RESULTS_FILE)) == len(records)
    assert main([*TINY, "--out", str(out), "--resume", "--budgets", "3"]) == 2
    assert "budgets=2" in capsys.readouterr().err


def test_a_tiny_llama_frontier_plans_and_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "f"
    args = [*TINY, "--family", "llama", "--flops", "3e8", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    runs = json.loads((out / DESIGN_FILE).read_text())["runs"]
    assert len(runs) == 6
    assert min(r["params"] for r in runs) >= smallest_params("llama", (("seq_len", 16),))
    records = [r for r in load_records(out / RESULTS_FILE) if r["case"]["family"] == "llama"]
    assert sum(1 for r in records if r["case"]["convergence"].get("tokens")) == 6
