"""The plan's model figures kept on disk: a kept plan is the computed one, byte for byte, and an
entry that is corrupt or was kept for another key is computed again and rewritten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scaling_bench.config.case import Case
from scaling_bench.frontends.cli import main
from scaling_bench.predict import plan as planning
from scaling_bench.predict.plan import plan_for

ARGS = ("plan", "--family", "vit", "--params", "1e5", "--batch-size", "4")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The families whose figures were computed (not read back), in order."""
    calls: list[str] = []
    compute = planning._model_figures

    def counted(family_name: str, cfg: object, recipe: object) -> object:
        calls.append(family_name)
        return compute(family_name, cfg, recipe)  # type: ignore[arg-type]

    monkeypatch.setattr(planning, "_model_figures", counted)
    return calls


def printed(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main([*ARGS, *args]) == 0
    return capsys.readouterr().out


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json"))


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["table", "json"])
def test_a_kept_plan_prints_exactly_what_a_computed_one_does(
    capsys: pytest.CaptureFixture[str], computed: list[str], json_flag: tuple[str, ...]
) -> None:
    miss = printed(capsys, *json_flag)
    hit = printed(capsys, *json_flag)
    assert computed == ["vit"]
    assert hit == miss


def test_the_table_and_json_share_one_entry_and_the_run_path_agrees(
    capsys: pytest.CaptureFixture[str], computed: list[str], _private_plan_cache: Path
) -> None:
    """``plan --json`` kept, ``plan_for`` as a run plans the case, and a plan computed with no
    cache at all are one plan."""
    printed(capsys)
    kept = json.loads(printed(capsys, "--json"))
    assert computed == ["vit"] and len(entries(_private_plan_cache)) == 1
    case = Case("vit", 1e5, batch_size=4)
    run = plan_for(case)
    assert json.loads(json.dumps(run.to_dict())) == kept
    assert computed == ["vit"]
    for entry in entries(_private_plan_cache):
        entry.unlink()
    assert plan_for(case) == run
    assert computed == ["vit", "vit"]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda text: text[: len(text) // 2],
        lambda text: "[]",
        lambda text: text.replace('"checkpoint_bytes": ', '"checkpoint_bytes": -'),
        lambda text: text.replace('"checkpoint_bytes": ', '"checkpoint_bytes": 0.5 + '),
        lambda text: json.dumps(json.loads(text) | {"figures": {}}),
    ],
    ids=["truncated", "not-an-entry", "negative", "not-json", "no-figures"],
)
def test_a_corrupt_entry_is_computed_again_and_rewritten(
    capsys: pytest.CaptureFixture[str], computed: list[str], _private_plan_cache: Path, spoil
) -> None:
    miss = printed(capsys, "--json")
    (entry,) = entries(_private_plan_cache)
    good = entry.read_text()
    entry.write_text(spoil(good))
    assert printed(capsys, "--json") == miss
    assert computed == ["vit", "vit"]
    assert entry.read_text() == good


def test_an_entry_kept_for_another_key_is_not_reused(
    capsys: pytest.CaptureFixture[str], computed: list[str], _private_plan_cache: Path
) -> None:
    """An entry whose key differs (other code, another torch) under this key's file name:
    computed again and rewritten, never served."""
    miss = printed(capsys, "--json")
    (entry,) = entries(_private_plan_cache)
    good, stale = json.loads(entry.read_text()), json.loads(entry.read_text())
    stale["key"]["code"] = "0" * 40
    stale["figures"]["checkpoint_bytes"] += 1
    entry.write_text(json.dumps(stale))
    assert printed(capsys, "--json") == miss
    assert computed == ["vit", "vit"]
    assert json.loads(entry.read_text()) == good


def test_another_recipe_or_config_is_another_entry(
    capsys: pytest.CaptureFixture[str], computed: list[str], _private_plan_cache: Path
) -> None:
    printed(capsys)
    printed(capsys, "--optimizer", "sgd")
    printed(capsys, "--set", "patch_size=8")
    assert computed == ["vit"] * 3
    assert len(entries(_private_plan_cache)) == 3


def test_a_folder_that_cannot_be_written_only_costs_computing_again(
    capsys: pytest.CaptureFixture[str],
    computed: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SCALING_BENCH_PLAN_CACHE_DIR", str(blocker / "plans"))
    assert printed(capsys) == printed(capsys)
    assert computed == ["vit", "vit"]


@pytest.mark.parametrize("name", ["vit", "resnet"])
def test_a_kept_plan_imports_no_torchvision(name: str, _private_plan_cache: Path) -> None:
    """Its import alone is 1.5 s of a plan's start."""
    probe = (
        "import sys\nfrom scaling_bench.frontends.cli import main\n"
        f"main(['plan', '--family', {name!r}, '--params', '1e5', '--json'])\n"
        "print('torchvision' in sys.modules, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert [r.stderr.split()[-1] for r in runs] == ["True", "False"]
    assert runs[0].stdout == runs[1].stdout
