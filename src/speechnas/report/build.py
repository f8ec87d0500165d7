"""``speechnas report RUN_DIR``: every section of the search report, written as one HTML file.

Sections: overview (with how to open the study in optuna-dashboard), Pareto front, front
evolution, progress (hypervolume and best-so-far against trials and training minutes),
diversity, choice importance, top-N side by side, architecture graphs, WER per test set, error
analysis, significance."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from html import escape
from pathlib import Path

from speechnas.evaluate.errors import analyse_errors
from speechnas.evaluate.significance import compare_systems
from speechnas.report import analysis, figures
from speechnas.report.archgraph import arch_svg
from speechnas.report.decoding import RETRAINED, Decoded, decode_run
from speechnas.report.page import Raw, Section, render, table
from speechnas.search.finished import Run, load_run
from speechnas.search.runner import prefer_metric
from speechnas.search.select import format_value

SECTIONS = (
    "overview", "pareto", "evolution", "progress", "diversity", "importance", "top",
    "graphs", "wer", "errors", "significance",
)  # fmt: skip


def _overview(run: Run) -> Section:
    s = Section("overview", "Overview")
    counts = run.pareto.get("trials") or {}
    sel = run.pareto.get("selected")
    rows = [
        ("study", run.name),
        ("space", run.config.space),
        ("strategy", run.config.strategy.name),
        ("objectives", ", ".join(run.objectives)),
        ("target", run.config.target),
        ("trials", ", ".join(f"{k.lower()} {v}" for k, v in counts.items()) or len(run.trials)),
        ("architectures", f"{len(run.results)} completed, {len(run.front)} on the front"),
        ("selected", "none" if sel is None else f"trial {sel['trial']} ({sel['key'][:8]})"),
    ]
    s.html(table(["", ""], rows))
    s.html(
        '<p class="note">The study is an Optuna study, also readable by optuna-dashboard: '
        "<code>pip install optuna-dashboard</code>, then <code>optuna-dashboard "
        f"sqlite:///{run.folder.resolve() / 'study.db'}</code>.</p>"
    )
    return s


def _top(run: Run, n: int) -> Section:
    s = Section("top", f"Top {n} architectures side by side")
    prefer = prefer_metric(run.config)
    ranked = sorted(run.results, key=lambda r: (-r.rung, r.metric(prefer), r.trial))[:n]
    if not ranked:
        s.note("no completed architecture")
        return s
    choices = list(ranked[0].arch.to_json())
    for r in ranked[1:]:
        choices += [c for c in r.arch.to_json() if c not in choices]
    header = ["trial", "rung", *run.objectives, *choices]
    rows, marked = [], []
    best = ranked[0].arch.to_json()
    for r in ranked:
        a = r.arch.to_json()
        vals = [format_value(o, v) for o, v in zip(run.objectives, r.values, strict=True)]
        rows.append([r.trial, r.rung, *vals, *(a.get(c, "—") for c in choices)])
        fixed = [False] * (2 + len(vals))
        marked.append(fixed + [a.get(c) != best.get(c) for c in choices])
    s.note(f"ordered like the selection (highest rung, then {prefer}); highlighted: choices "
           f"that differ from trial {ranked[0].trial}")  # fmt: skip
    s.html(f'<div style="overflow-x:auto">{table(header, rows, marked=marked, left=0)}</div>')
    return s


def _graphs(run: Run) -> Section:
    s = Section("graphs", "Architecture graph of each front member")
    items = [
        f"<figure>{arch_svg(r.arch)}<figcaption>trial {r.trial} ({r.key[:8]}): "
        + ", ".join(format_value(o, v) for o, v in zip(run.objectives, r.values, strict=True))
        + "</figcaption></figure>"
        for r in run.front
    ]
    s.html(f'<div class="graphs">{"".join(items)}</div>')
    return s


def _wer(run: Run, dec: Decoded) -> Section:
    s = Section("wer", "WER per test set")
    per: dict[str, dict[str, float]] = {}
    retrained = run.retrained or {}
    got = {k.removeprefix("wer:"): float(v) for k, v in retrained.items()
           if k.startswith("wer:") and isinstance(v, int | float)}  # fmt: skip
    if got:
        per[RETRAINED] = got
    for test, systems in dec.hypotheses.items():
        refs = [u.text for u in dec.utterances[test]]
        for name, hyps in systems.items():
            if name != RETRAINED:
                e = analyse_errors(refs, hyps)
                words = sum(u.words for u in e.utterances)
                per.setdefault(name, {})[test] = sum(u.errors for u in e.utterances) / words
    if not per:
        s.note("no retrained model and no hypotheses: nothing was scored on the test sets")
        return s
    s.figure(figures.test_wer(per))
    s.note("retrained: the selection retrained on all the training data; trial N: a front "
           "member's own checkpoint at its search fidelity")  # fmt: skip
    return s


def _errors(dec: Decoded, worst: int) -> Section:
    s = Section("errors", "Error analysis of the retrained selection")
    lengths = {}
    for test, systems in dec.hypotheses.items():
        if RETRAINED not in systems:
            continue
        utts = dec.utterances[test]
        e = analyse_errors([u.text for u in utts], systems[RETRAINED])
        d = e.to_dict()
        lengths[test] = d["by_length"]
        s.figure(figures.error_counts(test, d["substitutions"], d["insertions"],
                                      d["deletions"]), test)  # fmt: skip
        rows = [
            [utts[u.index].id, Raw(f'<a href="{utts[u.index].audio_path.resolve().as_uri()}">'
                                   "audio</a>"),
             u.reference, u.hypothesis, f"{u.substitutions}/{u.deletions}/{u.insertions}",
             f"{100 * u.wer:.0f}%"]
            for u in e.worst(worst)
        ]  # fmt: skip
        s.html(f"<h3>{test}: worst utterances</h3>")
        s.html(table(["id", "audio", "reference", "hypothesis", "S/D/I", "WER"], rows, left=4))
    if lengths:
        s.figure(figures.by_length(lengths), "length")
    else:
        s.note("no hypotheses of the retrained model (see the notes under Significance)")
    return s


def _significance(dec: Decoded) -> Section:
    s = Section("significance", "Significance of WER differences")
    for test, systems in dec.hypotheses.items():
        if len(systems) < 2:
            continue
        refs = [u.text for u in dec.utterances[test]]
        names = list(systems)
        p: list[list[float | None]] = [[None] * len(names) for _ in names]
        rows = []
        for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
            c = compare_systems(refs, systems[a], systems[b])
            p[i][j] = p[j][i] = c["p_bootstrap"]
            rows.append([a, b, f"{100 * c['wer_a']:.2f}", f"{100 * c['wer_b']:.2f}",
                         f"{100 * c['delta']:+.2f} [{100 * c['ci_low']:+.2f}, "
                         f"{100 * c['ci_high']:+.2f}]", f"{c['p_bootstrap']:.3f}",
                         f"{c['p_mapsswe']:.3f}"])  # fmt: skip
        s.figure(figures.significance(names, p, test), test)
        s.html(table(["A", "B", "WER A %", "WER B %", "A − B (95% CI)", "p bootstrap",
                      "p MAPSSWE"], rows, left=2))  # fmt: skip
    if not s.blocks:
        s.note("fewer than two decoded systems on any test set: no paired test")
    for note in dec.notes:
        s.note(note)
    return s


#: A TTS search's report: the same sections up to the graphs, then the retrained selection's
#: scores and its spoken test sentences instead of the ASR test sets and their errors.
TTS_SECTIONS = (*SECTIONS[: SECTIONS.index("graphs") + 1], "listen")


def _embedded(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _listen(run: Run) -> Section:
    s = Section("listen", "The retrained selection: scores and spoken test sentences")
    got = run.retrained
    if not got:
        s.note("no retrained model (retrain_minutes: 0, or nothing was selected)")
        return s
    rows = [
        ("test MCD (reference durations)", f"{got['mcd']:.2f} dB"),
        ("judge CER / WER on the test sentences",
         f"{100 * got['tts_cer']:.2f}% / {100 * got['tts_wer']:.2f}%" if "tts_cer" in got
         else "no judge"),
        ("duration error", f"{got['duration_error']:.2f} frames per phoneme"),
        ("log-F0 RMSE (own durations, DTW)", f"{got.get('f0_rmse_cents', float('nan')):.0f} cents"),
        ("parameters", f"{got['params']:,}"),
        ("latency, 3.2 s of speech, one thread",
         f"{got['latency_measured']:.2f} ms fp32, {got['latency_int8_measured']:.2f} ms int8"),
        ("real-time factor (fp32)", f"{got['rtf_measured']:.4f}"),
        ("training", f"{got['steps']} steps, {got['train_minutes']:.1f} min"),
        ("ONNX export", f"{got['onnx']} (parity {got['onnx_parity']:.1e})"),
    ]  # fmt: skip
    s.html(table(["", ""], rows))
    items = []
    for k, sample in enumerate(got.get("samples", [])):
        wav, png = Path(sample["wav"]), Path(sample.get("png") or "")
        if not wav.is_file():
            continue
        img = f'<img src="{_embedded(png, "image/png")}" width="480">' if png.is_file() else ""
        items.append(
            f"<figure>{img}<figcaption>{k + 1}. {escape(sample['text'])}<br><audio controls "
            f'src="{_embedded(wav, "audio/wav")}"></audio></figcaption></figure>'
        )
    if items:
        s.html(f'<div class="graphs">{"".join(items)}</div>')
    s.note("spoken torch-free by the exported model (eSpeak phonemes, ONNX Runtime, "
           "Griffin-Lim); the same sentences' reference audio is in the test split")  # fmt: skip
    return s


def build_sections(run: Run, dec: Decoded, *, top: int = 10, worst: int = 10) -> list[Section]:
    sections = [_overview(run)]
    for sid, title, make in (
        ("pareto", "Pareto front", lambda: figures.pareto(run)),
        ("evolution", "Front evolution",
         lambda: figures.evolution(run, analysis.front_snapshots(run))),
        ("progress", "Hypervolume and best so far",
         lambda: figures.progress(run, analysis.progression(run))),
        ("diversity", "Architecture diversity",
         lambda: figures.diversity(analysis.diversity(run))),
        ("importance", "Choice importance",
         lambda: figures.importance(analysis.importance(run))),
    ):  # fmt: skip
        s = Section(sid, title)
        s.figure(make())
        sections.append(s)
    sections += [_top(run, top), _graphs(run)]
    if run.config.task == "tts":
        sections.append(_listen(run))
        assert [s.id for s in sections] == list(TTS_SECTIONS)
        return sections
    sections += [_wer(run, dec), _errors(dec, worst), _significance(dec)]
    assert [s.id for s in sections] == list(SECTIONS)
    return sections


def write_report(
    run_dir: str | Path,
    output: str | Path | None = None,
    *,
    decode: bool = True,
    top: int = 10,
    max_front: int = 6,
    log: Callable[[str], None] = lambda msg: None,
) -> Path:
    """Writes the report of the search in ``run_dir`` to ``output`` (default
    ``RUN_DIR/report.html``); ``decode``: decode the retrained model and the front members
    for the error analysis and the significance tests (cached under ``RUN_DIR/report/``)."""
    run = load_run(run_dir)
    tts = run.config.task == "tts"
    if decode and not tts:  # a TTS run's selection speaks; it has no transcripts to decode
        dec = decode_run(run, run.folder / "report" / "hyps", max_front=max_front, log=log)
    else:
        dec = Decoded(notes=["decoding skipped (--no-decode): no error analysis, no tests"])
    out = Path(output) if output else run.folder / "report.html"
    page = render(f"Search report: {run.name}", f"{run.folder.resolve()}",
                  build_sections(run, dec, top=top), meta={"speechnas-sections":
                  ",".join(TTS_SECTIONS if tts else SECTIONS)})  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


__all__ = ["SECTIONS", "TTS_SECTIONS", "build_sections", "write_report"]
