"""A streaming architecture's chunk as the blocks its per-chunk latency is the sum of.

A streamed chunk is not a short utterance: every layer reads its caches (the key/value cache of
``left_chunks`` chunks, the causal convolutions' last inputs, an LSTM's state), attention
spans the cached frames plus the chunk's, and the look-ahead is computed once, after the
subsampling. Pricing a chunk as the full-context model on one chunk's window (the utterance
blocks at a short length) misses all of that. So a chunk is decomposed into

* the **shell**: CMVN, the subsampling over the chunk's window, the look-ahead, the stack's own
  work (the mask over cache and chunk, positions at the stream's offset, final norm), the CTC
  head; for an LSTM stack (no layer-wise state API) the whole recurrent stack is in the shell;
* one **layer** block per distinct encoder layer (its config, the chunk and the cache size),

each cut from a real randomly initialised model of the architecture and run through the real
``streaming_forward`` with full caches (the steady state of a stream). A chunk's shapes are
fixed, so a block is timed at exactly one shape (axis ``chunk``) rather than over a length
grid. The blocks are written by hand here because they are slices of this package's own
streaming code; the calibration and the table are the utterance predictor's.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from speechnas.hardware.blocks import Block, Use, grouped
from speechnas.nn.build import SpeechModel, build
from speechnas.nn.spec import decode
from speechnas.space import Arch

__all__ = ["decompose_stream", "io_block", "stream_block_module"]

#: The axis of blocks timed at their one streaming shape.
CHUNK_AXIS = "chunk"


def _stack(model: SpeechModel) -> nn.Module:
    return model.encoder.stages[-1]


def _layered(model: SpeechModel) -> bool:
    """Whether the stack streams layer by layer (attention and CNN stacks; not the LSTM)."""
    return hasattr(_stack(model), "layers") and hasattr(_stack(model), "layer_cfgs")


def _cache(model: SpeechModel) -> int:
    stack = _stack(model)
    return stack.cache_frames() if hasattr(stack, "cache_frames") else 0


def _check_streaming(arch: Mapping[str, Any]) -> None:
    spec = decode(arch)
    if not spec.streaming or spec.waveform_input:
        raise ValueError(
            "chunk latency: the architecture does not stream (set `chunk` on a streaming "
            "encoder; the learnable waveform front end does not stream)"
        )


def decompose_stream(arch: Mapping[str, Any], *, vocab_size: int) -> list[Use]:
    """The blocks of one steady-state chunk of ``arch`` (a streaming architecture), grouped:
    identical layers appear once with their count. Each block carries ``arch`` as its
    ``source``, from which :func:`stream_block_module` cuts it. Cached per architecture: the
    decomposition builds a model, and a prediction asks for it more than once."""
    _check_streaming(arch)
    return list(_decompose(decode(arch).arch, vocab_size))


@functools.lru_cache(maxsize=256)
def _decompose(arch: Arch, vocab_size: int) -> tuple[Use, ...]:
    spec = decode(arch)
    geo = spec.stream_geometry
    model = build(arch, vocab_size=vocab_size)
    cache = _cache(model)
    shell: dict[str, Any] = {
        "encoder": spec.encoder, "in_dim": spec.input_dim, "d": spec.d_model,
        "factor": spec.subsampling_factor, "depthwise": spec.depthwise_subsampling,
        "channels": spec.subsampling_channels, "window": geo.window, "chunk": geo.chunk,
        "lookahead": geo.lookahead, "cache": cache, "vocab": vocab_size,
    }  # fmt: skip
    stack = _stack(model)
    if _layered(model):
        for name in ("absolute", "additive"):
            if hasattr(stack, name):
                shell[name] = bool(getattr(stack, name))
        shell["final_norm"] = not isinstance(getattr(stack, "norm", None), nn.Identity)
    else:  # the recurrent stack streams as a whole
        shell |= {"hidden": spec.lstm_hidden, "layers": spec.layers}
    blocks = [Block("stream_shell", tuple(shell.items()), CHUNK_AXIS, source=arch)]
    if _layered(model):
        for cfg in stack.layer_cfgs:
            fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
            fields.pop("dropout", None)
            params = {"encoder": spec.encoder, "d": spec.d_model, "chunk": geo.chunk,
                      "cache": cache, **fields}  # fmt: skip
            blocks.append(Block("stream_layer", tuple(params.items()), CHUNK_AXIS, source=arch))
    return tuple(grouped(blocks))


def io_block(layer: Block) -> Block:
    """The input/output block of a layer block: a graph that takes the layer's chunk, padding
    and mask (or offset) and returns a chunk, doing nothing else. Timed alone, a layer pays for
    binding those tensors and for the runtime's call, which the deployed graph (one call, the
    chunk passed between layers inside it) does not; the layer's states are inputs and outputs
    of the deployed graph too, so they are not part of this block."""
    p = dict(layer.params)
    return Block(
        "stream_io",
        (("d", p["d"]), ("chunk", p["chunk"]), ("cache", p["cache"]), ("extra", _extra_kind(p))),
        CHUNK_AXIS,
    )


def _extra_kind(params: Mapping[str, Any]) -> str:
    """What a layer takes besides its chunk: an attention mask (bool, or float for additive
    stacks) or the stream's offset (CNN)."""
    if params["encoder"] == "cnn":
        return "offset"
    return "bool" if params.get("attention_impl", "sdpa") == "sdpa" else "float"


