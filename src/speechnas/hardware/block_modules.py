"""The building blocks of :mod:`speechnas.hardware.blocks` as real modules with inputs.

:func:`block_module` builds a block from the modules of :mod:`speechnas.nn` (random weights),
with the small wrappers below where a block is part of a layer (a residual branch, the
E-Branchformer's merge) or a stack's own work (its layers removed), and makes the inputs of
one run at a given length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.hardware.blocks import Block
from speechnas.nn.blocks import (
    Conv2dSubsampling,
    LearnableFrontend,
    LSTMEncoder,
    LSTMLayer,
    MultiHeadSelfAttention,
    SeparableConvLayerConfig,
    SeparableConvStack,
)
from speechnas.nn.blocks._common import DepthwiseConv1d
from speechnas.nn.blocks._stack import AttentionStack
from speechnas.nn.blocks.attention import attention_mask
from speechnas.nn.blocks.attention_impl import additive_mask
from speechnas.nn.blocks.cnn import SeparableConvLayer
from speechnas.nn.blocks.conformer import ConvModule
from speechnas.nn.blocks.ebranchformer import ConvGatedMLP
from speechnas.nn.blocks.feedforward import FeedForward
from speechnas.nn.decoders.rnnt import Joiner, PredictionNetwork

__all__ = ["Inputs", "block_module"]

_SE_REDUCTION = SeparableConvLayerConfig.__dataclass_fields__["se_reduction"].default


class _Residual(nn.Module):
    """x + f(x), or x + f(x, extra...) → (B, T, D)."""

    def __init__(self, inner: nn.Module, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.norm = norm

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        y = self.inner(self.norm(x) if self.norm is not None else x, *extra)
        return x + y


class _CgMLP(nn.Module):
    """The E-Branchformer's local branch: cgMLP(LayerNorm(x), pad)."""

    def __init__(self, d: int, hidden: int, kernel: int, causal: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.mlp = ConvGatedMLP(d, hidden, kernel, causal=causal)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x), pad)


class _Merge(nn.Module):
    """The E-Branchformer's merge: x + Proj(cat + DWConv(cat)) of the two branch outputs."""

    def __init__(self, d: int, kernel: int, causal: bool) -> None:
        super().__init__()
        self.conv = DepthwiseConv1d(2 * d, kernel, causal=causal)
        self.proj = nn.Linear(2 * d, d)

    def forward(
        self, x: torch.Tensor, branch_a: torch.Tensor, branch_b: torch.Tensor, pad: torch.Tensor
    ) -> torch.Tensor:
        both = torch.cat([branch_a, branch_b], dim=-1)
        return x + self.proj(both + self.conv(both, pad))


class _Normalised(nn.Module):
    """(x - mean) / std, then ``inner(x, lengths)``: the model's CMVN and its first stage."""

    def __init__(self, inner: nn.Module, dim: int, waveform: bool) -> None:
        super().__init__()
        self.inner = inner
        self.waveform = waveform
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Any:
        x = (x[..., None] if self.waveform else x) - self.mean
        return self.inner(x / self.std, lengths)


class _LogSoftmaxHead(nn.Module):
    def __init__(self, d: int, vocab: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.proj(x), dim=-1)


