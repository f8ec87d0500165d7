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
from speechnas.nn.blocks.attention_impl import ATTENTION_IMPLS, QKV_LAYOUTS
from speechnas.nn.blocks.norm import NORMS
from speechnas.nn.blocks.subsampling import FACTORS, receptive_field
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
    "StreamGeometry",
    "decode",
]

FRONTENDS: dict[str, FeatureConfig] = {
    "fbank40": FeatureConfig(kind="fbank", n_mels=40),
    "fbank64": FeatureConfig(kind="fbank", n_mels=64),
    "fbank80": FeatureConfig(kind="fbank", n_mels=80),
    "mfcc40": FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=40),
    "learnable": FeatureConfig(kind="waveform"),
    # Kaldi filterbank by kaldi-native-fbank, as sherpa-onnx computes it (20 Hz to Nyquist - 400)
    "knf80": FeatureConfig(kind="knf", n_mels=80, f_min=20.0, f_max=-400.0),
}
#: Filters of the learnable (waveform) front end.
LEARNABLE_FILTERS = 80
ENCODERS = ("conformer", "transformer", "ebranchformer", "lstm", "blstm", "cnn")
ATTENTION_ENCODERS = ("conformer", "transformer", "ebranchformer")
DECODERS = ("ctc", "rnnt", "attention")

#: The value of every optional choice an architecture may leave out. ``ffn_dim`` defaults to
#: 4 · d_model, and three per-layer widths default to values derived from the others (see
#: :func:`decode`): ``layer_heads`` (attention heads of each layer, each ``d_model / heads``
#: wide) to ``heads``, ``conv_dim`` (channels of the Conformer convolution module) to
#: ``d_model``, and ``cgmlp_dim`` (the E-Branchformer cgMLP's up-projection) to ``ffn_dim``.
#: They let layers differ, as a DMAO reallocation (:mod:`speechnas.train.dmao`) makes them.
#: ``attention_impl`` and ``qkv`` (attention encoders) choose how attention is computed, not
#: what: the same parameters and outputs under every choice (:mod:`speechnas.nn.blocks.
#: attention_impl`); the defaults are the implementation every earlier architecture used.
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
    "lookahead": 0,
    "attention_impl": "sdpa",
    "qkv": "packed",
}


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """The per-layer settings of one encoder layer (those that apply to its family)."""

    ffn_dim: int
    ffn_lowrank: int
    kernel: int
    module_order: str
    heads: int = 0  # attention heads of this layer, each ArchSpec.head_dim wide (0: none)
    conv_dim: int = 0  # Conformer convolution-module channels (0: not a Conformer)
    cgmlp_dim: int = 0  # E-Branchformer cgMLP up-projection width, even (0: not one)


@dataclass(frozen=True, slots=True)
class StreamGeometry:
    """How a streaming architecture consumes its input, in feature frames and milliseconds.

    Chunk ``i`` covers encoder frames ``[i·chunk, (i+1)·chunk)``. It is computed from one window
    of ``window`` feature frames starting at feature frame ``i·hop``: the chunk, its look-ahead
    and the subsampling's context (``receptive - factor`` frames; successive windows overlap by
    that much, the subsampling's frame cache).
    """

    chunk: int  # encoder frames per chunk
    lookahead: int  # encoder frames of future context
    factor: int  # subsampling factor
    receptive: int  # feature frames one encoder frame sees through the subsampling
    frame_ms: float  # feature frame shift
    feature_window_ms: float  # samples one feature frame reads (its FFT length), in ms

    @property
    def hop(self) -> int:
        """Feature frames between the starts of two chunks' windows."""
        return self.chunk * self.factor

    @property
    def window(self) -> int:
        """Feature frames of one chunk's window."""
        return (self.chunk + self.lookahead - 1) * self.factor + self.receptive

    @property
    def chunk_ms(self) -> float:
        return self.hop * self.frame_ms

    @property
    def lookahead_ms(self) -> float:
        return self.lookahead * self.factor * self.frame_ms

    @property
    def algorithmic_latency_ms(self) -> float:
        """Audio the first frame of a chunk waits for before the chunk can be computed: the
        chunk, its look-ahead, the subsampling's extra context and the analysis window's
        overhang."""
        overhang = (self.receptive - self.factor) * self.frame_ms
        return self.chunk_ms + self.lookahead_ms + overhang + self.feature_window_ms - self.frame_ms


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
    head_dim: int  # width of one attention head: d_model / heads (0 without attention)
    attention: str  # "abs", "rel" or "local" (attention encoders)
    window: int | None  # local attention half-width
    macaron: bool
    streaming: bool
    chunk_size: int | None  # frames after subsampling, when streaming
    left_chunks: int | None
    lookahead: int  # frames (after subsampling) of future context, streaming only
    layer: tuple[LayerSpec, ...]
    lstm_hidden: int
    cnn_dilation: int
    cnn_se: bool
    decoder: str
    pred_dim: int
    decoder_layers: int
    ctc_weight: float
    norm: str  # "layernorm", or "mad_prenorm" (every LayerNorm pre-normalised by its MAD)
    attention_impl: str = "sdpa"  # how attention products run: sdpa, matmul, einsum, split_heads
    qkv: str = "packed"  # the q/k/v projection: one packed matmul, or three ("split")

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
    def stream_geometry(self) -> StreamGeometry:
        """How the architecture streams; a ValueError for a non-streaming one."""
        if not self.streaming or self.chunk_size is None:
            raise ValueError(
                f"arch: a {self.encoder} encoder with streaming: false does not stream; set "
                "streaming: true with chunk_size and left_chunks"
            )
        if self.waveform_input:
            raise ValueError(
                "frontend: the learnable waveform frontend does not stream yet; use a "
                "filterbank or MFCC frontend for a streaming architecture"
            )
        return StreamGeometry(
            chunk=self.chunk_size,
            lookahead=self.lookahead,
            factor=self.subsampling_factor,
            receptive=receptive_field(self.subsampling_factor),
            frame_ms=self.features.hop_ms,
            feature_window_ms=1000 * self.features.n_fft / self.features.sample_rate,
        )

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


