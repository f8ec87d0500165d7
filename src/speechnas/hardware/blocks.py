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
from dataclasses import dataclass, field
from typing import Any

from speechnas.nn.blocks import EBranchformerLayerConfig
from speechnas.nn.decoders import RNNTDecoder
from speechnas.nn.spec import LEARNABLE_FILTERS, ArchSpec, decode

__all__ = ["AXES", "CALLS", "RUN_BLOCK", "Block", "Use", "decompose", "grouped"]

#: What a block's length counts: input samples (learnable front end), input feature frames
#: (subsampling), encoder frames, nothing (one decoding step), or a streamed chunk's one fixed
#: shape (:mod:`speechnas.hardware.stream_blocks`).
AXES = ("samples", "input_frames", "frames", "step", "chunk")
#: How often a block runs per utterance: once, once per greedy prediction step (U + 1), or
#: once per joiner call (T' + U).
CALLS = ("utterance", "prediction_steps", "joiner_calls")

_MERGE_KERNEL = EBranchformerLayerConfig.__dataclass_fields__["merge_kernel"].default
_PRED_LAYERS = int(inspect.signature(RNNTDecoder).parameters["pred_layers"].default)


@dataclass(frozen=True, slots=True)
class Block:
    """One measurable unit: a kind and the settings its cost depends on. ``source``, not part
    of its identity, is an architecture the block can be cut from (streaming blocks)."""

    kind: str
    params: tuple[tuple[str, Any], ...]
    axis: str
    source: Any = field(default=None, compare=False, repr=False)

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


def _impl(spec: ArchSpec) -> dict[str, str]:
    """The attention implementation's key entries: none for the default (so the blocks of
    earlier calibrations keep their keys), else what differs from it."""
    out = {}
    if spec.attention_impl != "sdpa":
        out["impl"] = spec.attention_impl
    if spec.qkv != "packed":
        out["qkv"] = spec.qkv
    return out


def _mhsa(spec: ArchSpec, heads: int) -> Block:
    """Self-attention with ``heads`` heads of the model's head width: the head width is part of
    the key only when the heads do not span d_model (a layer with more or fewer heads).

    A streaming encoder's attention runs under its chunk mask (``chunk``, ``left`` in the key),
    which costs more than an open mask of the same shape: ONNX Runtime, which does not flush
    denormals to zero by default, slows down on the masked scores (``bench/attention_masks.py``
    on a 2-core Intel Xeon, d 144, 4 heads, a 16-frame chunk mask with 4 left chunks: 1.34x the
    open mask's time at 125 frames, 1.64x at 250, 1.94x at 500; with flush-to-zero, 1.00).
    Timed under an open mask, a 12-layer streaming Transformer at 10 s was under-predicted by
    about 30%."""
    wide = {} if heads == spec.heads else {"head_dim": spec.head_dim}
    chunked = {"chunk": spec.chunk_size, "left": spec.left_chunks} if spec.streaming else {}
    return _block(
        "mhsa", d=spec.d_model, heads=heads, pos=spec.attention, window=spec.window, **wide,
        **_impl(spec), **chunked,
    )  # fmt: skip


def _attention_layers(spec: ArchSpec) -> list[Block]:
    d = spec.d_model
    causal = spec.causal
    out: list[Block] = []
    for ly in spec.layer:
        ff = _block("ffn", d=d, hidden=ly.ffn_dim, rank=ly.ffn_lowrank)
        mhsa = _mhsa(spec, ly.heads)
        if spec.encoder == "conformer":
            wide = {} if ly.conv_dim == d else {"channels": ly.conv_dim}
            conv = _block("convmod", d=d, kernel=ly.kernel, causal=causal, **wide)
            out += [ff] * (2 if spec.macaron else 1) + [mhsa, conv, _block("norm", d=d)]
        elif spec.encoder == "transformer":
            out += [mhsa, ff]
        else:  # ebranchformer: cgMLP width = cgmlp_dim (ffn_dim unless set)
            cgmlp = _block("cgmlp", d=d, hidden=ly.cgmlp_dim, kernel=ly.kernel, causal=causal)
            merge = _block("merge", d=d, kernel=_MERGE_KERNEL, causal=causal)
            out += [ff, ff, mhsa, cgmlp, merge, _block("norm", d=d)]
    return out


def _encoder(spec: ArchSpec) -> list[Block]:
    d = spec.d_model
    kind = spec.encoder
    if spec.attention_based:
        stack = _block(
            "stack",
            d=d,
            absolute=spec.absolute_positions,
            chunked=spec.streaming,
            final_norm=kind == "transformer",
            **({"additive": True} if spec.attention_impl != "sdpa" else {}),
        )
        return [stack, *_attention_layers(spec)]
    if kind in ("lstm", "blstm"):
        hidden, bidir = spec.lstm_hidden, kind == "blstm"
        # the first layer with the final norm and padding mask; the others alone
        first = _block("lstm_first", d=d, hidden=hidden, bidirectional=bidir)
        rest = _block("lstm_layer", d=d, hidden=hidden, bidirectional=bidir)
        return [first] + [rest] * (spec.layers - 1)
    layers = [
        _block("sepconv", d=d, kernel=ly.kernel, dilation=spec.cnn_dilation, se=spec.cnn_se,
               causal=spec.causal)
        for ly in spec.layer
    ]  # fmt: skip
    return [_block("cnn_stack", d=d), *layers]


def grouped(blocks: Iterable[Block], calls: str = "utterance") -> list[Use]:
    counts: dict[Block, int] = {}
    for b in blocks:
        counts[b] = counts.get(b, 0) + 1
    return [Use(b, n, calls) for b, n in counts.items()]


def decompose(arch: Mapping[str, Any], *, vocab_size: int) -> list[Use]:
    """The blocks of one utterance's inference (see :mod:`speechnas.hardware.profiler` for the
    definition of latency), grouped: identical blocks appear once with their count."""
    spec = decode(arch)
    d = spec.d_model
    blocks: list[Block] = []
    if spec.waveform_input:
        blocks.append(_block("frontend", "samples", filters=LEARNABLE_FILTERS))
    blocks.append(
        _block(
            "subsampling",
            "input_frames",
            in_dim=spec.input_dim,
            d=d,
            factor=spec.subsampling_factor,
            depthwise=spec.depthwise_subsampling,
            channels=spec.subsampling_channels,
        )
    )
    blocks += _encoder(spec)
    if spec.decoder in ("ctc", "attention"):  # attention/hybrid models decode through CTC
        return grouped([*blocks, _block("ctc", d=d, vocab=vocab_size)])
    p = spec.pred_dim
    pred = _block("predictor", "step", pred_dim=p, layers=_PRED_LAYERS, vocab=vocab_size)
    joiner = _block("joiner", "step", d=d, pred_dim=p, vocab=vocab_size)
    return [*grouped(blocks), Use(pred, 1, "prediction_steps"), Use(joiner, 1, "joiner_calls")]


#: The block that measures the fixed cost of one run of the runtime (a trivial graph).
RUN_BLOCK = Block("run", (), "frames")
