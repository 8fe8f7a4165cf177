"""Text from data files reaches the terminal, the markdown summary and the figures as text: an
escape sequence does nothing, HTML is not markup, a ``$`` is not mathtext, an overflowing
figure is not a traceback (issue 26: v16e, z01m, z02, z07, z08, z09, z09b)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import synthetic
from test_compare import pytest_benchmark_json

from scaling_bench.frontends.cli import main

#: Clear the screen, set the window title, turn the text red; and a rich markup closing tag.
ESCAPES = "\x1b[2J\x1b]0;TITLE\x07\x1b[31m[/x]"
MATHTEXT = "$\\undefinedmacro{$"


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 0x20 and c not in "\n") or 0x7F <= ord(c) <= 0x9F]


@pytest.fixture
def escaping_run(tmp_path: Path) -> Path:
    """A run whose case ids and machine carry escape sequences and HTML."""
    env = {"cpu_model": f"CPU{ESCAPES}<script>", "hostname": f"host{ESCAPES}"}
    records = synthetic.run(families=("mlp",), sizes=(1e4, 1e5), env=env)
    for r in records:
        r["case_id"] = ESCAPES + r["case_id"]
    return synthetic.write(tmp_path / "escaping", records)


def test_compare_prints_a_data_files_escape_sequences_as_text(capsys, escaping_run) -> None:
    assert main(["compare", str(escaping_run), str(escaping_run), "--all"]) == 0
    out = capsys.readouterr().out
    assert out.count("\\x1b[2J\\x1b]0;TITLE\\x07\\x1b[31m[/x]mlp-1e4-fp32-cpu") == 4
    assert "Geometric-mean ratio CURRENT/BASE per family" in out
    assert "host\\x1b[2J" in out.replace("\n", "").replace(" ", "")
    assert _raw_controls(out) == []


def test_compare_of_pytest_benchmark_files_prints_their_machines_as_text(capsys, tmp_path):
    sides = []
    for name, slowdown in (("base", 1.0), ("current", 2.0)):
        path = pytest_benchmark_json(tmp_path / f"{name}.json", slowdown, seed=0)
        data = json.loads(path.read_text())
        data["machine_info"] = {"node": f"n<script>{ESCAPES}", "cpu": {"brand_raw": name + ESCAPES}}
        for benchmark in data["benchmarks"]:
            benchmark["extra_info"]["case_id"] = ESCAPES + benchmark["params"]["case_id"]
        path.write_text(json.dumps(data))
        sides.append(str(path))
    assert main(["compare", *sides]) == 1  # twice as slow: the gate still works
    out = capsys.readouterr().out
    assert "note: the runs differ in cpu_model base\\x1b[2J" in out.replace("\n", "")
    assert "\\x1b]0;TITLE\\x07" in out and _raw_controls(out) == []


@pytest.mark.parametrize("source", ["records", "pytest-benchmark"])
def test_a_dollar_in_a_family_is_drawn_as_text_not_parsed_as_mathtext(source, tmp_path) -> None:
    if source == "records":
        records = synthetic.run(families=("mlp",), sizes=(1e4, 1e5))
        for r in records:
            r["case"]["family"] = MATHTEXT
        sides = [synthetic.write(tmp_path / "run", records)] * 2
    else:
        sides = []
        for name, slowdown in (("base", 1.0), ("current", 1.0)):
            path = pytest_benchmark_json(tmp_path / f"{name}.json", slowdown, seed=0)
            data = json.loads(path.read_text())
            for benchmark in data["benchmarks"]:
                benchmark["extra_info"]["family"] = MATHTEXT
            path.write_text(json.dumps(data))
            sides.append(path)
    plot = tmp_path / "hardware.png"
    assert main(["compare", *map(str, sides), "--plot", str(plot)]) == 0
    assert plot.read_bytes().startswith(b"\x89PNG")
    if source == "records":
        assert main(["report", str(sides[0]), "--html", str(tmp_path / "r.html")]) == 0


def test_a_step_time_that_overflows_the_batch_is_tolerated_by_report(tmp_path) -> None:
    records = synthetic.run(families=("mlp",), sizes=(1e4, 1e5))
    records[1]["metrics"]["forward_step_s"] = {"value": 1e308, "samples": [1e308, 1e-308]}
    results = synthetic.write(tmp_path / "run", records)
    assert main(["report", str(results), "--html", str(tmp_path / "r.html")]) == 0


def test_the_markdown_summary_shows_html_control_characters_and_backticks_as_text(tmp_path):
    env = {
        "cpu_model": "Evil CPU\n## heading <iframe src=//evil>",
        "hostname": "</td></tr></table><h1>X</h1>\x1b[2J\x07",
    }
    rng = random.Random(0)
    records = [synthetic.record("mlp", n, rng=rng, env=env) for n in (1e4, 1e5, 1e6)]
    failed = synthetic.record("mlp", 1e7, rng=rng, status="crashed", env=env)
    failed["case_id"] = "mlp`<script>alert(1)</script>`-1e7"
    failed["error"] = "boom <script>alert(2)</script> [click](http://evil) \x1b]0;T\x07"
    results = synthetic.write(tmp_path / "run", [*records, failed])
    summary = tmp_path / "summary.md"
    assert main(["report", str(results), "--markdown", str(summary)]) == 0
    text = summary.read_text()
    lines = text.splitlines()
    assert "<script" not in text.replace("``mlp`<script>", "") and "<iframe" not in text
    assert "<h1>" not in text and _raw_controls(text) == []
    env_line = next(line for line in lines if line.startswith("4 cases"))
    assert "Evil CPU ## heading &lt;iframe src=//evil&gt;" in env_line
    assert not any(line.startswith("## heading") for line in lines)
    failure = next(line for line in lines if line.startswith("- ``"))
    assert failure.startswith("- ``mlp`<script>alert(1)</script>`-1e7``: crashed boom &lt;script")
    assert "[click\\](http://evil) \\x1b]0;T\\x07" in failure
    row = next(line for line in lines if "alert(1)" in line and line.startswith("|"))
    assert row.startswith("| mlp\\`&lt;script&gt;alert(1)&lt;/script&gt;\\`-1e7 |")