def _layer_widths(
    g: Mapping[str, Any], encoder: str, d: int, heads: int, ffn: list[int]
) -> list[dict[str, int]]:
    """Per layer: its heads, Conformer conv-module width and cgMLP width (0 where they do not
    apply); an architecture may only set the fields its encoder has."""
    n = len(ffn)
    allowed = {"layer_heads": ("conformer", "ebranchformer"), "conv_dim": ("conformer",),
               "cgmlp_dim": ("ebranchformer",)}  # fmt: skip
    for name, encoders in allowed.items():
        if name in g and encoder not in encoders:
            raise ValueError(
                f"{name}: only a {' or '.join(encoders)} encoder has it, not {encoder!r}; "
                f"drop the field"
            )
    per_heads = _per_layer(g, "layer_heads", heads, n) if encoder in allowed["layer_heads"] else []
    conv = _per_layer(g, "conv_dim", d, n) if encoder == "conformer" else []
    cgmlp = _per_layer(g, "cgmlp_dim", None, n) if encoder == "ebranchformer" else []
    out: list[dict[str, int]] = []
    for i in range(n):
        w = {"heads": heads if encoder in ATTENTION_ENCODERS else 0}
        if per_heads:
            w["heads"] = _int("layer_heads", per_heads[i])
        if conv:
            w["conv_dim"] = _int("conv_dim", conv[i])
        if cgmlp:
            c = ffn[i] if cgmlp[i] is None else _int("cgmlp_dim", cgmlp[i], minimum=2)
            if c % 2:
                raise ValueError(
                    f"cgmlp_dim: {c} must be even (the cgMLP gates one half by the other)"
                )
            w["cgmlp_dim"] = c
        out.append(w)
    return out


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
    lookahead = _int("lookahead", g["lookahead"], minimum=0)
    if streaming and encoder == "blstm":
        raise ValueError("streaming: a blstm encoder reads the future; stream an lstm instead")
    if lookahead and not streaming:
        raise ValueError("lookahead: only a streaming architecture (streaming: true) has one")
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
    impl = _choice("attention_impl", g["attention_impl"], ATTENTION_IMPLS)
    qkv = _choice("qkv", g["qkv"], QKV_LAYOUTS)
    for name in ("attention_impl", "qkv"):
        if name in arch and not attention_based:
            raise ValueError(
                f"{name}: only an attention encoder ({', '.join(ATTENTION_ENCODERS)}) has it, "
                f"not {encoder!r}; drop the field"
            )
    window = _int("attention_window", g.get("attention_window")) if attention == "local" else None
    ffn = [_int("ffn_dim", f) for f in _per_layer(g, "ffn_dim", 4 * d, n)]
    rank = _per_layer(g, "ffn_lowrank", DEFAULTS["ffn_lowrank"], n)
    kernel = _per_layer(g, "conv_kernel", DEFAULTS["conv_kernel"], n)
    order = _per_layer(g, "module_order", DEFAULTS["module_order"], n)
    widths = _layer_widths(g, encoder, d, heads, ffn)
    layers = tuple(
        LayerSpec(
            ffn_dim=ffn[i],
            ffn_lowrank=_int("ffn_lowrank", rank[i], minimum=0),
            kernel=_int("conv_kernel", kernel[i]),
            module_order=_choice("module_order", order[i], ("mhsa_first", "conv_first")),
            **widths[i],
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
        head_dim=d // heads if heads else 0,
        attention=attention,
        window=window,
        macaron=bool(g["macaron"]),
        streaming=streaming,
        chunk_size=_int("chunk_size", g.get("chunk_size")) if streaming else None,
        left_chunks=_int("left_chunks", g.get("left_chunks"), minimum=0) if streaming else None,
        lookahead=lookahead,
        layer=layers,
        lstm_hidden=_int("lstm_hidden", g["lstm_hidden"]) if encoder in ("lstm", "blstm") else 0,
        cnn_dilation=_int("cnn_dilation", g["cnn_dilation"]),
        cnn_se=bool(g["cnn_se"]),
        decoder=decoder,
        pred_dim=_int("pred_dim", g["pred_dim"]),
        decoder_layers=_int("decoder_layers", g["decoder_layers"]),
        ctc_weight=float(g["ctc_weight"]),
        norm=_choice("norm", g["norm"], NORMS),
        attention_impl=impl,
        qkv=qkv,
    )
