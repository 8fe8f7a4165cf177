"""Power-law fits, theory checks and the statistics under the regression gate."""

from __future__ import annotations

import math
import random

import pytest
import synthetic

from scaling_bench.analysis.compare import compare_runs, parse_threshold
from scaling_bench.analysis.fits import by_series, fit_power_law, scaling_fits, series_of
from scaling_bench.analysis.significance import mann_whitney_p
from scaling_bench.analysis.theory import theory_checks
from scaling_bench.config.case import Case
from scaling_bench.core.errors import UserError
from scaling_bench.core.metrics import spec
from scaling_bench.core.stats import median_ci_halfwidth, quantile, single, summarize
from scaling_bench.store.foreign import CaseResult, Run


def test_fit_recovers_a_known_exponent_within_its_confidence_interval() -> None:
    rng = random.Random(1)
    n = [10 ** (4 + i / 2) for i in range(9)]
    y = [3.0 * x**0.75 * math.exp(rng.gauss(0, 0.05)) for x in n]
    fit = fit_power_law(n, y)
    assert fit is not None
    assert fit.exponent == pytest.approx(0.75, abs=0.03)
    assert fit.contains(0.75)
    assert fit.ci[1] - fit.ci[0] < 0.1
    assert fit.r2 > 0.99


def test_an_exact_power_law_is_recovered_exactly() -> None:
    fit = fit_power_law([1e4, 1e5, 1e6], [2e4**1.5, 2e5**1.5, 2e6**1.5])
    assert fit.exponent == pytest.approx(1.5)
    assert fit(1e7) == pytest.approx(2e7**1.5)
    assert fit.ci == pytest.approx((1.5, 1.5))


def test_two_sizes_give_an_exponent_without_an_interval_and_one_size_no_fit() -> None:
    assert fit_power_law([1e4, 1e5], [1.0, 10.0]).ci is None
    assert fit_power_law([1e4, 1e4], [1.0, 2.0]) is None


def test_three_sizes_leave_one_degree_of_freedom_so_the_interval_uses_t_of_12_71() -> None:
    # Residuals (+a, -2a, +a) on evenly spaced log N leave the slope at 1: SSE = 6a², Sxx = 2d².
    a, d = 0.01, math.log(10)
    n = [1e4, 1e5, 1e6]
    fit = fit_power_law(n, [x * math.exp(e) for x, e in zip(n, (a, -2 * a, a), strict=True)])
    half = 12.7062 * math.sqrt(6 * a**2 / (2 * d**2))
    assert fit.exponent == pytest.approx(1.0)
    assert fit.ci == pytest.approx((1 - half, 1 + half), abs=1e-5)


def test_a_constant_is_an_exact_fit_with_exponent_zero() -> None:
    fit = fit_power_law([1e4, 1e5, 1e6], [3.0, 3.0, 3.0])
    assert (fit.exponent, fit.ci, fit.r2) == (pytest.approx(0.0), (0.0, 0.0), 1.0)
    assert fit.prefactor == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("n", "halfwidth"),
    [(5, math.inf), (6, 2.5), (10, 3.5), (20, 4.5), (100, 10.5)],
)
def test_median_interval_takes_the_order_statistics_of_the_binomial_table(
    n: int, halfwidth: float
) -> None:
    # 95% ranks (1-based): n=6 -> 1 and 6, n=10 -> 2 and 9, n=20 -> 6 and 15, n=100 -> 40 and 61.
    samples = list(range(1, n + 1))
    random.Random(n).shuffle(samples)
    assert median_ci_halfwidth(samples) == halfwidth


def test_quantiles_interpolate_linearly_between_order_statistics() -> None:
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.1) == pytest.approx(1.4)
    metric = summarize([float(x) for x in range(11)], "s")
    assert (metric["median"], metric["p10"], metric["p90"], metric["iqr"]) == (5, 1, 9, 5)


@pytest.mark.parametrize(
    ("a", "b", "p"),
    [
        ([1, 2, 3], [4, 5, 6], 0.1),  # exact: 2 of the 20 orderings are this extreme
        ([1, 5, 3, 8], [4, 2, 6, 7, 9], 0.5556),
        ([1, 2, 2, 3, 4, 5, 6, 7, 8, 9], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 0.0580),  # ties
        (list(range(20)), [x + 5.5 for x in range(20)], 0.01058),
    ],
)
def test_mann_whitney_p_matches_reference_values(a: list, b: list, p: float) -> None:
    assert mann_whitney_p(a, b) == pytest.approx(p, abs=1e-4)


def test_identical_samples_are_not_significant() -> None:
    assert mann_whitney_p([1.0] * 10, [1.0] * 10) == 1.0


