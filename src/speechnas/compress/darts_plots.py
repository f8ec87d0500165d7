"""The figure of a compression run (matplotlib, headless): per-layer choice probabilities as a
heat map with the chosen candidate marked, and the chosen FFN width and rank per layer next to
the trained ones, so a glance shows where the search was sure and what it cut."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the headless backend
import numpy as np

__all__ = ["plot_choices"]


def plot_choices(result: Mapping[str, Any], path: Path) -> Path:
    """Writes the PNG of a run's record (``DartsResult.to_dict()``, or a ``darts.json`` read
    back) to ``path`` and returns it."""
    probs = np.asarray(result["probabilities"])  # (layers, candidates)
    layers, n_cand = probs.shape
    fig, (ax_p, ax_c) = plt.subplots(
        1, 2, figsize=(4 + 0.45 * n_cand + 4, 1.5 + 0.45 * layers), constrained_layout=True,
        gridspec_kw={"width_ratios": [max(n_cand, 3), 5]},
    )  # fmt: skip
    im = ax_p.imshow(probs, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for row in result["choice"]:
        ci = result["candidates"].index(row["candidate"])
        ax_p.add_patch(plt.Rectangle((ci - 0.5, row["layer"] - 0.5), 1, 1, fill=False,
                                     edgecolor="red", linewidth=2))  # fmt: skip
    ax_p.set_xticks(range(n_cand), result["candidates"], rotation=60, ha="right", fontsize=8)
    ax_p.set_yticks(range(layers), [f"layer {i}" for i in range(layers)])
    cfg = result["config"]
    mixing = "Gumbel-softmax" if cfg["gumbel"] else "softmax"
    ax_p.set_title(f"choice probabilities (η={cfg['eta']:g}, {mixing}, {cfg['schedule']})")
    fig.colorbar(im, ax=ax_p, shrink=0.8)
    base = result["base_arch"]
    trained = _per_layer(base.get("ffn_dim", 4 * int(base["d_model"])), layers)
    x = np.arange(layers)
    ax_c.bar(x - 0.2, trained, width=0.4, color="lightgray", label="trained ffn_dim")
    ax_c.bar(x + 0.2, [r["ffn_dim"] for r in result["choice"]], width=0.4, label="chosen ffn_dim")
    ranks = [r["ffn_lowrank"] for r in result["choice"]]
    ax_c.plot(x, ranks, "o", color="red", label="chosen rank (0 = full)")
    ax_c.set(xlabel="layer", ylabel="units", xticks=x)
    p = result["params"]
    ax_c.set_title(
        f"params {p['total_before'] / 1e6:.2f} M → {p['total_after'] / 1e6:.2f} M "
        f"(FFN ×{p['ffn_ratio']:.2f})"
    )
    ax_c.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _per_layer(value: object, layers: int) -> list[int]:
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    return [int(value)] * layers  # type: ignore[call-overload]
