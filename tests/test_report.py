"""The search report of a real tiny search (every section, opened in headless Chromium), the
error analysis it draws on, and ``speechnas select`` on a finished study."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console
from search_helpers import search_config
from typer.testing import CliRunner

from speechnas.cli import app
from speechnas.data.synth.corpus import CorpusInfo
from speechnas.evaluate.errors import analyse_errors
from speechnas.report.build import SECTIONS, write_report
from speechnas.search.finished import load_run, reselect
from speechnas.search.record import open_trial, record_trial
from speechnas.search.runner import run_search
from speechnas.search.study import open_study
from speechnas.search.trial import Fidelity
from speechnas.space import load_space

runner = CliRunner()
ONE_RUNG = {"rungs": [{"minutes": 5, "steps": 2}], "candidates": 3}


@pytest.fixture(scope="module")
def tiny_run(tiny_corpus: CorpusInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-trial search, its selection retrained for 2 steps."""
    tmp = tmp_path_factory.mktemp("report")
    cfg = search_config(tiny_corpus, tmp, fidelity=ONE_RUNG, n_trials=3, retrain_minutes=5,
                        retrain_steps=2)  # fmt: skip
    run_search(cfg, console=Console(quiet=True))
    return Path(cfg.output_dir)


@pytest.fixture(scope="module")
def report_html(tiny_run: Path) -> Path:
    return write_report(tiny_run, tiny_run / "report.html")


def test_report_is_one_self_contained_file_with_every_section(report_html: Path) -> None:
    html = report_html.read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html, sid
    assert "<script src" not in html  # plotly's JS is inline: no network needed
    assert "optuna-dashboard sqlite:///" in html
    assert 'id="plot-errors-test"' in html  # the retrained model was decoded
    assert "p MAPSSWE" in html  # the front members were compared


def test_report_without_decoding_says_why(tiny_run: Path, tmp_path: Path) -> None:
    html = write_report(tiny_run, tmp_path / "r.html", decode=False).read_text()
    assert "decoding skipped (--no-decode)" in html


def test_report_of_a_folder_without_study_names_the_file(tmp_path: Path) -> None:
    out = runner.invoke(app, ["report", str(tmp_path)])
    assert out.exit_code != 0
    assert "study.db does not exist" in out.output


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(report_html: Path, tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip(
            "chromium not found (Debian: apt-get install chromium; scripts/install.sh --dev)"
        )
    common = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
              "--virtual-time-budget=20000"]  # fmt: skip
    url = report_html.resolve().as_uri()
    dom = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, "JavaScript console messages:\n" + "\n".join(console)
    html = dom.stdout
    for sid in SECTIONS:
        body = re.search(rf'<div class="section-body" id="body-{sid}">(.*?)</div></section>',
                         html, re.S)  # fmt: skip
        assert body and body.group(1).strip(), f"section {sid} is empty"
    plots = re.findall(r'<div id="(plot-[\w-]+)"', html)
    assert {p.split("-")[1] for p in plots} >= {
        "pareto", "evolution", "progress", "diversity", "importance", "wer", "errors",
        "significance",
    }  # fmt: skip
    for p in plots:  # plotly drew into every plot div: each holds an SVG now
        start = html.index(f'<div id="{p}"')
        nxt = html.find('<div id="plot-', start + 1)
        assert 'class="main-svg"' in html[start : nxt if nxt > 0 else None], p
    assert html.count('<svg class="arch"') == len(load_run(report_html.parent).front)
    shot = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1280,4000", f"--screenshot={shot}", url],
                   capture_output=True, timeout=180, check=True)  # fmt: skip
    assert shot.stat().st_size > 50_000  # a page of figures, not a blank one


def test_error_analysis_counts_each_error_type() -> None:
    refs = ["one two three", "four five", "six seven eight nine"]
    hyps = ["one too three", "four five five", "six nine"]
    e = analyse_errors(refs, hyps, length_edges=(2,))
    assert e.substitutions == {("two", "too"): 1}
    assert e.insertions == {"five": 1}
    assert e.deletions == {"seven": 1, "eight": 1}
    assert [u.errors for u in e.utterances] == [1, 1, 2]
    assert e.by_length == [("1-2 words", 1, 2, 0.5), ("3+ words", 2, 7, 3 / 7)]
    assert [u.index for u in e.worst(2)] == [2, 1]


# ------------------------------------------------------------------------------------ select
# (wer:test, latency ms, params): the most accurate model is the slowest and largest.
ARCH = {"frontend": "fbank80", "subsampling": "conv2d", "subsampling_factor": 4,
        "encoder": "conformer", "layers": 1, "heads": 2, "conv_kernel": [3], "macaron": True,
        "decoder": "ctc"}  # fmt: skip
MODELS = {"accurate": (0.10, 20.0, 2e6), "balanced": (0.20, 8.0, 1e6), "fast": (0.30, 3.0, 5e5)}


@pytest.fixture
def finished_study(tiny_corpus: CorpusInfo, tmp_path: Path) -> Path:
    """A finished study of three architectures on the tiny space, trading WER for speed."""
    cfg = search_config(tiny_corpus, tmp_path)
    Path(cfg.output_dir).mkdir(parents=True)
    ss = open_study(cfg.storage_url, cfg.study_name, len(cfg.objectives))
    ss.study.set_user_attr("config", cfg.to_dict())
    space = load_space(cfg.space)
    for k, (wer, latency, params) in enumerate(MODELS.values()):
        arch = space.validate(
            {**ARCH, "d_model": [16, 32, 32][k], "ffn_dim": [[32], [32], [64]][k]}
        )
        n = open_trial(ss, space, arch, cfg=cfg, fidelity=Fidelity(5, 1.0, 2), worker="w",
                       slot=f"0/0/{k}", bracket=0, rung=0, position=k)  # fmt: skip
        metrics = {"wer:test": wer, "latency": latency, "params": params, "macs": 1e6}
        record_trial(ss, n, status="ok", values=[wer, latency], scalar=wer, metrics=metrics)
    return Path(cfg.output_dir)


def _select(folder: Path, *args: str) -> int:
    out = runner.invoke(app, ["select", str(folder), *args, "--json", str(folder / "s.json")])
    assert out.exit_code == 0, out.output
    return json.loads((folder / "s.json").read_text())["selected"]["trial"]


def test_select_picks_per_limit_without_searching(finished_study: Path) -> None:
    trials = {name: k for k, name in enumerate(MODELS)}
    assert _select(finished_study, "--max-latency-ms", "25") == trials["accurate"]
    assert _select(finished_study, "--max-latency-ms", "10") == trials["balanced"]
    assert _select(finished_study, "--max-params", "6e5") == trials["fast"]
    out = runner.invoke(app, ["select", str(finished_study), "--max-latency-ms", "1"])
    assert out.exit_code != 0 and "no architecture meets max_latency_ms=1" in out.output


def test_select_retrains_the_new_choice(tiny_run: Path) -> None:
    run = load_run(tiny_run)
    chosen, metrics = reselect(run, retrain_steps=1, retrain_minutes=5)
    assert metrics is not None
    assert Path(metrics["checkpoint"]).is_dir()
    assert chosen.key in {r.key for r in run.results}