@pytest.mark.parametrize(("text", "value"), [("5%", 0.05), ("0.1", 0.1), ("12.5%", 0.125)])
def test_threshold_takes_percent_or_fraction(text: str, value: float) -> None:
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "150%", "-5%", "2"])
def test_bad_threshold_is_a_user_error(text: str) -> None:
    with pytest.raises(UserError, match="--threshold"):
        parse_threshold(text)


def test_scaling_fits_hold_time_and_bytes_to_their_theory() -> None:
    fits = {
        (f.series, f.quantity.name): f
        for f in scaling_fits(synthetic.run(sizes=(1e4, 1e5, 1e6, 1e7)))
    }
    time = fits["mlp-fp32-cpu", "train_sample_s"]
    assert time.fit.exponent == pytest.approx(1.0, abs=0.02)
    assert time.theory_exponent == pytest.approx(1.0)
    assert time.agrees_with_theory
    throughput = fits["gpt-fp32-cpu", "train_samples_per_s"]
    assert throughput.theory_exponent == pytest.approx(-1.0)
    assert fits["gpt-fp32-cpu", "checkpoint_bytes"].fit.exponent == pytest.approx(1.0, abs=0.01)


def test_a_case_more_than_25_percent_from_its_prediction_is_flagged() -> None:
    rng = random.Random(0)
    records = [
        synthetic.record("mlp", 1e4, rng=rng, checkpoint_factor=1.1),
        synthetic.record("mlp", 1e5, rng=rng, checkpoint_factor=1.3),
    ]
    flagged = {(c.case_id, c.quantity) for c in theory_checks(records) if c.flagged}
    assert flagged == {("mlp-1e5-fp32-cpu", "checkpoint_bytes")}


def test_time_is_held_to_flops_at_the_rate_of_the_largest_case() -> None:
    rng = random.Random(0)
    records = [synthetic.record("mlp", 1e4, rng=rng, slowdown=3.0)]
    records += [synthetic.record("mlp", n, rng=rng) for n in (1e5, 1e6, 1e7)]
    checks = {(c.case_id, c.quantity): c for c in theory_checks(records)}
    overhead_bound = checks["mlp-1e4-fp32-cpu", "train_sample_s"]
    assert overhead_bound.flagged
    assert overhead_bound.ratio == pytest.approx(3.0, rel=0.05)
    assert not checks["mlp-1e5-fp32-cpu", "train_sample_s"].flagged


def _run(metrics: dict[str, dict], status: str = "ok") -> Run:
    return Run("x", "scaling-bench", {}, {"c": CaseResult("c", "mlp", status, metrics)})


def test_bytes_on_disk_are_counted_so_growth_regresses_without_samples() -> None:
    base = _run({"checkpoint_bytes": single(1000, "bytes")})
    current = _run({"checkpoint_bytes": single(1200, "bytes")})
    (row,) = compare_runs(base, current).rows
    assert (row.verdict, row.note) == ("regressed", "exact count")


def test_a_memory_peak_measured_once_is_inconclusive() -> None:
    name = "train_peak_cpu_rss_bytes"
    base, current = _run({name: single(1000, "bytes")}), _run({name: single(1200, "bytes")})
    (row,) = compare_runs(base, current).rows
    assert row.verdict == "inconclusive"


def test_derived_figures_follow_their_step_time_unless_named() -> None:
    rng = random.Random(0)
    step = summarize(synthetic.timing(0.01, 0.01, rng), "s")
    metrics = {"train_step_s": step, "train_samples_per_s": step | {"unit": "samples/s"}}
    assert [r.metric for r in compare_runs(_run(metrics), _run(metrics)).rows] == ["train_step_s"]
    named = compare_runs(_run(metrics), _run(metrics), metrics=["train_*"])
    assert [r.metric for r in named.rows] == ["train_samples_per_s", "train_step_s"]


def test_a_non_finite_loss_is_inconclusive_not_a_crash() -> None:
    base = _run({"final_loss_mean": {"value": 2.0, "unit": "nats", "n": 2}})
    current = _run({"final_loss_mean": {"value": None, "unit": "nats", "n": 2}})
    (row,) = compare_runs(base, current).rows
    assert row.verdict == "inconclusive"


def test_a_count_with_samples_is_still_taken_at_face_value() -> None:
    # The spec says counted: no significance test, however many samples the figure carries.
    base = _run({"checkpoint_bytes": summarize([1000.0] * 5, "bytes")})
    current = _run({"checkpoint_bytes": summarize([1200.0] * 5, "bytes")})
    (row,) = compare_runs(base, current).rows
    assert (row.verdict, row.note, row.p_value) == ("regressed", "exact count", None)


