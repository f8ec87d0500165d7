"""The report's interactive figures (plotly); each function returns one ``go.Figure``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from speechnas.search.plots import objective_scale
from speechnas.search.select import Result, format_value

if TYPE_CHECKING:
    from speechnas.report.analysis import Importance, Progression
    from speechnas.search.finished import Run

LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 50}}


def hover(r: Result, objectives: Sequence[str]) -> str:
    """A result's hover text: architecture key and choices, objectives, metrics, fidelity."""
    vals = "<br>".join(
        f"{o}: {format_value(o, v)}" for o, v in zip(objectives, r.values, strict=True)
    )
    metrics = ", ".join(
        f"{k} {v:.4g}" for k, v in sorted(r.metrics.items()) if isinstance(v, int | float)
    )
    choices = json.dumps(r.arch.to_json(), separators=(",", ":"))
    return (
        f"<b>trial {r.trial}</b> · {r.key[:8]} · rung {r.rung} · fidelity "
        f"{json.dumps(r.fidelity)}<br>{vals}<br>{metrics}<br>{choices}"
    )


def _xy(rows: Sequence[Result], objectives: Sequence[str]) -> tuple[list[float], list[float]]:
    if len(objectives) == 1:
        f, _ = objective_scale(objectives[0])
        return [r.trial for r in rows], [r.values[0] * f for r in rows]
    (fx, _), (fy, _) = objective_scale(objectives[0]), objective_scale(objectives[1])
    return [r.values[0] * fx for r in rows], [r.values[1] * fy for r in rows]


def _axes(objectives: Sequence[str]) -> dict[str, Any]:
    if len(objectives) == 1:
        return {"xaxis_title": "trial", "yaxis_title": objective_scale(objectives[0])[1]}
    return {
        "xaxis_title": objective_scale(objectives[0])[1],
        "yaxis_title": objective_scale(objectives[1])[1],
    }


def pareto(run: Run) -> go.Figure:
    """Every architecture at its highest fidelity, by rung; the front as a staircase."""
    fig = go.Figure()
    objectives = run.objectives
    for rung in sorted({r.rung for r in run.results}):
        rows = [r for r in run.results if r.rung == rung]
        x, y = _xy(rows, objectives)
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", name=f"rung {rung}", marker={"size": 9, "opacity": 0.75},
            hovertext=[hover(r, objectives) for r in rows], hoverinfo="text",
        ))  # fmt: skip
    x, y = _xy(run.front, objectives)
    fig.add_trace(go.Scatter(
        x=x, y=y, mode="lines+markers", name="Pareto front",
        line={"shape": "hv", "color": "crimson"},
        marker={"size": 13, "symbol": "circle-open", "color": "crimson"},
        hovertext=[hover(r, objectives) for r in run.front], hoverinfo="text",
    ))  # fmt: skip
    extra = f" (also: {', '.join(objectives[2:])})" if len(objectives) > 2 else ""
    title = f"{len(run.results)} architectures, {len(run.front)} on the front{extra}"
    return fig.update_layout(title=title, **_axes(objectives), **LAYOUT)


def evolution(run: Run, snapshots: Sequence[tuple[int, list[Result]]]) -> go.Figure:
    """The front after k completed trials, one slider step per snapshot."""
    fig = go.Figure()
    objectives = run.objectives
    for k, fr in snapshots:
        x, y = _xy(fr, objectives)
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=f"after {k}", visible=False,
            line={"shape": "hv"}, hovertext=[hover(r, objectives) for r in fr], hoverinfo="text",
        ))  # fmt: skip
    n = len(snapshots)
    if n:
        fig.data[-1].visible = True
    steps = []
    for i, (k, _) in enumerate(snapshots):
        visible = [j == i for j in range(n)]
        steps.append({"method": "update", "label": str(k), "args": [{"visible": visible}]})
    fig.update_layout(
        title="the front after k completed trials (drag the slider)",
        sliders=[{"active": n - 1, "steps": steps, "currentvalue": {"prefix": "k = "}}],
        **_axes(objectives),
        **LAYOUT,
    )
    return fig


