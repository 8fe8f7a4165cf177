"""Grid specs: sizes, presets, files and cases, with one-line errors for bad specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling_bench.config import grid, sizes
from scaling_bench.config.case import Case
from scaling_bench.core.errors import UserError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e5,1e6", [1e5, 1e6]),
        ("1e6,1e5,1e6", [1e5, 1e6]),
        ("1e5:1e8:x10", [1e5, 1e6, 1e7, 1e8]),
        ("1e4:1e6:3", [1e4, 1e5, 1e6]),
        ("125M,1.3B", [1.25e8, 1.3e9]),
        ("1e5:3e5:x2", [1e5, 2e5]),
    ],
)
def test_sizes_parse_lists_and_geometric_ranges(text: str, expected: list[float]) -> None:
    assert sizes.parse_sizes(text) == tuple(expected)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("abc", "'abc' is not a number"),
        ("1e5,,1e6", "empty item"),
        ("-1e5", "not a positive"),
        ("1e8:1e5:x10", "STOP is below START"),
        ("1e5:1e8:x1", "factor must be above 1"),
        ("1e5:1e8", "START:STOP"),
        ("1e5:1e8:many", "POINTS"),
        ("nan", "not a positive"),
    ],
)
def test_malformed_sizes_are_user_errors(text: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        sizes.parse_sizes(text)


@pytest.mark.parametrize(
    ("size", "text"), [(1e5, "1e5"), (3e7, "3e7"), (1.5e6, "1.5e6"), (1.25e8, "1.25e8")]
)
def test_size_names_are_short_and_stable(size: float, text: str) -> None:
    assert sizes.format_size(size) == text


def test_case_ids_are_readable_and_leave_out_the_device_index() -> None:
    case = Case("gpt", 1e8, precision="bf16", device="cuda:3")
    assert case.case_id == "gpt-1e8-bf16-cuda"
    assert Case("mlp", 1e5, batch_size=64, optimizer="sgd").case_id == "mlp-1e5-fp32-cpu-bs64-sgd"


def test_case_round_trips_through_its_dict() -> None:
    case = Case("gpt", 1e6, overrides=(("n_layer", 2), ("seq_len", 64)), workloads=("train",))
    assert Case.from_dict(case.to_dict()) == case
    assert case.to_dict()["case_id"] == case.case_id


def test_quick_grid_on_a_cpu_covers_every_family_over_two_decades_in_fp32() -> None:
    spec = grid.preset("quick", "cpu")
    assert set(spec.sizes) == set(grid.FAMILY_NAMES)
    for family_sizes in spec.sizes.values():
        assert len(family_sizes) >= 3
        assert max(family_sizes) / min(family_sizes) >= 100
    assert spec.values["precision"] == ("fp32",)


def test_the_cpu_quick_grid_states_its_confidence_target_and_others_keep_two_percent() -> None:
    assert grid.preset("quick", "cpu").value("ci_target") == grid.QUICK_CPU_CI_TARGET == 0.05
    assert grid.preset("quick", "cuda:0").value("ci_target") == 0.02
    assert grid.preset("full", "cpu").value("ci_target") == 0.02
    (case, *_) = grid.build_cases(grid.select("quick", {"ci_target": "3%"}), "cpu")
    assert case.ci_target == 0.03 and case.to_dict()["ci_target"] == 0.03


def test_quick_grid_on_a_gpu_adds_bf16_and_larger_sizes() -> None:
    spec = grid.preset("quick", "cuda:0")
    assert "bf16" in spec.values["precision"]
    assert max(spec.sizes["gpt"]) >= 1e8


def test_auto_grid_reaches_ten_billion_parameters() -> None:
    assert max(grid.preset("auto", "cpu").sizes["vit"]) == 1e10


def test_unknown_grid_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown grid 'huge'"):
        grid.preset("huge", "cpu")


def test_grid_file_sets_axes_and_per_family_overrides(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text(
        'families = ["gpt", "mlp"]\nsizes = "1e5:1e6:x10"\nworkloads = ["train"]\n'
        'dtypes = ["fp32"]\ntimeout_s = 60\n[set.gpt]\nseq_len = 64\nbias = false\n'
    )
    spec = grid.load_grid_file(path)
    cases = grid.build_cases(spec, "cpu")
    assert [c.case_id for c in cases] == [
        "gpt-1e5-fp32-cpu-bias=False-seq_len=64",
        "gpt-1e6-fp32-cpu-bias=False-seq_len=64",
        "mlp-1e5-fp32-cpu",
        "mlp-1e6-fp32-cpu",
    ]
    assert spec.value("timeout_s") == 60
    assert cases[0].workloads == ("train",)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("sizes = [", "not valid TOML"),
        ('sizes = "1e5"\ncolour = "red"', "unknown keys colour"),
        ('families = ["rnn"]\nsizes = "1e5"', "unknown family 'rnn'"),
        ('sizes = "1e5"\nworkloads = ["serving"]', "unknown workload 'serving'"),
        ('sizes = "1e5"\ndtypes = ["fp9"]', "unknown precision 'fp9'"),
        ('families = ["mlp"]', "'sizes' is required"),
        ('sizes = "1e5"\n[set.mlp]\nwidth = 3', "width: unknown field"),
        ('sizes = "1e5"\noptimizer = "lion"', "unknown optimizer 'lion'"),
        ('sizes = "1e5"\ntimeout_s = "abc"', "timeout_s 'abc': input should be a valid number"),
        ("sizes = 1e5", "sizes = 100000.0: a string or a non-empty list"),
        ('sizes = "1e5"\n[set]\ngpt = 3', "gpt = 3: should be a table"),
        ('sizes = "1e5"\nbatch_size = "x"', "batch_size 'x'"),
        ('sizes = "1e5"\nbatch_size = 0', "greater than or equal to 1"),
        ('sizes = "1e5"\ntimeout_s = -1', "greater than 0"),
        ('sizes = "1e5"\ntimeout_s = inf', "timeout_s inf"),
        ('sizes = "1e5"\nbudget_s = nan', "budget_s nan"),
        ('sizes = "1e5"\nbudget_s = "0.2"', "budget_s '0.2'"),
        ('sizes = "1e5"\nbatch_size = true', "batch_size True: input should be a valid integer"),
        ('sizes = "1e5"\nnproc_per_node = 1.9', "nproc_per_node 1.9"),
        ('sizes = "1e5"\nfamilies = []', "no family given"),
    ],
)
def test_bad_grid_files_are_user_errors(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "g.toml"
    path.write_text(content)
    with pytest.raises(UserError, match=needle):
        grid.load_grid_file(path)


def test_grid_file_can_ask_for_a_distributed_launch(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('families = ["mlp"]\nsizes = "1e5"\nstrategy = "fsdp"\nnproc_per_node = 4\n')
    (case,) = grid.build_cases(grid.load_grid_file(path), "cpu")
    assert (case.strategy, case.world_size, case.case_id) == ("fsdp", 4, "mlp-1e5-fp32-cpu-fsdp4")


def test_missing_grid_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        grid.load_grid_file(tmp_path / "none.toml")


def test_set_without_a_family_applies_to_every_family_with_that_field() -> None:
    spec = grid.preset("quick", "cpu").with_families(("gpt", "vit", "mlp"))
    spec = grid.with_overrides(spec, ["n_layer=2", "gpt.seq_len=32"])
    assert spec.overrides["vit"] == {"n_layer": 2}
    assert spec.overrides["gpt"]["n_layer"] == 2
    assert spec.overrides["gpt"]["seq_len"] == 32
    assert spec.overrides["mlp"] == {"n_layer": 2}
    with pytest.raises(UserError, match="no family of this grid has"):
        grid.with_overrides(spec, ["colour=3"])


@pytest.mark.parametrize(
    ("name", "needle"),
    [("tpu", "unknown device 'tpu'"), ("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU")],
)
def test_devices_that_are_not_here_are_user_errors(name: str, needle: str) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match=needle):
        grid.resolve_device(name)


def test_auto_device_is_the_cpu_without_a_gpu() -> None:
    import torch

    assert grid.resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_the_case_mypy_sees_has_the_generated_fields_in_order_with_their_defaults() -> None:
    """``Case`` is generated from the axes; the declaration mypy reads in its place must name the
    same fields, in the same order, optional exactly where the generated one has a default."""
    import ast
    import dataclasses

    from scaling_bench.config import case as case_module

    tree = ast.parse(Path(case_module.__file__).read_text())
    (declared,) = (
        node
        for branch in tree.body
        if isinstance(branch, ast.If) and ast.unparse(branch.test) == "TYPE_CHECKING"
        for node in branch.body
        if isinstance(node, ast.ClassDef) and node.name == "Case"
    )
    seen = [
        (stmt.target.id, stmt.value is not None)
        for stmt in declared.body
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
    ]
    generated = [
        (
            f.name,
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
        )
        for f in dataclasses.fields(Case)
    ]
    assert seen == generated