class _PredictorStep(nn.Module):
    def __init__(self, net: PredictionNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Any:
        out, (h, c) = self.net.step(token, (h, c))
        return out, h, c


class _Emptied(nn.Module):
    """A stack's own work without its layers: masks, positions, final norm, padding."""

    def __init__(self, stack: nn.Module) -> None:
        super().__init__()
        stack.layers = nn.ModuleList()
        self.stack = stack

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Any:
        return self.stack(x, lengths)


Inputs = Callable[[int, torch.Generator], dict[str, torch.Tensor]]


def _seq(d: int, *names: str, additive: bool = False) -> Inputs:
    """Inputs x (and more (1, T, d) tensors), plus ``pad`` (1, T) / ``mask`` (1, T, T), bool
    or, when ``additive``, float zeros / ``lengths`` (1,) when named."""

    def make(t: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        out = {}
        for n in names:
            if n == "pad":
                out[n] = torch.zeros(1, t, dtype=torch.bool)
            elif n == "mask":
                out[n] = torch.zeros(1, t, t) if additive else torch.ones(1, t, t, dtype=torch.bool)
            elif n == "lengths":
                out[n] = torch.tensor([t])
            else:
                out[n] = torch.randn(1, t, d, generator=gen)
        return out

    return make


def _chunked(inputs: Inputs, chunk: int, left: int, additive: bool) -> Inputs:
    """``inputs`` with the mask a streaming attention stack builds for one utterance of the
    length (:func:`speechnas.nn.blocks.attention.attention_mask`): what is masked changes the
    softmax's time, not only the mask's shape."""

    def make(t: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        out = inputs(t, gen)
        mask = attention_mask(torch.tensor([t]), t, chunk=chunk, left_chunks=left)
        out["mask"] = additive_mask(mask) if additive else mask
        return out

    return make


def block_module(block: Block) -> tuple[nn.Module, Inputs]:
    """The block as an eval-mode module with random weights, and a maker of its inputs at a
    length (the block's axis) from a seeded generator. Every input's axis 1 is the length
    (both axes 1 and 2 of ``mask``)."""
    p = dict(block.params)
    k = block.kind
    d = p.get("d", 0)
    module: nn.Module
    if k == "frontend":
        module = _Normalised(LearnableFrontend(p["filters"]), 1, waveform=True)
        return module.eval(), lambda t, g: {
            "waveform": 0.1 * torch.randn(1, t, generator=g),
            "lengths": torch.tensor([t]),
        }
    if k == "subsampling":
        sub = Conv2dSubsampling(
            p["in_dim"], d, factor=p["factor"], channels=p["channels"], depthwise=p["depthwise"]
        )
        return _Normalised(sub, p["in_dim"], waveform=False).eval(), _seq(
            p["in_dim"], "x", "lengths"
        )
    if k == "stack":
        chunk, left = (16, 4) if p["chunked"] else (None, None)
        stack = AttentionStack(
            d, [], nn.Identity, absolute=p["absolute"], chunk=chunk, left_chunks=left,
            final_norm=p["final_norm"], additive=p.get("additive", False),
        )  # fmt: skip
        return stack.eval(), _seq(d, "x", "lengths")
    if k == "cnn_stack":
        stack = SeparableConvStack(d, [SeparableConvLayerConfig()])
        return _Emptied(stack).eval(), _seq(d, "x", "lengths")
    if k == "ffn":
        return _Residual(FeedForward(d, p["hidden"], lowrank=p["rank"])).eval(), _seq(d, "x")
    if k == "mhsa":
        attn = MultiHeadSelfAttention(
            d, p["heads"], pos=p["pos"], window=p["window"], head_dim=p.get("head_dim"),
            impl=p.get("impl", "sdpa"), qkv=p.get("qkv", "packed"),
        )  # fmt: skip
        # a stack whose layers are not sdpa passes them an additive float mask
        inputs = _seq(d, "x", "mask", additive="impl" in p)
        if "chunk" in p:  # a streaming stack's chunk mask, as its layers get it at batch 1
            inputs = _chunked(inputs, p["chunk"], p["left"], additive="impl" in p)
        return _Residual(attn, nn.LayerNorm(d)).eval(), inputs
    if k == "norm":
        return nn.LayerNorm(d).eval(), _seq(d, "x")
    if k == "convmod":
        conv = ConvModule(
            d, p["kernel"], causal=p["causal"], dropout=0.0, channels=p.get("channels")
        )
        return _Residual(conv).eval(), _seq(d, "x", "pad")
    if k == "cgmlp":
        return _CgMLP(d, p["hidden"], p["kernel"], p["causal"]).eval(), _seq(d, "x", "pad")
    if k == "merge":
        merge = _Merge(d, p["kernel"], p["causal"])
        return merge.eval(), _seq(d, "x", "branch_a", "branch_b", "pad")
    if k == "sepconv":
        layer = SeparableConvLayer(
            d,
            kernel=p["kernel"],
            dilation=p["dilation"],
            se=p["se"],
            se_reduction=_SE_REDUCTION,
            dropout=0.0,
            causal=p["causal"],
        )
        return layer.eval(), _seq(d, "x", "pad")
    if k == "lstm_first":
        enc = LSTMEncoder(d, p["hidden"], 1, bidirectional=p["bidirectional"], d_model=d)
        return enc.eval(), _seq(d, "x", "lengths")
    if k == "lstm_layer":
        layer = LSTMLayer(d, p["hidden"], bidirectional=p["bidirectional"], dropout=0.0)
        return layer.eval(), _seq(d, "x")
    if k == "ctc":
        return _LogSoftmaxHead(d, p["vocab"]).eval(), _seq(d, "x")
    if k == "predictor":
        net = PredictionNetwork(p["vocab"], p["pred_dim"], p["pred_dim"], p["layers"])
        shape = (p["layers"], 1, p["pred_dim"])
        return _PredictorStep(net).eval(), lambda t, g: {
            "token": torch.zeros(1, dtype=torch.long),
            "h": torch.zeros(shape),
            "c": torch.zeros(shape),
        }
    if k == "joiner":
        joiner = Joiner(d, p["pred_dim"], p["pred_dim"], p["vocab"])
        return joiner.eval(), lambda t, g: {
            "enc": torch.randn(1, d, generator=g),
            "pred": torch.randn(1, p["pred_dim"], generator=g),
        }
    if k == "run":
        return _Scale().eval(), _seq(8, "x")
    raise ValueError(f"block kind: {k!r} is unknown")


class _Scale(nn.Module):
    """The smallest graph there is: it times a runtime's fixed cost of one run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0
