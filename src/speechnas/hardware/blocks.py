"""An architecture as the building blocks its latency is the sum of.

:func:`decompose` mirrors :mod:`speechnas.nn.build`: the learnable front end, the subsampling
at its input width and factor, the encoder stack's own work (masks, positions, final norm),
each encoder layer as the sub-layer blocks it runs (feed-forward, self-attention, convolution
module, norm, ...; their order inside a layer does not change the work), the LSTM stack layer
by layer, and the output head. A block's key names every setting its cost depends on, so one
measurement serves every layer and architecture that shares it: the blocks of a whole space
number a few hundred while its layer configurations number tens of thousands.

The modules that realise the blocks are in :mod:`speechnas.hardware.block_modules`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from speechnas.nn.blocks import EBranchformerLayerConfig
from speechnas.nn.build import LEARNABLE_FILTERS, _per_layer, feature_config
from speechnas.nn.cost import DEFAULT_SUBSAMPLING_CHANNELS
from speechnas.nn.decoders import RNNTDecoder

__all__ = ["AXES", "CALLS", "RUN_BLOCK", "Block", "Use", "decompose"]

#: What a block's length counts: input samples (learnable front end), input feature frames
#: (subsampling), encoder frames, or nothing (one decoding step).
AXES = ("samples", "input_frames", "frames", "step")
#: How often a block runs per utterance: once, once per greedy prediction step (U + 1), or
#: once per joiner call (T' + U).
CALLS = ("utterance", "prediction_steps", "joiner_calls")

_MERGE_KERNEL = EBranchformerLayerConfig.__dataclass_fields__["merge_kernel"].default
_PRED_LAYERS = int(inspect.signature(RNNTDecoder).parameters["pred_layers"].default)


@dataclass(frozen=True, slots=True)
class Block:
    """One measurable unit: a kind and the settings its cost depends on."""

    kind: str
    params: tuple[tuple[str, Any], ...]
    axis: str

    @property
    def key(self) -> str:
        """A stable, readable identity, e.g. ``ffn(d=144,hidden=512,rank=0)``."""
        return f"{self.kind}({','.join(f'{k}={v}' for k, v in self.params)})"

    def get(self, name: str) -> Any:
        return dict(self.params)[name]


@dataclass(frozen=True, slots=True)
class Use:
    """A block inside an architecture: ``times`` copies, each run ``calls`` per utterance."""

    block: Block
    times: int = 1
    calls: str = "utterance"


def _block(kind: str, axis: str = "frames", **params: Any) -> Block:
    return Block(kind, tuple(params.items()), axis)


def _attention_layers(arch: Mapping[str, Any], d: int, causal: bool) -> list[Block]:
    kind = arch["encoder"]
    n = int(arch["layers"])
    ffn = _per_layer(arch, "ffn_dim", 4 * d)
    rank = _per_layer(arch, "ffn_lowrank", 0)
    kernel = _per_layer(arch, "conv_kernel", 15)
    attention = arch.get("attention", "rel")
    window = int(arch["attention_window"]) if attention == "local" else None
    mhsa = _block("mhsa", d=d, heads=int(arch["heads"]), pos=attention, window=window)
    out: list[Block] = []
    for i in range(n):
        ff = _block("ffn", d=d, hidden=int(ffn[i]), rank=int(rank[i]))
        if kind == "conformer":
            macaron = bool(arch.get("macaron", True))
            conv = _block("convmod", d=d, kernel=int(kernel[i]), causal=causal)
            out += [ff] * (2 if macaron else 1) + [mhsa, conv, _block("norm", d=d)]
        elif kind == "transformer":
            out += [mhsa, ff]
        else:  # ebranchformer: cgMLP width = ffn_dim, as the builder sets it
            cgmlp = _block("cgmlp", d=d, hidden=int(ffn[i]), kernel=int(kernel[i]), causal=causal)
            merge = _block("merge", d=d, kernel=_MERGE_KERNEL, causal=causal)
            out += [ff, ff, mhsa, cgmlp, merge, _block("norm", d=d)]
    return out


def _encoder(arch: Mapping[str, Any], d: int) -> list[Block]:
    kind = arch["encoder"]
    n = int(arch["layers"])
    streaming = bool(arch.get("streaming", False))
    if kind in ("conformer", "transformer", "ebranchformer"):
        stack = _block(
            "stack",
            d=d,
            absolute=arch.get("attention", "rel") != "rel",
            chunked=streaming,
            final_norm=kind == "transformer",
        )
        return [stack, *_attention_layers(arch, d, streaming)]
    if kind in ("lstm", "blstm"):
        hidden, bidir = int(arch["lstm_hidden"]), kind == "blstm"
        width = 2 * hidden if bidir else hidden
        first = _block("lstm_first", d=d, hidden=hidden, bidirectional=bidir)
        return [first] + [_block("lstm_layer", d_in=width, hidden=hidden, bidirectional=bidir)] * (
            n - 1
        )
    if kind == "cnn":
        kernel = _per_layer(arch, "conv_kernel", 15)
        layers = [
            _block(
                "sepconv",
                d=d,
                kernel=int(kernel[i]),
                dilation=int(arch.get("cnn_dilation", 1)),
                se=bool(arch.get("cnn_se", False)),
                causal=streaming,
            )
            for i in range(n)
        ]
        return [_block("cnn_stack", d=d), *layers]
    raise ValueError(
        f"encoder: {kind!r} is not one of conformer, transformer, ebranchformer, lstm, blstm, cnn"
    )


def _grouped(blocks: Iterable[Block], calls: str = "utterance") -> list[Use]:
    counts: dict[Block, int] = {}
    for b in blocks:
        counts[b] = counts.get(b, 0) + 1
    return [Use(b, n, calls) for b, n in counts.items()]


def decompose(arch: Mapping[str, Any], *, vocab_size: int) -> list[Use]:
    """The blocks of one utterance's inference (see :mod:`speechnas.hardware.profiler` for the
    definition of latency), grouped: identical blocks appear once with their count."""
    d = int(arch["d_model"])
    features = feature_config(arch)
    blocks: list[Block] = []
    in_dim = features.dim
    if features.kind == "waveform":
        blocks.append(_block("frontend", "samples", filters=LEARNABLE_FILTERS))
        in_dim = LEARNABLE_FILTERS
    blocks.append(
        _block(
            "subsampling",
            "input_frames",
            in_dim=in_dim,
            d=d,
            factor=int(arch.get("subsampling_factor", 4)),
            depthwise=arch.get("subsampling", "conv2d") == "dwconv2d",
            channels=DEFAULT_SUBSAMPLING_CHANNELS,
        )
    )
    blocks += _encoder(arch, d)
    decoder = arch.get("decoder", "ctc")
    if decoder in ("ctc", "attention"):  # attention/hybrid models decode through the CTC head
        return _grouped([*blocks, _block("ctc", d=d, vocab=vocab_size)])
    if decoder != "rnnt":
        raise ValueError(f"decoder: {decoder!r} is not one of ctc, rnnt, attention")
    p = int(arch.get("pred_dim", 256))
    pred = _block("predictor", "step", pred_dim=p, layers=_PRED_LAYERS, vocab=vocab_size)
    joiner = _block("joiner", "step", d=d, pred_dim=p, vocab=vocab_size)
    return [*_grouped(blocks), Use(pred, 1, "prediction_steps"), Use(joiner, 1, "joiner_calls")]


#: The block that measures the fixed cost of one run of the runtime (a trivial graph).
RUN_BLOCK = Block("run", (), "frames")
