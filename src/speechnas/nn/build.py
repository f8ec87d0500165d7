"""From an :class:`Arch` of a search space to a trainable speech model.

One model family: every architecture — the named presets (:mod:`speechnas.nn.presets`) and every
point of every search space — is a :class:`SpeechModel` with ``loss(feats, lengths, tokens,
token_lens)`` for training, ``encode`` and ``decode(feats, lengths) -> token ids`` for evaluation,
and global mean/variance normalisation held as buffers. The architecture is read through its
decoded :class:`~speechnas.nn.spec.ArchSpec`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from speechnas.data.features import FeatureConfig
from speechnas.nn.blocks import (
    ConformerLayerConfig,
    ConformerStack,
    Conv2dSubsampling,
    EBranchformerLayerConfig,
    EBranchformerStack,
    EncoderChain,
    LearnableFrontend,
    LSTMEncoder,
    SeparableConvLayerConfig,
    SeparableConvStack,
    TransformerLayerConfig,
    TransformerStack,
)
from speechnas.nn.blocks._shared import make_layer
from speechnas.nn.blocks.lookahead import Lookahead
from speechnas.nn.blocks.norm import use_mad_prenorm
from speechnas.nn.decoders import make_decoder
from speechnas.nn.spec import FRONTENDS, LEARNABLE_FILTERS, ArchSpec, StreamGeometry, decode
from speechnas.space.arch import Arch

__all__ = [
    "FRONTENDS",
    "LEARNABLE_FILTERS",
    "SpeechModel",
    "build",
    "feature_config",
    "with_attention_impl",
]


def feature_config(arch: Mapping[str, Any]) -> FeatureConfig:
    """The input pipeline an architecture expects."""
    return decode(arch).features


def _encoder(spec: ArchSpec, dropout: float) -> nn.Module:
    d = spec.d_model
    kind = spec.encoder
    if spec.attention_based:
        common = {"head_dim": spec.head_dim, "attention": spec.attention, "window": spec.window,
                  "dropout": dropout, "attention_impl": spec.attention_impl,
                  "qkv": spec.qkv}  # fmt: skip
        streaming = {"chunk": spec.chunk_size, "left_chunks": spec.left_chunks}
        if kind == "conformer":
            cfgs = [
                ConformerLayerConfig(
                    heads=ly.heads, ffn_dim=ly.ffn_dim, ffn_lowrank=ly.ffn_lowrank,
                    kernel=ly.kernel, macaron=spec.macaron, module_order=ly.module_order,
                    conv_dim=ly.conv_dim, **common,
                )
                for ly in spec.layer
            ]  # fmt: skip
            return ConformerStack(d, cfgs, **streaming)
        if kind == "transformer":
            tcommon = {k: v for k, v in common.items() if k != "head_dim"}  # heads divide d
            tcfgs = [
                TransformerLayerConfig(
                    heads=spec.heads, ffn_dim=ly.ffn_dim, ffn_lowrank=ly.ffn_lowrank, **tcommon
                )
                for ly in spec.layer
            ]
            return TransformerStack(d, tcfgs, **streaming)
        ecfgs = [  # the cgMLP is as wide as the feed-forward layers unless cgmlp_dim says
            EBranchformerLayerConfig(
                heads=ly.heads, ffn_dim=ly.ffn_dim, ffn_lowrank=ly.ffn_lowrank,
                cgmlp_dim=ly.cgmlp_dim, kernel=ly.kernel, **common,
            )
            for ly in spec.layer
        ]  # fmt: skip
        return EBranchformerStack(d, ecfgs, **streaming)
    if kind in ("lstm", "blstm"):
        return LSTMEncoder(
            d, spec.lstm_hidden, spec.layers, bidirectional=kind == "blstm", d_model=d,
            dropout=dropout,
        )  # fmt: skip
    scfgs = [
        SeparableConvLayerConfig(
            kernel=ly.kernel, dilation=spec.cnn_dilation, se=spec.cnn_se, dropout=dropout
        )
        for ly in spec.layer
    ]
    return SeparableConvStack(d, scfgs, causal=spec.causal)


def _decoder(spec: ArchSpec, vocab_size: int, dropout: float) -> nn.Module:
    d = spec.d_model
    if spec.decoder == "ctc":
        return make_layer(make_decoder, "ctc", d_model=d, vocab_size=vocab_size)
    if spec.decoder == "rnnt":
        p = spec.pred_dim
        return make_layer(
            make_decoder, "rnnt", d_model=d, vocab_size=vocab_size, pred_dim=p, joint_dim=p
        )
    return make_layer(
        make_decoder, "attention", d_model=d, vocab_size=vocab_size, layers=spec.decoder_layers,
        heads=spec.heads, ffn_dim=4 * d, dropout=dropout, ctc_weight=spec.ctc_weight,
    )  # fmt: skip


class SpeechModel(nn.Module):
    """Normalised input (B, T, D) → encoder (B, T', d_model) → decoder loss or token ids."""

    def __init__(self, arch: Arch, *, vocab_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        spec = decode(arch)
        self.arch = spec.arch
        self.spec = spec
        self.features = spec.features
        self.vocab_size = vocab_size
        d = spec.d_model
        self.register_buffer("cmvn_mean", torch.zeros(self.features.dim))
        self.register_buffer("cmvn_std", torch.ones(self.features.dim))
        stages: list[nn.Module] = []
        in_dim = self.features.dim
        if spec.waveform_input:
            frontend = LearnableFrontend(LEARNABLE_FILTERS, sample_rate=self.features.sample_rate)
            stages.append(frontend)
            in_dim = frontend.out_dim
        stages.append(
            make_layer(
                Conv2dSubsampling,
                in_dim,
                d,
                factor=spec.subsampling_factor,
                channels=spec.subsampling_channels,
                depthwise=spec.depthwise_subsampling,
            )
        )
        if spec.lookahead:
            stages.append(Lookahead(d, spec.lookahead))
        stages.append(_encoder(spec, dropout))
        self.encoder = EncoderChain(*stages)
        self.decoder = _decoder(spec, vocab_size, dropout)
        # (chunk, look-ahead) set by configure_streaming; None: the architecture's own
        self._stream: tuple[int | None, int] | None = None
        if spec.norm == "mad_prenorm":
            use_mad_prenorm(self)

    def set_cmvn(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std.clamp(min=1e-5))

    def encode(
        self, feats: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, D), lengths (B,) → encodings (B, T', d_model), lengths (B,)."""
        return self.encoder((feats - self.cmvn_mean) / self.cmvn_std, lengths)

    def loss(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        enc, enc_lens = self.encode(feats, lengths)
        return self.decoder.loss(enc, enc_lens, tokens, token_lens)

    @torch.no_grad()
    def decode(
        self, feats: torch.Tensor, lengths: torch.Tensor, *, beam: int = 1
    ) -> list[list[int]]:
        enc, enc_lens = self.encode(feats, lengths)
        return self.decoder.decode(enc, enc_lens, beam=beam)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- streaming: one chunk at a time with explicit states ---------------------------------

    def configure_streaming(self, *, chunk: int | None, lookahead: int | None = None) -> None:
        """Run at another chunk size and look-ahead than the architecture's: dynamic-chunk
        training, or one model evaluated at several latencies. ``chunk=None`` is full context
        (attention unmasked; causal convolutions stay causal). ``lookahead`` at most the
        architecture's (None: the architecture's)."""
        geo = self.spec.stream_geometry  # raises for an architecture that cannot stream
        if chunk is not None and (isinstance(chunk, bool) or chunk < 1):
            raise ValueError(f"chunk: expected a positive number of frames or None, got {chunk!r}")
        lookahead = geo.lookahead if lookahead is None else lookahead
        if not 0 <= lookahead <= geo.lookahead:
            raise ValueError(
                f"lookahead: {lookahead} frames is outside 0..{geo.lookahead}, the look-ahead "
                "this architecture was built with"
            )
        *_, stack = self.encoder.stages
        if hasattr(stack, "chunk"):
            stack.chunk = chunk
        if geo.lookahead:
            self.encoder.stages[-2].active = lookahead
        self._stream = (chunk, lookahead)

    def stream_geometry(self) -> StreamGeometry:
        """How the model streams now (the architecture's geometry unless reconfigured)."""
        geo = self.spec.stream_geometry
        chunk, lookahead = self._stream or (geo.chunk, geo.lookahead)
        if chunk is None:
            raise ValueError("stream_geometry: the model runs in full context (chunk=None)")
        return dataclasses.replace(geo, chunk=chunk, lookahead=lookahead)

    def init_states(self, batch: int = 1) -> list[torch.Tensor]:
        """The encoder's states before a stream's first chunk (names: :meth:`state_names`)."""
        self.stream_geometry()  # raises for a model that cannot stream
        return self.encoder.stages[-1].init_states(batch)

    def state_names(self) -> list[str]:
        return self.encoder.stages[-1].state_names()

    def streaming_forward(
        self,
        window: torch.Tensor,
        valid: torch.Tensor,
        states: list[torch.Tensor],
        cache_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """One chunk. window (B, W, D): the chunk's ``stream_geometry.window`` feature frames;
        valid (B,): how many of the chunk's ``chunk + lookahead`` encoder frames exist (fewer
        only at the end of a stream) → encodings (B, chunk, d_model), valid frames among them
        (B,), new states. Over a stream the chunks give what :meth:`encode` gives.
        ``cache_valid`` (B, cache) bool: an attention encoder's runtime-given mask of its
        cached frames (:func:`~speechnas.nn.blocks.masks.stream_mask`)."""
        geo = self.stream_geometry()
        if window.shape[1] != geo.window:
            raise ValueError(
                f"streaming_forward: a window of {geo.window} feature frames expected "
                f"(chunk {geo.chunk} + look-ahead {geo.lookahead} encoder frames), "
                f"got {window.shape[1]}"
            )
        subsampling, *middle, stack = self.encoder.stages
        x = (window - self.cmvn_mean) / self.cmvn_std
        x, _ = subsampling(x, valid)  # (B, chunk + lookahead, d_model)
        if middle:
            x = middle[0].chunk(x, valid)
        lengths = valid.clamp(max=geo.chunk)
        if cache_valid is None:
            return stack.streaming_forward(x, lengths, states)
        return stack.streaming_forward(x, lengths, states, cache_valid)


def build(arch: Mapping[str, Any], *, vocab_size: int, dropout: float = 0.1) -> SpeechModel:
    """A fresh, randomly initialised model for ``arch`` (an :class:`Arch` or a mapping)."""
    return SpeechModel(decode(arch).arch, vocab_size=vocab_size, dropout=dropout)


def with_attention_impl(model: SpeechModel, impl: str) -> SpeechModel:
    """``model``'s weights under another attention implementation
    (:mod:`speechnas.nn.blocks.attention_impl`): the same parameters and outputs, another
    graph for a runtime to execute. Eval mode, no dropout, sharing nothing with ``model``."""
    out = build(
        {**model.arch, "attention_impl": impl}, vocab_size=model.vocab_size, dropout=0.0
    ).eval()
    out.load_state_dict(model.state_dict())
    return out
