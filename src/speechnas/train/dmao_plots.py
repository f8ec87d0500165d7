"""The DMAO report as PNG: the per-layer allocation before and after, and the loss around it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechnas.nn.spec import decode
from speechnas.space.arch import Arch
from speechnas.train.plots import pyplot


def _widths(arch_json: str) -> dict[str, list[int]]:
    spec = decode(Arch.from_json(arch_json))
    out = {
        "attention heads": [ly.heads for ly in spec.layer],
        "feed-forward width": [ly.ffn_dim for ly in spec.layer],
    }
    if spec.encoder == "conformer":
        out["convolution channels"] = [ly.conv_dim for ly in spec.layer]
    else:
        out["cgMLP width"] = [ly.cgmlp_dim for ly in spec.layer]
    return out


def plot_allocation(report: Mapping[str, Any], losses: Sequence[float], path: Path) -> Path:
    """Bars per layer of heads, convolution (or cgMLP) and feed-forward width before and after
    the reallocation, and the training loss of every step with the reallocation step marked."""
    before, after = _widths(report["arch_before"]), _widths(report["arch_after"])
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), constrained_layout=True)
    for ax, name in zip(axes, before, strict=False):
        layers = np.arange(1, len(before[name]) + 1)
        ax.bar(layers - 0.2, before[name], width=0.4, label="before")
        ax.bar(layers + 0.2, after[name], width=0.4, label="after")
        ax.set(xlabel="layer", title=name, xticks=layers)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    ax = axes[3]
    if losses:
        steps = np.arange(1, len(losses) + 1)
        ax.plot(steps, losses, lw=0.6, alpha=0.4, label="per step")
        k = max(1, len(losses) // 50)
        if len(losses) > k:
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], smooth, lw=1.2, label=f"mean of {k}")
        ax.set_yscale("log")
    ax.axvline(report["step"], color="k", ls="--", lw=1, label="reallocation")
    ax.set(xlabel="step", ylabel="training loss", title="loss around the reallocation")
    ax.legend(fontsize=8)
    fig.suptitle(
        f"DMAO at step {report['step']}: {len(report['dropped'])} groups dropped, "
        f"{len(report['duplicated'])} duplicated, {report['params_before']:,} → "
        f"{report['params_after']:,} parameters"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