def progress(run: Run, p: Progression) -> go.Figure:
    """Hypervolume and best-so-far per objective, against completed trials (left) and
    cumulative training minutes of the finished trials (right)."""
    names = ["hypervolume (normalised)", *(objective_scale(o)[1] for o in run.objectives)]
    fig = make_subplots(rows=len(names), cols=2, shared_xaxes="columns",
                        subplot_titles=[f"{n} {s}" for n in names for s in ("", "")])  # fmt: skip
    series = [p.hypervolume, *([v * objective_scale(o)[0] for v in p.best[o]]
                               for o in run.objectives)]  # fmt: skip
    x_trials = list(range(1, len(p.trial) + 1))
    for row, (name, ys) in enumerate(zip(names, series, strict=True), start=1):
        text = [f"trial {t}" for t in p.trial]
        for col, xs in ((1, x_trials), (2, p.train_minutes)):
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line={"shape": "hv"},
                                     name=name, hovertext=text, showlegend=False),
                          row=row, col=col)  # fmt: skip
    fig.update_xaxes(title_text="completed trials", row=len(names), col=1)
    fig.update_xaxes(title_text="training minutes (all finished trials)", row=len(names), col=2)
    return fig.update_layout(height=260 * len(names), title="search progress", **LAYOUT)


def diversity(entropy: Mapping[str, Sequence[float]]) -> go.Figure:
    fig = go.Figure()
    for choice, ys in entropy.items():
        fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=list(ys), mode="lines",
                                 name=choice))  # fmt: skip
    return fig.update_layout(
        title="normalised entropy of each choice over the architectures explored so far",
        xaxis_title="architectures explored", yaxis_title="entropy / log(values)",
        yaxis_range=[0, 1.05], **LAYOUT,
    )  # fmt: skip


def importance(imp: Importance) -> go.Figure:
    objs = list(imp.values)
    fig = make_subplots(rows=1, cols=max(len(objs), 1), subplot_titles=objs or ["(none)"])
    for col, o in enumerate(objs, start=1):
        items = list(imp.values[o].items())[::-1]
        fig.add_trace(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
                             name=o, showlegend=False), row=1, col=col)  # fmt: skip
    height = 120 + 22 * max((len(v) for v in imp.values.values()), default=3)
    return fig.update_layout(title=f"choice importance: {imp.method}", height=height, **LAYOUT)


def test_wer(per_test: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Grouped bars: system → test set → WER (fraction)."""
    fig = go.Figure()
    for system, rates in per_test.items():
        fig.add_trace(go.Bar(x=list(rates), y=[100 * v for v in rates.values()], name=system,
                             text=[f"{100 * v:.2f}" for v in rates.values()]))  # fmt: skip
    return fig.update_layout(title="WER per test set", yaxis_title="WER (%)", barmode="group",
                             **LAYOUT)  # fmt: skip


def by_length(rows: Mapping[str, Sequence[Sequence[Any]]]) -> go.Figure:
    """Test set → (bucket, utterances, words, WER) rows, as grouped bars."""
    fig = go.Figure()
    for test, buckets in rows.items():
        fig.add_trace(go.Bar(x=[b[0] for b in buckets], y=[100 * b[3] for b in buckets],
                             name=test, hovertext=[f"{b[1]} utterances, {b[2]} words"
                                                   for b in buckets]))  # fmt: skip
    return fig.update_layout(title="WER by reference length", yaxis_title="WER (%)",
                             barmode="group", **LAYOUT)  # fmt: skip


def error_counts(test: str, subs: Sequence[Sequence[Any]], ins: Sequence[Sequence[Any]],
                 dels: Sequence[Sequence[Any]]) -> go.Figure:  # fmt: skip
    """The most frequent substitutions, insertions and deletions of one test set."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=["substitutions", "insertions",
                                                        "deletions"])  # fmt: skip
    labelled = (
        [(f"{r} → {h}", c) for r, h, c in subs],
        [(w, c) for w, c in ins],
        [(w, c) for w, c in dels],
    )
    for col, items in enumerate(labelled, start=1):
        items = items[::-1]
        fig.add_trace(go.Bar(x=[c for _, c in items], y=[k for k, _ in items], orientation="h",
                             showlegend=False), row=1, col=col)  # fmt: skip
    return fig.update_layout(title=f"{test}: most frequent errors", height=420, **LAYOUT)


def significance(names: Sequence[str], p: Sequence[Sequence[float | None]], test: str) -> go.Figure:
    """Bootstrap p-values of every pair (row system against column system)."""
    text = [["" if v is None else f"{v:.3f}" for v in row] for row in p]
    fig = go.Figure(go.Heatmap(z=p, x=list(names), y=list(names), text=text,
                               texttemplate="%{text}", zmin=0, zmax=0.2,
                               colorscale="RdBu", colorbar={"title": "p"}))  # fmt: skip
    return fig.update_layout(title=f"{test}: paired bootstrap p-value of the WER difference",
                             **LAYOUT)  # fmt: skip


__all__ = [
    "by_length",
    "diversity",
    "error_counts",
    "evolution",
    "hover",
    "importance",
    "pareto",
    "progress",
    "significance",
    "test_wer",
]
