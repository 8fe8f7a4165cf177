"""Every front-end's output in one shape, so ``compare`` can set any two runs side by side.

A run is read from a scaling-bench results folder (or its ``results.jsonl``), a pytest-benchmark
JSON file (``--benchmark-json`` or ``--benchmark-autosave``) or an asv result file
(``.asv/results/MACHINE/COMMIT-ENV.json``, format version 2). Each becomes cases keyed by case id,
each holding metrics in the record's shape (``{value, unit, n, median?, iqr?, samples?}``).

Foreign results are matched to our cases and metric names where they say enough:

- case id: pytest-benchmark's ``extra_info["case_id"]``; for asv, the case that a combination of
  our suites' parameters names (one per axis: ``family``, ``target_params``, ``dtype``,
  ``device``, …, their names in ``benchmarks.json`` beside the machine folders; see
  ``asv_case_id``); else a test parameter or asv parameter that is one of our case ids
  (``gpt-1e6-fp32-cpu``, as older suites wrote them), else the test's full name or the asv
  benchmark's class with its parameters;
- metric: pytest-benchmark's ``extra_info["metric"]`` (``train_step_s``, ``checkpoint_s``: our
  suites name the metric their time is); else the timed function's name without its front-end
  prefix, with the unit appended, as our names carry it (``test_train_step`` and asv's
  ``time_train_step`` both give ``train_step_s``; asv ``peakmem_train`` gives ``train_bytes``,
  ``track_checkpoint_bytes`` gives ``checkpoint_bytes``); pytest-benchmark's ``extra_info``
  entries that are numbers or metrics are metrics under their own names.

asv counts seconds per sample (``time_train_sample`` gives ``train_sample_s``) where our records
carry samples per second, so a results file's ``*_samples_per_s`` also appear inverted as
``*_sample_s``: a run of either front-end then compares with the other.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Annotated, Any, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from scaling_bench.config.axes import BY_NAME
from scaling_bench.config.case import Case
from scaling_bench.config.sizes import parse_size
from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import summarize
from scaling_bench.models import FAMILY_NAMES
from scaling_bench.store.compact import held_metrics
from scaling_bench.store.records import RESULTS_FILE, iter_records
from scaling_bench.store.schema import METRIC, Count, Finite, validated

ASV_API_VERSION = 2
_CASE_ID = re.compile(rf"^({'|'.join(FAMILY_NAMES)})-\d+(\.\d+)?e\d+-")
_PREFIX_UNITS = {
    "test_": "s",
    "time_": "s",
    "timeraw_": "s",
    "peakmem_": "bytes",
    "mem_": "bytes",
    "track_": "",
}
_ASV_UNITS = {"seconds": "s", "bytes": "bytes", "unit": ""}
#: What the pytest suites put in ``extra_info`` besides metrics.
_EXTRA_INFO_KEYS = ("case_id", "family", "params", "workload", "metric")
#: The config fields a family's asv parameter value carries: ``gpt(seq_len=128-n_layer=2)``.
_FAMILY_OVERRIDES = re.compile(r"^(?P<family>[^()]+)(?:\((?P<overrides>.*)\))?$")
_OVERRIDE_SPLIT = re.compile(r"-(?=[A-Za-z_]\w*=)")


# The shapes of the fields read below, and only those: a file of another shape is the user's to
# fix, named by its field, rather than a TypeError deep in the reader. Other fields pass unread.
_STRICT = ConfigDict(strict=True)
_Seconds = Annotated[Finite, Field(ge=0)]


@with_config(_STRICT)
class _PytestStats(TypedDict):
    median: _Seconds
    iqr: NotRequired[_Seconds]
    rounds: NotRequired[Count]
    data: NotRequired[list[_Seconds] | None]


@with_config(ConfigDict(strict=True, extra="allow"))
class _ExtraInfo(TypedDict, total=False):
    case_id: str
    family: str
    workload: str
    metric: str


@with_config(_STRICT)
class _PytestBenchmark(TypedDict):
    name: str
    fullname: str
    param: NotRequired[str | None]
    extra_info: NotRequired[_ExtraInfo | None]
    stats: NotRequired[_PytestStats | None]


@with_config(_STRICT)
class _Cpu(TypedDict, total=False):
    brand_raw: str | None


@with_config(_STRICT)
class _MachineInfo(TypedDict, total=False):
    node: str | None
    cpu: _Cpu | None
    processor: str | None
    gpu_name: str | None
    python_version: str | None


@with_config(_STRICT)
class _CommitInfo(TypedDict, total=False):
    id: str | None
    dirty: bool | None


@with_config(_STRICT)
class _PytestBenchmarkFile(TypedDict):
    benchmarks: list[_PytestBenchmark] | None
    machine_info: NotRequired[_MachineInfo | None]
    commit_info: NotRequired[_CommitInfo | None]
    datetime: NotRequired[str | None]


@with_config(_STRICT)
class _AsvMachine(TypedDict, total=False):
    machine: str | None
    cpu: str | None


@with_config(_STRICT)
class _AsvFile(TypedDict):
    result_columns: list[str]
    results: NotRequired[dict[str, list[Any]] | None]
    params: NotRequired[_AsvMachine | None]
    python: NotRequired[str | None]
    commit_hash: NotRequired[str | None]
    env_name: NotRequired[str | None]


@with_config(_STRICT)
class _AsvRow(TypedDict, total=False):
    """One benchmark's columns; each holds a value per parameter combination (NaN: failed)."""

    result: list[float | None] | None
    params: list[list[str]]
    samples: list[list[float] | None] | None
    stats_q_25: list[float | None] | None
    stats_q_75: list[float | None] | None
    stats_repeat: list[Count | None] | None


