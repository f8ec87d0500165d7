"""Checkpoints of the first Conformer-CTC implementation (before one model family).

Those checkpoints hold ``arch: null`` and a ``model`` section of Conformer sizes (``d_model``,
``layers``, ``heads``, ``ffn_dim``, ``conv_kernel``, ``subsampling_channels``). The same network
is a :class:`~speechnas.nn.build.SpeechModel` of a Conformer architecture with absolute positions
(the presets' recipe); its weights only live under other names. :func:`legacy_arch` gives that
architecture and :func:`convert_legacy_state` renames the weights, so such a checkpoint loads
and computes the same outputs on every valid frame.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from speechnas.data.features import FeatureConfig
from speechnas.nn.presets import _COMMON
from speechnas.nn.spec import FRONTENDS
from speechnas.space.arch import Arch

__all__ = ["convert_legacy_state", "is_legacy_meta", "legacy_arch"]

_SIZES = ("d_model", "layers", "heads", "ffn_dim", "conv_kernel")
_HOW = (
    "load it with speechnas 0.1 and retrain, or rebuild it as a preset architecture "
    "(`model: {preset: ...}` in the training config)"
)

# Old name pattern → new name; the encoder's subsampling is stage 0, the Conformer stack stage 1.
_RENAMES: list[tuple[str, str]] = [
    (r"^encoder\.subsampling\.", "encoder.stages.0."),
    (r"^encoder\.blocks\.(\d+)\.ff([12])\.net\.0\.", r"encoder.stages.1.layers.\1.ff\2.norm."),
    (r"^encoder\.blocks\.(\d+)\.ff([12])\.net\.1\.", r"encoder.stages.1.layers.\1.ff\2.up."),
    (r"^encoder\.blocks\.(\d+)\.ff([12])\.net\.3\.", r"encoder.stages.1.layers.\1.ff\2.down."),
    (r"^encoder\.blocks\.(\d+)\.attn\.norm\.", r"encoder.stages.1.layers.\1.attn_norm."),
    (r"^encoder\.blocks\.(\d+)\.conv\.dw\.", r"encoder.stages.1.layers.\1.conv.dw.conv."),
    (r"^encoder\.blocks\.(\d+)\.", r"encoder.stages.1.layers.\1."),
    (r"^ctc\.", "decoder.proj."),
]


def is_legacy_meta(meta: Mapping[str, Any]) -> bool:
    """Whether checkpoint metadata describes the first Conformer-CTC (no architecture)."""
    model = meta.get("model")
    return meta.get("arch") is None and isinstance(model, Mapping) and "d_model" in model


def legacy_arch(model: Mapping[str, Any], features: FeatureConfig, *, where: str) -> Arch:
    """The architecture of a first-implementation checkpoint's ``model`` section."""
    missing = [k for k in _SIZES if k not in model]
    if missing:
        raise ValueError(f"{where}: model section lacks {missing}; cannot convert it ({_HOW})")
    frontend = next((n for n, f in FRONTENDS.items() if f == features), None)
    if frontend is None:
        raise ValueError(
            f"{where}: its features {features.to_dict()} match no front end of the model family "
            f"({sorted(FRONTENDS)}); {_HOW}"
        )
    layers = int(model["layers"])
    values = {
        **_COMMON,
        "frontend": frontend,
        "d_model": int(model["d_model"]),
        "layers": layers,
        "heads": int(model["heads"]),
        "ffn_dim": (int(model["ffn_dim"]),) * layers,
        "conv_kernel": (int(model["conv_kernel"]),) * layers,
    }
    channels = int(model.get("subsampling_channels", 32))
    if channels != 32:
        values["subsampling_channels"] = channels
    return Arch(values)


def convert_legacy_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The first implementation's weights under the model family's names."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        new = name
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, name)
            if n:
                break
        out[new] = tensor
    return out
