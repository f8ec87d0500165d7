"""Training curves as PNG (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib's pyplot on the headless backend, imported on first use: a process that
    trains without drawing (a search's trial workers) does not pay its import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(
    history: Sequence[dict[str, Any]], marks: Sequence[dict[str, Any]], path: Path
) -> Path:
    """Loss and dev WER per epoch against training minutes, plus test WERs at the marks."""
    plt = pyplot()
    fig, (ax_loss, ax_wer) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    minutes = [h["minutes"] for h in history]
    ax_loss.plot(minutes, [h["loss"] for h in history], marker="o")
    ax_loss.set(xlabel="training minutes", ylabel="mean CTC loss per utterance", title="loss")
    ax_loss.set_yscale("log")
    ax_wer.plot(minutes, [100 * h["dev_wer"] for h in history], marker="o", label="dev (epochs)")
    names = sorted({k for m in marks for k in m["results"] if k != "dev"})
    for name in names:
        xs = [m["minutes"] for m in marks if name in m["results"]]
        ys = [100 * m["results"][name]["wer"] for m in marks if name in m["results"]]
        ax_wer.plot(xs, ys, marker="s", linestyle="--", label=name)
    ax_wer.set(xlabel="training minutes", ylabel="WER %", title="word error rate")
    ax_wer.set_ylim(bottom=0)
    ax_wer.grid(alpha=0.3)
    ax_wer.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
