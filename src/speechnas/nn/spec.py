"""An architecture decoded once: the typed :class:`ArchSpec` every consumer reads.

An :class:`~speechnas.space.Arch` is a plain mapping from choice names to values, as a search
space samples it: optional choices may be missing, per-layer choices may be one value for all
layers. :func:`decode` resolves it in one place — defaults applied, per-layer values expanded to
one entry per layer, values checked — and the builder (:mod:`speechnas.nn.build`), the cost model
(:mod:`speechnas.nn.cost`) and the latency block decomposition
(:mod:`speechnas.hardware.blocks`) all read the result, so the three can never disagree about
what an architecture means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from speechnas.data.features import FeatureConfig
from speechnas.nn.blocks.norm import NORMS
from speechnas.nn.blocks.subsampling import FACTORS
from speechnas.space.arch import Arch

__all__ = [
    "ATTENTION_ENCODERS",
    "DECODERS",
    "DEFAULTS",
    "ENCODERS",
    "FRONTENDS",
    "LEARNABLE_FILTERS",
    "ArchSpec",
    "LayerSpec",
    "decode",
]

FRONTENDS: dict[str, FeatureConfig] = {
    "fbank40": FeatureConfig(kind="fbank", n_mels=40),
    "fbank64": FeatureConfig(kind="fbank", n_mels=64),
    "fbank80": FeatureConfig(kind="fbank", n_mels=80),
    "mfcc40": FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=40),
    "learnable": FeatureConfig(kind="waveform"),
}
#: Filters of the learnable (waveform) front end.
LEARNABLE_FILTERS = 80
ENCODERS = ("conformer", "transformer", "ebranchformer", "lstm", "blstm", "cnn")
ATTENTION_ENCODERS = ("conformer", "transformer", "ebranchformer")
DECODERS = ("ctc", "rnnt", "attention")

#: The value of every optional choice an architecture may leave out. ``ffn_dim`` defaults to
#: 4 · d_model (see :func:`decode`).
DEFAULTS: dict[str, Any] = {
    "frontend": "fbank80",
    "subsampling": "conv2d",
    "subsampling_factor": 4,
    "subsampling_channels": 32,
    "attention": "rel",
    "streaming": False,
    "macaron": True,
    "module_order": "mhsa_first",
    "ffn_lowrank": 0,
    "conv_kernel": 15,
    "cnn_dilation": 1,
    "cnn_se": False,
    "decoder": "ctc",
    "pred_dim": 256,
    "decoder_layers": 1,
    "ctc_weight": 0.3,
    "norm": "layernorm",
}


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """The per-layer settings of one encoder layer (those that apply to its family)."""

    ffn_dim: int
    ffn_lowrank: int
    kernel: int
    module_order: str


@dataclass(frozen=True, slots=True)
class ArchSpec:
    """One architecture, fully resolved. Build with :func:`decode`."""

    arch: Arch
    frontend: str
    features: FeatureConfig
    subsampling: str  # "conv2d" or "dwconv2d"
    subsampling_factor: int
    subsampling_channels: int
    encoder: str
    d_model: int
    layers: int
    heads: int  # attention heads (attention encoders and the attention decoder), else 0
    attention: str  # "abs", "rel" or "local" (attention encoders)
    window: int | None  # local attention half-width
    macaron: bool
    streaming: bool
    chunk_size: int | None  # frames after subsampling, when streaming
    left_chunks: int | None
    layer: tuple[LayerSpec, ...]
    lstm_hidden: int
    cnn_dilation: int
    cnn_se: bool
    decoder: str
    pred_dim: int
    decoder_layers: int
    ctc_weight: float
    norm: str  # "layernorm", or "mad_prenorm" (every LayerNorm pre-normalised by its MAD)

    @property
    def depthwise_subsampling(self) -> bool:
        return self.subsampling == "dwconv2d"

    @property
    def waveform_input(self) -> bool:
        return self.features.kind == "waveform"

    @property
    def input_dim(self) -> int:
        """Width of what the subsampling reads: the features, or the learnable filters."""
        return LEARNABLE_FILTERS if self.waveform_input else self.features.dim

    @property
    def attention_based(self) -> bool:
        return self.encoder in ATTENTION_ENCODERS

    @property
    def absolute_positions(self) -> bool:
        """Attention stacks add sinusoidal positions at their input unless relative."""
        return self.attention != "rel"

    @property
    def causal(self) -> bool:
        """Streaming models run every convolution causally."""
        return self.streaming


def _choice(owner: str, value: Any, allowed: tuple[Any, ...] | list[Any]) -> Any:
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"{owner}: {value!r} is not one of {list(allowed)}")
    return value


def _int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _per_layer(arch: Mapping[str, Any], name: str, default: Any, n: int) -> list[Any]:
    value = arch.get(name, default)
    if isinstance(value, tuple | list):
        if len(value) != n:
            raise ValueError(f"{name}: {len(value)} per-layer values for {n} layers")
        return list(value)
    return [value] * n


def decode(arch: Mapping[str, Any]) -> ArchSpec:
    """The :class:`ArchSpec` of ``arch``; a ValueError names the field that is missing or wrong."""
    return _decode(arch if isinstance(arch, Arch) else Arch(arch))


@lru_cache(maxsize=4096)
def _decode(arch: Arch) -> ArchSpec:
    for name in ("encoder", "d_model", "layers"):
        if name not in arch:
            raise ValueError(f"arch: {name!r} is required (got fields {sorted(arch)})")
    g = {**DEFAULTS, **arch}
    frontend = _choice("frontend", g["frontend"], list(FRONTENDS))
    encoder = _choice("encoder", g["encoder"], ENCODERS)
    decoder = _choice("decoder", g["decoder"], DECODERS)
    d = _int("d_model", g["d_model"])
    n = _int("layers", g["layers"])
    streaming = bool(g["streaming"])
    attention_based = encoder in ATTENTION_ENCODERS
    heads = 0
    if attention_based:
        if "heads" not in g:
            raise ValueError(f"arch: 'heads' is required for a {encoder} encoder")
        heads = _int("heads", g["heads"])
    elif decoder == "attention":
        heads = _int("heads", g.get("heads", 4))
    if heads and d % heads:
        raise ValueError(f"heads: {heads} does not divide d_model={d}")
    attention = _choice("attention", g["attention"], ("abs", "rel", "local"))
    window = _int("attention_window", g.get("attention_window")) if attention == "local" else None
    ffn = _per_layer(g, "ffn_dim", 4 * d, n)
    rank = _per_layer(g, "ffn_lowrank", DEFAULTS["ffn_lowrank"], n)
    kernel = _per_layer(g, "conv_kernel", DEFAULTS["conv_kernel"], n)
    order = _per_layer(g, "module_order", DEFAULTS["module_order"], n)
    layers = tuple(
        LayerSpec(
            ffn_dim=_int("ffn_dim", ffn[i]),
            ffn_lowrank=_int("ffn_lowrank", rank[i], minimum=0),
            kernel=_int("conv_kernel", kernel[i]),
            module_order=_choice("module_order", order[i], ("mhsa_first", "conv_first")),
        )
        for i in range(n)
    )
    return ArchSpec(
        arch=arch,
        frontend=frontend,
        features=FRONTENDS[frontend],
        subsampling=_choice("subsampling", g["subsampling"], ("conv2d", "dwconv2d")),
        subsampling_factor=int(_choice("subsampling_factor", g["subsampling_factor"], FACTORS)),
        subsampling_channels=_int("subsampling_channels", g["subsampling_channels"]),
        encoder=encoder,
        d_model=d,
        layers=n,
        heads=heads,
        attention=attention,
        window=window,
        macaron=bool(g["macaron"]),
        streaming=streaming,
        chunk_size=_int("chunk_size", g.get("chunk_size")) if streaming else None,
        left_chunks=_int("left_chunks", g.get("left_chunks"), minimum=0) if streaming else None,
        layer=layers,
        lstm_hidden=_int("lstm_hidden", g["lstm_hidden"]) if encoder in ("lstm", "blstm") else 0,
        cnn_dilation=_int("cnn_dilation", g["cnn_dilation"]),
        cnn_se=bool(g["cnn_se"]),
        decoder=decoder,
        pred_dim=_int("pred_dim", g["pred_dim"]),
        decoder_layers=_int("decoder_layers", g["decoder_layers"]),
        ctc_weight=float(g["ctc_weight"]),
        norm=_choice("norm", g["norm"], NORMS),
    )
