"""Which sub-modules keep their bits: bit allocations drawn as a heat map (PNG)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the headless backend
import numpy as np

__all__ = ["plot_allocations"]


def _short(name: str) -> str:
    """encoder.stages.1.layers.3.ff1.up -> L3 ff1.up; the front end and head keep a tag."""
    parts = name.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        return f"L{parts[i + 1]} " + ".".join(parts[i + 2 :])
    if name.startswith("decoder"):
        return "head " + ".".join(parts[1:])
    return "sub " + ".".join(parts[-2:])


def plot_allocations(
    allocations: Mapping[str, Mapping[str, int]], path: str | Path, *, title: str = ""
) -> Path:
    """One row per allocation (label -> sub-module -> bits), one column per sub-module in
    model order, coloured by bit width and labelled with it."""
    if not allocations:
        raise ValueError("allocations: nothing to plot")
    labels = list(allocations)
    modules = list(next(iter(allocations.values())))
    grid = np.array([[allocations[a].get(m, 32) for m in modules] for a in labels], dtype=float)
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(modules)), 1.2 + 0.45 * len(labels)))
    shown = np.log2(grid)
    im = ax.imshow(shown, aspect="auto", cmap="viridis", vmin=1, vmax=5)
    for (r, c), v in np.ndenumerate(grid):
        ax.text(c, r, "f" if v == 32 else f"{int(v)}", ha="center", va="center", fontsize=6,
                color="white" if shown[r, c] < 3 else "black")  # fmt: skip
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xticks(range(len(modules)), [_short(m) for m in modules], rotation=90, fontsize=6)
    cbar = fig.colorbar(im, ax=ax, pad=0.01)
    cbar.set_ticks([1, 2, 3, 5], labels=["2", "4", "8", "32"])
    cbar.set_label("bits")
    ax.set_title(title or "bits per sub-module (f = float)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