_PYTEST_BENCHMARK_FILE = TypeAdapter(_PytestBenchmarkFile)
_ASV_FILE = TypeAdapter(_AsvFile)
_ASV_ROWS = TypeAdapter(dict[str, _AsvRow])


@dataclass(frozen=True)
class CaseResult:
    """One case of a run: its status and its metrics, whichever front-end measured it."""

    case_id: str
    family: str
    status: str
    metrics: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Run:
    """A set of measurements from one front-end, on one machine, at one commit."""

    source: str
    kind: str
    env: dict[str, Any]
    cases: dict[str, CaseResult]


def stream_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a results folder (or its ``results.jsonl``), streamed (a reader holds only
    what it keeps of each); at least one, or a UserError."""
    path = Path(path)
    results = path / RESULTS_FILE if path.is_dir() else path
    if not results.exists():
        where = f"no {RESULTS_FILE} in {path}" if path.is_dir() else "no such file or folder"
        raise UserError(f"{path}: {where}")
    empty = True
    for record in iter_records(results):
        empty = False
        yield record
    if empty:
        raise UserError(f"{results}: holds no records")


def load_run(path: Path, keep: Callable[[str], bool] | None = None) -> Run:
    """The run at ``path``: a results folder or file, a pytest-benchmark JSON or an asv result.

    A case recorded twice in one results file (runs appended to it) keeps its latest record.
    ``keep``: the metrics a comparison can select, by name; a results file's cases then hold
    only those, compactly (``store.compact``), so two runs of 100k cases fit beside each other.
    """
    path = Path(path)
    if path.is_dir() or path.suffix == ".jsonl" or not path.exists():
        cases: dict[str, CaseResult] = {}
        strings: dict[str, str] = {}
        env: dict[str, Any] = {}
        for r in stream_records(path):  # one at a time: only what the comparison reads is kept
            family, status = (
                strings.setdefault(x, x) for x in (r["case"].get("family", ""), r["status"])
            )
            metrics = held_metrics(r["metrics"], keep, strings)
            cases[r["case_id"]] = CaseResult(r["case_id"], family, status, metrics)
            env = r["env"]
        return Run(str(path), "scaling-bench", env, cases)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (corrupt)") from None
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}; cut off or corrupt)") from None
    if isinstance(data, dict) and "benchmarks" in data:
        return _from_pytest_benchmark(data, path)
    if isinstance(data, dict) and "result_columns" in data:
        return _from_asv(data, path)
    raise UserError(
        f"{path}: not a scaling-bench results file, a pytest-benchmark JSON (no 'benchmarks') "
        "or an asv result file (no 'result_columns')"
    )


def _metric_name(function: str, unit: str | None = None) -> tuple[str, str]:
    """``time_train_step`` -> (``train_step_s``, ``s``): our spelling, with the unit last.

    ``unit`` is what the front-end declared (asv's ``benchmarks.json``); without it the prefix
    says (``time_`` is seconds, ``peakmem_`` bytes, ``track_`` unknown).
    """
    prefix = next((p for p in _PREFIX_UNITS if function.startswith(p)), "")
    stem = function.removeprefix(prefix)
    unit = _ASV_UNITS.get(unit, unit) if unit else _PREFIX_UNITS.get(prefix, "")
    if unit in ("s", "bytes") and not stem.endswith(f"_{unit}"):
        return f"{stem}_{unit}", unit
    return stem, unit


def _family_of(case_id: str, candidates: list[str], fallback: str) -> str:
    match = _CASE_ID.match(case_id)
    if match:
        return match.group(1)
    return next((c for c in candidates if c in FAMILY_NAMES), fallback)


def _add(
    cases: dict[str, CaseResult], case_id: str, family: str, metrics: dict[str, dict[str, Any]]
) -> None:
    """Merge metrics into a case: several benchmarks of one case (forward, train) share it."""
    if case_id in cases:
        metrics = cases[case_id].metrics | metrics
    cases[case_id] = CaseResult(case_id, family, "ok", metrics)


def _from_pytest_benchmark(data: dict[str, Any], path: Path) -> Run:
    data = validated(_PYTEST_BENCHMARK_FILE, data, str(path))
    cases: dict[str, CaseResult] = {}
    for i, bench in enumerate(data["benchmarks"] or []):
        fullname, name = bench["fullname"], bench["name"]
        extra = bench.get("extra_info") or {}
        param = bench.get("param") or ""
        case_id = extra.get("case_id") or (param if _CASE_ID.match(param) else fullname)
        metrics = {
            key: {"value": value, "unit": _unit_of(key), "n": 1}
            for key, value in extra.items()
            if key not in _EXTRA_INFO_KEYS and _is_number(value)
        }
        metrics |= {
            key: validated(METRIC, value, str(path), f"benchmarks[{i}].extra_info.{key}")
            for key, value in extra.items()
            if key not in _EXTRA_INFO_KEYS
            and isinstance(value, dict)
            and _is_number(value.get("value"))
            and math.isfinite(value["value"])
        }
        stats = bench.get("stats")
        if stats:
            if extra.get("metric"):  # pytest-benchmark times seconds
                metric, unit = extra["metric"], "s"
            else:
                metric, unit = _metric_name(name.split("[")[0])
            metrics[metric] = _pytest_benchmark_metric(stats, unit)
        family = extra.get("family") or _family_of(case_id, [], fullname.split("::")[0])
        _add(cases, case_id, family, metrics)
    if not cases:
        raise UserError(f"{path}: holds no benchmarks")
    machine = data.get("machine_info") or {}
    commit = data.get("commit_info") or {}
    env = {
        "hostname": machine.get("node"),
        "cpu_model": (machine.get("cpu") or {}).get("brand_raw") or machine.get("processor"),
        "gpu_name": machine.get("gpu_name"),
        "python_version": machine.get("python_version"),
        "git_commit": commit.get("id"),
        "git_dirty": commit.get("dirty"),
        "datetime": data.get("datetime"),
    }
    return Run(str(path), "pytest-benchmark", {k: v for k, v in env.items() if v}, cases)


def _pytest_benchmark_metric(stats: dict[str, Any], unit: str) -> dict[str, Any]:
    """pytest-benchmark's seconds per call; the raw rounds when saved with --benchmark-save-data."""
    if stats.get("data"):
        return summarize(stats["data"], unit)
    return {
        "value": stats["median"],
        "unit": unit,
        "n": stats.get("rounds", 1),
        "median": stats["median"],
        "iqr": stats.get("iqr", 0.0),
    }


def _from_asv(data: dict[str, Any], path: Path) -> Run:
    version = data.get("version")
    if version != ASV_API_VERSION:
        raise UserError(
            f"{path}: asv result format version {version}; this reads version {ASV_API_VERSION}"
        )
    data = validated(_ASV_FILE, data, str(path))
    columns = data["result_columns"]
    rows = {
        name: dict(zip(columns, row, strict=False))
        for name, row in (data.get("results") or {}).items()
    }
    described = _asv_benchmarks(path)
    cases: dict[str, CaseResult] = {}
    for benchmark, fields in validated(_ASV_ROWS, rows, str(path), "results").items():
        owner, _, function = benchmark.rpartition(".")
        about = described.get(benchmark, {})
        metric, unit = _metric_name(function, about.get("unit"))
        names = about.get("param_names") or []
        params = fields.get("params") or []
        for i, combo in enumerate(product(*params) if params else [()]):
            at = {
                k: v[i] if isinstance(v, list) and i < len(v) else None for k, v in fields.items()
            }
            value = at.get("result")
            if value is None or math.isnan(value):
                continue  # asv stores a failed or skipped benchmark as null or NaN
            plain = [_unquote(p) for p in combo]
            case_id = asv_case_id(names, combo) or next(
                (p for p in plain if _CASE_ID.match(p)), None
            )
            case_id = case_id or (f"{owner}({', '.join(plain)})" if plain else benchmark)
            _add(cases, case_id, _family_of(case_id, plain, owner), {metric: _asv_metric(at, unit)})
    if not cases:
        raise UserError(f"{path}: holds no benchmark results")
    machine = data.get("params") or {}
    env = {
        "hostname": machine.get("machine"),
        "cpu_model": machine.get("cpu"),
        "python_version": data.get("python"),
        "git_commit": data.get("commit_hash"),
        "asv_env": data.get("env_name"),
    }
    return Run(str(path), "asv", {k: v for k, v in env.items() if v}, cases)


def _asv_metric(at: dict[str, Any], unit: str) -> dict[str, Any]:
    """One parameter combination's figure: asv's median, its raw samples where recorded
    (``--record-samples``), else its quartiles."""
    value = at["result"]
    if at.get("samples"):
        return summarize(at["samples"], unit) | {"value": value, "median": value}
    metric = {"value": value, "unit": unit, "n": at.get("stats_repeat") or 1}
    if at.get("stats_q_25") is not None and at.get("stats_q_75") is not None:
        metric |= {"median": value, "iqr": at["stats_q_75"] - at["stats_q_25"]}
    return metric


def _asv_benchmarks(path: Path) -> dict[str, dict[str, Any]]:
    """Each benchmark's ``unit`` and ``param_names`` from ``results/benchmarks.json`` beside the
    machine folder, where asv keeps them; those of other shapes left out."""
    try:
        described = json.loads((path.parent.parent / "benchmarks.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(described, dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, b in described.items():
        if not isinstance(b, dict):
            continue
        about: dict[str, Any] = {}
        if isinstance(b.get("unit"), str):
            about["unit"] = b["unit"]
        names = b.get("param_names")
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            about["param_names"] = names
        out[name] = about
    return out


def asv_case_id(param_names: list[str], values: tuple[str, ...] | list[str]) -> str | None:
    """The case id that a combination of our asv suites' parameters names, or None.

    Our suites take one parameter per axis (``family``, ``target_params``, ``dtype``, ``device``,
    ``batch_size``, ``optimizer``, … as ``suites.ASV_AXES``), written as asv writes values, their
    ``repr`` (``"'1e5'"``, ``"None"``, ``"512"``); the family carries the config fields the grid
    sets for it (``'gpt(seq_len=128)'``), as the case id does. Parameters that are not all axes,
    or that lack the family, the size or the device, name no case of ours."""
    if len(param_names) != len(values) or not {"family", "target_params", "device"} <= set(
        param_names
    ):
        return None
    if not set(param_names) <= set(BY_NAME) or "overrides" in param_names:
        return None
    try:
        fields = {
            name: ast.literal_eval(text) for name, text in zip(param_names, values, strict=True)
        }
        match = _FAMILY_OVERRIDES.match(str(fields["family"]))
        if match is None:
            return None
        fields["family"] = match["family"]
        pairs = _OVERRIDE_SPLIT.split(match["overrides"]) if match["overrides"] else []
        fields["overrides"] = tuple(tuple(pair.split("=", 1)) for pair in pairs)
        fields["target_params"] = parse_size(str(fields["target_params"]))
        case_id = Case(**fields).case_id
    except (ValueError, SyntaxError, TypeError, UserError):
        return None
    return case_id if _CASE_ID.match(case_id) else None


def _unit_of(name: str) -> str:
    """The unit our metric names end with, for figures that arrive without one."""
    return next((u for u in ("bytes", "s") if name.endswith(f"_{u}")), "")


def _unquote(text: str) -> str:
    """asv stores parameter values as their repr: ``'mlp-1e5-fp32-cpu'`` with the quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
