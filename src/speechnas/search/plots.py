"""Search figures as PNG (matplotlib, headless): the Pareto front and hypervolume over time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the headless backend

from speechnas.search.objectives import is_error_rate


def objective_scale(objective: str) -> tuple[float, str]:
    """Display factor and axis label of an objective."""
    if is_error_rate(objective):
        kind, _, test = objective.partition(":")
        name = {
            "dev_wer": "dev WER",
            "dev_cer": "dev CER",
            "stream_dev_wer": "streaming dev WER",
        }.get(objective)
        name = name or f"{kind.upper()} on {test}"
        return 100.0, f"{name} (%)"
    labels = {
        "latency": "latency (ms)",
        "params": "parameters (M)",
        "macs": "MACs (M)",
        "memory": "weights (MB)",
    }
    if objective in ("params", "macs"):
        return 1e-6, labels[objective]
    return 1.0, labels.get(objective, objective)


def plot_pareto(
    points: Sequence[dict[str, Any]],
    front: Sequence[dict[str, Any]],
    objectives: Sequence[str],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """Every result (``values``, ``rung``) coloured by rung, the front as a staircase.

    Two or more objectives: the first two as axes (a note names any others). One objective:
    the value against the trial number.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.6), constrained_layout=True)
    rungs = sorted({p["rung"] for p in points})
    cmap = plt.get_cmap("viridis", max(len(rungs), 2))
    if len(objectives) >= 2:
        (fx, lx), (fy, ly) = objective_scale(objectives[0]), objective_scale(objectives[1])
        for k, r in enumerate(rungs):
            xs = [p["values"][0] * fx for p in points if p["rung"] == r]
            ys = [p["values"][1] * fy for p in points if p["rung"] == r]
            ax.scatter(xs, ys, color=cmap(k), s=22, alpha=0.7, label=f"rung {r}")
        fr = sorted(front, key=lambda p: p["values"][0])
        if fr:
            fxs = [p["values"][0] * fx for p in fr]
            fys = [p["values"][1] * fy for p in fr]
            ax.step(fxs, fys, where="post", color="crimson", lw=1.2)
            ax.scatter(
                fxs,
                fys,
                facecolors="none",
                edgecolors="crimson",
                s=70,
                label="Pareto front",
            )
        ax.set(xlabel=lx, ylabel=ly)
        if len(objectives) > 2:
            ax.text(0.99, 0.99, "also: " + ", ".join(objectives[2:]), transform=ax.transAxes,
                    ha="right", va="top", fontsize=8)  # fmt: skip
    else:
        f, label = objective_scale(objectives[0])
        for k, r in enumerate(rungs):
            sel = [p for p in points if p["rung"] == r]
            ax.scatter([p["trial"] for p in sel], [p["values"][0] * f for p in sel],
                       color=cmap(k), s=22, label=f"rung {r}")  # fmt: skip
        ax.set(xlabel="trial", ylabel=label)
    ax.set_title(title or "search results")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_hypervolume(series: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Normalised hypervolume against completed trials and against minutes since the start."""
    fig, (ax_n, ax_t) = plt.subplots(1, 2, figsize=(9.6, 3.6), constrained_layout=True)
    ax_n.step([s["completed"] for s in series], [s["hv"] for s in series], where="post")
    ax_n.set(xlabel="completed trials", ylabel="hypervolume (normalised)")
    ax_t.step([s["minutes"] for s in series], [s["hv"] for s in series], where="post")
    ax_t.set(xlabel="minutes since the first trial started", ylabel="hypervolume (normalised)")
    for ax in (ax_n, ax_t):
        ax.set_ylim(0, max([s["hv"] for s in series], default=1.0) * 1.1 or 1.0)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "hypervolume over the search")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["objective_scale", "plot_hypervolume", "plot_pareto"]
