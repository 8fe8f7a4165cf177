"""`scaling-bench report`: one self-contained HTML file with its plots, and a markdown summary."""

from __future__ import annotations

import base64
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import synthetic
from matplotlib.image import imread

from scaling_bench.frontends.cli import main
from scaling_bench.report.tables import fmt_value

IMG = re.compile(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">')
#: An error text that would end a markdown cell or list item, start a heading, or inject markup.
NASTY_ERROR = "RuntimeError: a | b\n## Traceback\r\n| x | <script>alert(1)</script> &"


def convergence_metrics(params: int) -> dict[str, dict]:
    """The convergence workload's metrics at two LRs and two seeds (its documented shape)."""
    floor = 10 / params**0.1

    def curve(lr: str, seed: int) -> list[list[float | None]]:
        return [[step, floor + 2.0 / (1 + step / (10 + seed))] for step in range(0, 101, 20)]

    curves = {f"lr={lr},seed={s}": curve(lr, s) for lr in ("0.001", "0.01") for s in (0, 1)}
    curves["lr=0.01,seed=1"][-1][1] = None  # a non-finite loss is stored as null
    return {
        "final_loss_mean": {"value": floor, "unit": "nats", "n": 2, "curves": curves},
        "heldout_loss": {"value": floor * 1.1, "unit": "nats", "n": 2, "curves": curves},
        "final_loss_std": {"value": 0.01, "unit": "nats", "n": 2},
        "generalization_gap": {"value": floor * 0.1, "unit": "nats", "n": 2},
        "loss_spikes": {"value": 0.0, "unit": "count", "n": 2},
        "diverged_fraction": {"value": 0.25, "unit": "fraction", "n": 4},
        "lr_sensitivity": {"value": 0.3, "unit": "nats", "n": 1},
        "best_lr": {"value": 0.001, "unit": "lr", "n": 1},
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with convergence metrics and a failed case, reported once (plots take seconds)."""
    rng = random.Random(0)
    records = [
        synthetic.record(f, n, rng=rng, extra_metrics=convergence_metrics(round(n)))
        for f in ("mlp", "gpt")
        for n in (1e4, 1e5, 1e6)
    ]
    records.append(synthetic.record("gpt", 1e7, rng=rng, status="oom"))
    records.append(synthetic.record("mlp", 1e7, rng=rng, status="crashed") | {"error": NASTY_ERROR})
    folder = synthetic.write(tmp_path_factory.mktemp("report") / "run", records)
    assert main(["report", str(folder), "--markdown", str(folder / "summary.md")]) == 0
    return folder


def images(html: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(data) for alt, data in IMG.findall(html)}


def test_a_run_without_a_frontier_has_no_frontier_lines(results: Path) -> None:
    summary = (results / "summary.md").read_text()
    html = (results / "report.html").read_text()
    assert "Compute-optimal frontier" not in summary and 'id="frontier"' not in html
    assert "IsoFLOP" not in summary and "IsoFLOP" not in html


def test_report_embeds_every_plot_as_png_in_one_file(results: Path) -> None:
    html = (results / "report.html").read_text()
    plots = images(html)
    assert set(plots) == {
        "Throughput against parameters",
        "Model FLOPs utilisation",
        "train: bytes, measured and predicted",  # the peak, under the name the plan predicts
        "checkpoint: bytes, measured and predicted",
        "Fitted power laws",
        "Loss curves per size",
        "Convergence and stability against parameters",
    }
    assert all(png.startswith(b"\x89PNG") for png in plots.values())
    assert 'src="http' not in html and "<script" not in html  # nothing to fetch, nothing to run
    assert "Synthetic CPU" in html


def test_markdown_has_the_fitted_exponents_and_the_failed_cases(results: Path) -> None:
    markdown = (results / "summary.md").read_text()
    assert markdown.startswith("## scaling-bench report")
    time = "| mlp-fp32-cpu | train seconds per sample |"
    row = next(line for line in markdown.splitlines() if time in line)
    k, theory = row.split("|")[3:5]
    assert k.strip().startswith("1.00 [")
    assert theory.strip() == "1.00 ✓"
    assert "| gpt-fp32-cpu | checkpoint size | 0.99 [" in markdown  # 4 bytes each + 1000
    assert "- `gpt-1e7-fp32-cpu`: oom synthetic failure" in markdown
    assert "More than 25% from theory: 0 of" in markdown


def test_an_error_with_pipes_and_line_breaks_stays_in_its_markdown_line(results: Path) -> None:
    markdown = (results / "summary.md").read_text()
    lines = markdown.splitlines()
    failure = next(line for line in lines if line.startswith("- `mlp-1e7-fp32-cpu`"))
    assert failure.startswith("- `mlp-1e7-fp32-cpu`: crashed RuntimeError: a \\| b ## Traceback")
    assert failure.endswith(r"\| x \| &lt;script&gt;alert(1)&lt;/script&gt; &amp;")
    assert not any(line.startswith(("## Traceback", "| x")) for line in lines)
    tables = "\n".join(line if line.startswith("|") else "" for line in lines).split("\n\n")
    for table in filter(None, (t.strip() for t in tables)):  # every row as many cells as its header
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}) == 1


def test_the_html_shows_error_texts_as_text_not_markup(results: Path) -> None:
    html = (results / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in html
    assert "<script" not in html


def test_by_default_the_html_goes_beside_the_results_and_markdown_to_stdout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    results = synthetic.write(tmp_path / "run", synthetic.run(families=("mlp",)))
    assert main(["report", str(results)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("## scaling-bench report")
    assert f"wrote {results / 'report.html'}" in err
    html = (results / "report.html").read_text()
    assert "Loss curves per size" not in images(html)
    assert "No loss curves: run with --workloads convergence." in html


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (3 * 2**20, "bytes", "3.00 MiB"),
        (0.0042, "s", "4.2 ms"),
        (4.2e-5, "s", "42 µs"),
        (12.5, "s", "12.5 s"),
        (0.43, "fraction", "43.0%"),
        (12345.6, "samples/s", "12,346 samples/s"),
    ],
)
def test_figures_are_shown_in_the_unit_people_read(value: float, unit: str, text: str) -> None:
    assert fmt_value(value, unit) == text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nowhere",), "nowhere: no such file or folder"),
        (("empty-dir",), "no results.jsonl in"),
        (("run", "--html", "no/such/folder/r.html"), "r.html: cannot write"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message) -> None:
    synthetic.write(tmp_path / "run", synthetic.run(families=("mlp",), sizes=(1e4, 1e5)))
    (tmp_path / "empty-dir").mkdir()
    argv = [str(tmp_path / args[0]), *args[1:2], *(str(tmp_path / a) for a in args[2:])]
    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_the_html_renders_in_a_browser_with_its_plots(results: Path, tmp_path: Path) -> None:
    url = (results / "report.html").resolve().as_uri()

    def chromium(*flags: str) -> str:
        profile = f"--user-data-dir={tmp_path / 'profile'}"
        done = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, profile, *flags, url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    dom = chromium("--dump-dom")
    assert len(IMG.findall(dom)) == 7
    assert "Fitted exponents" in dom
    shot = tmp_path / "shot.png"
    chromium("--window-size=1200,1400", f"--screenshot={shot}")
    pixels = imread(shot)[..., :3]
    # The series' colours (matplotlib C0 blue, C1 orange) appear only where the plots are drawn.
    orange = (pixels[..., 0] > 0.9) & (abs(pixels[..., 1] - 0.5) < 0.08) & (pixels[..., 2] < 0.15)
    assert orange.sum() > 200


def test_an_unsettled_figure_is_marked_in_both_documents(tmp_path: Path) -> None:
    records = synthetic.run()
    for name in ("train_step_s", "train_samples_per_s"):
        records[0]["metrics"][name]["settled"] = False
    results = synthetic.write(tmp_path / "run", records)
    html, markdown = tmp_path / "r.html", tmp_path / "r.md"
    assert main(["report", str(results), "--html", str(html), "--markdown", str(markdown)]) == 0
    for text in (html.read_text().replace("<tr>", "\n"), markdown.read_text()):
        rows = [line for line in text.splitlines() if records[0]["case_id"] in line]
        assert any("~" in row for row in rows), rows
        assert "~ unsettled: fewer than the minimum samples" in text
        settled_rows = [line for line in text.splitlines() if records[1]["case_id"] in line]
        assert settled_rows and not any("~" in row for row in settled_rows)
