"""Named hand-designed architectures: the Conformer-CTC sizes a user starts from.

Each preset is an ordinary :class:`~speechnas.space.Arch` built by :func:`speechnas.nn.build.build`
like every searched architecture, so training, cost, latency prediction, export and the search
treat a preset and a search result the same way. They are the classic Conformer recipe at three
sizes: macaron feed-forward modules, absolute sinusoidal positions, 2-D convolutional subsampling
by 4 and a CTC head on 80-band filterbanks. ``base`` is the default model of a training config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from speechnas.nn.spec import decode
from speechnas.space.arch import Arch

__all__ = ["PRESETS", "preset", "preset_names"]

_COMMON: dict[str, Any] = {
    "frontend": "fbank80",
    "subsampling": "conv2d",
    "subsampling_factor": 4,
    "encoder": "conformer",
    "attention": "abs",
    "macaron": True,
    "streaming": False,
    "decoder": "ctc",
}


def _conformer(d_model: int, layers: int, heads: int, ffn_dim: int, kernel: int) -> Arch:
    return Arch(
        _COMMON,
        d_model=d_model,
        layers=layers,
        heads=heads,
        ffn_dim=(ffn_dim,) * layers,
        ffn_lowrank=(0,) * layers,
        conv_kernel=(kernel,) * layers,
        module_order=("mhsa_first",) * layers,
    )


_PER_LAYER = ("ffn_dim", "ffn_lowrank", "conv_kernel", "module_order")

PRESETS: dict[str, Arch] = {
    "small": _conformer(96, 4, 4, 256, 15),
    "base": _conformer(144, 6, 4, 384, 15),
    "large": _conformer(192, 8, 4, 768, 31),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def preset(name: str, **overrides: Any) -> Arch:
    """The preset ``name``, with any of its fields replaced (``preset("small", layers=6)``).

    A per-layer field given as one value applies to every layer; when ``layers`` changes, the
    preset's per-layer values are re-expanded to the new depth (they are uniform in a preset).
    """
    if name not in PRESETS:
        raise ValueError(f"model preset {name!r} is unknown; choose from {preset_names()}")
    base: Mapping[str, Any] = PRESETS[name]
    if not overrides:
        return base
    values = dict(base)
    layers = int(overrides.get("layers", base["layers"]))
    for key in _PER_LAYER:
        if key not in overrides:
            values[key] = (base[key][0],) * layers
    for key, value in overrides.items():
        uniform = key in _PER_LAYER and not isinstance(value, list | tuple)
        values[key] = (value,) * layers if uniform else value
    arch = Arch(values)
    decode(arch)  # a wrong override fails here, naming the field
    return arch