@pytest.mark.parametrize(
    ("name", "sign"),
    [
        ("train_step_s", -1),
        ("train_samples_per_s", 1),
        ("forward_mfu", 1),
        ("checkpoint_save_bytes_per_s", 1),
        ("checkpoint_bytes", -1),
        ("final_loss_mean", -1),
        ("diverged_fraction", -1),
        ("heldout_error", -1),
        ("best_lr", 0),
    ],
)
def test_direction_is_the_specs(name: str, sign: int) -> None:
    metrics = {name: single(2.0, "")}
    (row,) = compare_runs(_run(metrics), _run(metrics), metrics=[name]).rows
    assert row.direction == sign == spec(name).better


def test_by_default_bookkeeping_and_settings_are_not_compared() -> None:
    metrics = {
        "train_timed_s": single(3.0, "s"),
        "peak_flops_per_s": single(2e11, "FLOP/s"),
        "best_lr": single(1e-3, "lr"),
        "train_flops_per_sample": single(1e6, "FLOP"),
        "checkpoint_bytes": single(1000, "bytes"),
    }
    compared = compare_runs(_run(metrics), _run(metrics))
    assert [r.metric for r in compared.rows] == ["checkpoint_bytes"]
    assert compared.unknown_metrics == []


def test_a_setting_that_moved_is_shown_but_never_judged() -> None:
    base, current = _run({"best_lr": single(1e-3, "lr")}), _run({"best_lr": single(1e-2, "lr")})
    (row,) = compare_runs(base, current, metrics=["best_lr"]).rows
    assert (row.verdict, row.note) == ("inconclusive", "no better direction")


def test_a_derived_figure_without_its_source_is_compared_with_its_own_direction() -> None:
    rng = random.Random(0)
    fast = summarize(synthetic.timing(100.0, 0.01, rng), "samples/s")
    slow = summarize(synthetic.timing(50.0, 0.01, rng), "samples/s")  # beyond any drift
    (row,) = compare_runs(
        _run({"train_samples_per_s": fast}), _run({"train_samples_per_s": slow})
    ).rows
    assert (row.metric, row.verdict) == ("train_samples_per_s", "regressed")


def test_series_come_from_the_case_not_from_cutting_the_id() -> None:
    rng = random.Random(0)
    records = [synthetic.record("mlp", n, rng=rng) for n in (1e4, 1e5)]
    for r in records:  # an axis with a token: its series keeps it, whatever the id looks like
        r["case"]["batch_size"] = 64
    assert set(by_series(records)) == {Case.from_dict(records[0]["case"]).series_id}
    assert series_of(records[0]) != series_of(synthetic.record("mlp", 1e4, rng=rng))
    lost = synthetic.record("mlp", 1e4, rng=rng) | {"case": {}, "case_id": "mlp-1e4-odd"}
    assert series_of(lost) == "mlp-1e4-odd"  # a case without its axes: the whole id, uncut


def test_every_bytes_metric_measured_and_predicted_is_fitted_against_its_prediction() -> None:
    rng = random.Random(0)
    records = [synthetic.record("mlp", n, rng=rng) for n in (1e4, 1e5, 1e6)]
    for r in records:
        bytes_ = 8 * r["params"]
        r["metrics"]["safetensors_bytes"] = single(bytes_, "bytes")
        r["predicted"]["safetensors_bytes"] = single(bytes_, "bytes")
    fits = {f.quantity.name: f for f in scaling_fits(records)}
    assert fits["safetensors_bytes"].quantity.label == spec("safetensors_bytes").label
    assert fits["safetensors_bytes"].theory_exponent == pytest.approx(1.0)
    assert "train_flops_per_sample" not in fits  # predicted only: nothing measured to fit
    checks = {c.quantity for c in theory_checks(records)}
    assert {"safetensors_bytes", "checkpoint_bytes", "train_sample_s"} <= checks


def test_the_largest_case_is_held_to_a_rate_not_derived_from_itself() -> None:
    """Each series was held to its largest case's FLOP rate, so that case could never flag: a
    largest case three times slower than its series is flagged against the next largest."""
    rng = random.Random(0)
    records = [synthetic.record("mlp", n, rng=rng) for n in (1e4, 1e5, 1e6)]
    records.append(synthetic.record("mlp", 1e7, rng=rng, slowdown=3.0))
    checks = {(c.case_id, c.quantity): c for c in theory_checks(records)}
    largest = checks["mlp-1e7-fp32-cpu", "train_sample_s"]
    assert largest.flagged and largest.ratio == pytest.approx(3.0, rel=0.1)