class _PassThrough(nn.Module):
    """x, pad, extra → x·2, pad, extra: the inputs and outputs of a layer and nothing else."""

    def forward(
        self, x: torch.Tensor, pad: torch.Tensor, extra: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        return x * 2.0, pad, extra


class _Shell(nn.Module):
    """The model's streaming forward with its stack's layers removed, and the CTC head."""

    def __init__(self, model: SpeechModel) -> None:
        super().__init__()
        from speechnas.export.streaming import ctc_head

        if _layered(model):
            _stack(model).layers = nn.ModuleList()
        self.model = model
        self.ctc = ctc_head(model)

    def forward(
        self, window: torch.Tensor, valid: torch.Tensor, *states: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        enc, _, new = self.model.streaming_forward(window, valid, list(states))
        return (self.ctc(enc), *new)


class _Layer(nn.Module):
    """One encoder layer's streaming step: (x, pad, mask or offset, *states) → (y, *states)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(
        self, x: torch.Tensor, pad: torch.Tensor, extra: torch.Tensor, *states: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        y, new = self.layer.streaming_forward(x, pad, extra, list(states))
        return (y, *new)


def _full(states: list[torch.Tensor], gen: torch.Generator, offset: int) -> list[torch.Tensor]:
    """States as a stream's later chunks meet them: caches full of values, offset past them."""
    return [
        torch.full_like(s, offset) if s.dtype == torch.long else torch.randn(s.shape, generator=gen)
        for s in states
    ]


def stream_block_module(
    block: Block,
) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, dict[int, str]]]:
    """The block as an eval-mode module cut from a randomly initialised model of its source
    architecture, its inputs at the block's streaming shape, and the inputs' batch axes. The
    batch axis is symbolic in the export, as in the deployed ``stream.onnx``: with every shape
    static the exporter folds away the shape arithmetic of the reshapes, which the deployed
    graph computes on every chunk (a third of a small model's chunk time here)."""
    from speechnas.export.streaming import batch_axis
    from speechnas.nn.blocks.masks import padding_mask

    if block.kind == "stream_io":
        p = dict(block.params)
        c, cache = p["chunk"], p["cache"]
        gen = torch.Generator().manual_seed(0)
        extra = {
            "offset": torch.tensor([cache]),
            "bool": torch.ones(1, c, cache + c, dtype=torch.bool),
            "float": torch.zeros(1, c, cache + c),
        }[p["extra"]]
        feeds = {"x": torch.randn(1, c, p["d"], generator=gen),
                 "pad": padding_mask(torch.tensor([c]), c), "extra": extra}  # fmt: skip
        return _PassThrough().eval(), feeds, {n: {0: "batch"} for n in feeds}
    if block.source is None:
        raise ValueError(f"block {block.key}: a streaming block needs its source architecture")
    p = dict(block.params)
    gen = torch.Generator().manual_seed(0)
    model = build(block.source, vocab_size=p.get("vocab", 32)).eval()
    geo = model.stream_geometry()
    cache = _cache(model)
    if block.kind == "stream_shell":
        module = _Shell(model).eval()
        states = model.init_states(1)
        window = torch.randn(1, geo.window, model.features.dim, generator=gen)
        feeds = {"window": window, "valid": torch.tensor([geo.chunk + geo.lookahead])}
        names = ["offset"] if _layered(model) else model.state_names()
        feeds |= dict(zip(names, _full(states, gen, cache), strict=True))
        return module, feeds, {n: {batch_axis(n): "batch"} for n in feeds}
    if block.kind != "stream_layer":
        raise ValueError(f"block kind: {block.kind!r} is not a streaming block")
    from speechnas.nn.blocks.attention_impl import additive_mask
    from speechnas.nn.blocks.masks import stream_mask

    stack = _stack(model)
    wanted = {k: v for k, v in p.items() if k not in ("encoder", "d", "chunk", "cache")}
    index = next(
        i for i, cfg in enumerate(stack.layer_cfgs)
        if all(getattr(cfg, k) == v for k, v in wanted.items())
    )  # fmt: skip
    layer = stack.layers[index]
    c = geo.chunk
    lengths = torch.tensor([c])
    offset = torch.tensor([cache])
    if hasattr(stack, "cache_frames"):  # attention: the mask over cache and chunk
        extra = stream_mask(offset, lengths, cache, c, None)
        if getattr(stack, "additive", False):
            extra = additive_mask(extra)
        states = layer.init_states(1, cache)
    else:  # a CNN layer takes the stream's offset (its running SE mean)
        extra = offset
        states = layer.init_states(1)
    feeds = {
        "x": torch.randn(1, c, model.spec.d_model, generator=gen),
        "pad": padding_mask(lengths, c),
        "extra": extra,
    }
    feeds |= {f"s{i}": s for i, s in enumerate(_full(states, gen, cache))}
    return _Layer(layer).eval(), feeds, {n: {0: "batch"} for n in feeds}
