"""From an :class:`Arch` of a search space to a trainable speech model.

Every model has the same contract as the foundation's :class:`ASRModel`: ``loss(feats, lengths,
tokens, token_lens)`` for training and ``decode(feats, lengths) -> token ids`` for evaluation,
with global mean/variance normalisation held as buffers.
"""

from __future__ import annotations

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
from speechnas.nn.decoders import make_decoder
from speechnas.nn.model import ASRModel, ModelConfig
from speechnas.space.arch import Arch

FRONTENDS: dict[str, FeatureConfig] = {
    "fbank40": FeatureConfig(kind="fbank", n_mels=40),
    "fbank64": FeatureConfig(kind="fbank", n_mels=64),
    "fbank80": FeatureConfig(kind="fbank", n_mels=80),
    "mfcc40": FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=40),
    "learnable": FeatureConfig(kind="waveform"),
}
LEARNABLE_FILTERS = 80


def feature_config(arch: Mapping[str, Any]) -> FeatureConfig:
    """The input pipeline an architecture expects."""
    name = arch.get("frontend", "fbank80")
    if name not in FRONTENDS:
        raise ValueError(f"frontend: {name!r} is not one of {sorted(FRONTENDS)}")
    return FRONTENDS[name]


def _per_layer(arch: Mapping[str, Any], name: str, default: Any) -> list[Any]:
    value = arch.get(name, default)
    n = int(arch["layers"])
    return list(value) if isinstance(value, tuple | list) else [value] * n


def _encoder(arch: Mapping[str, Any], d: int, dropout: float) -> nn.Module:
    kind = arch["encoder"]
    n = int(arch["layers"])
    streaming = bool(arch.get("streaming", False))
    chunk = int(arch["chunk_size"]) if streaming else None
    left = int(arch["left_chunks"]) if streaming else None
    attention = arch.get("attention", "rel")
    window = int(arch["attention_window"]) if attention == "local" else None
    ffn = _per_layer(arch, "ffn_dim", 4 * d)
    lowrank = _per_layer(arch, "ffn_lowrank", 0)
    kernel = _per_layer(arch, "conv_kernel", 15)
    if kind == "conformer":
        order = _per_layer(arch, "module_order", "mhsa_first")
        cfgs = [
            ConformerLayerConfig(
                heads=int(arch["heads"]), ffn_dim=ffn[i], ffn_lowrank=lowrank[i],
                kernel=kernel[i], macaron=bool(arch.get("macaron", True)),
                module_order=order[i], attention=attention, window=window, dropout=dropout,
            )
            for i in range(n)
        ]  # fmt: skip
        return ConformerStack(d, cfgs, chunk=chunk, left_chunks=left)
    if kind == "transformer":
        cfgs = [
            TransformerLayerConfig(
                heads=int(arch["heads"]), ffn_dim=ffn[i], ffn_lowrank=lowrank[i],
                attention=attention, window=window, dropout=dropout,
            )
            for i in range(n)
        ]  # fmt: skip
        return TransformerStack(d, cfgs, chunk=chunk, left_chunks=left)
    if kind == "ebranchformer":
        cfgs = [
            EBranchformerLayerConfig(
                heads=int(arch["heads"]), ffn_dim=ffn[i], ffn_lowrank=lowrank[i],
                cgmlp_dim=ffn[i], kernel=kernel[i], attention=attention, window=window,
                dropout=dropout,
            )
            for i in range(n)
        ]  # fmt: skip
        return EBranchformerStack(d, cfgs, chunk=chunk, left_chunks=left)
    if kind in ("lstm", "blstm"):
        return LSTMEncoder(
            d, int(arch["lstm_hidden"]), n, bidirectional=kind == "blstm", d_model=d,
            dropout=dropout,
        )  # fmt: skip
    if kind == "cnn":
        cfgs = [
            SeparableConvLayerConfig(
                kernel=kernel[i], dilation=int(arch.get("cnn_dilation", 1)),
                se=bool(arch.get("cnn_se", False)), dropout=dropout,
            )
            for i in range(n)
        ]  # fmt: skip
        return SeparableConvStack(d, cfgs, causal=streaming)
    raise ValueError(
        f"encoder: {kind!r} is not one of conformer, transformer, ebranchformer, lstm, blstm, cnn"
    )


def _decoder(arch: Mapping[str, Any], d: int, vocab_size: int, dropout: float) -> nn.Module:
    kind = arch.get("decoder", "ctc")
    if kind == "ctc":
        return make_decoder("ctc", d_model=d, vocab_size=vocab_size)
    if kind == "rnnt":
        p = int(arch.get("pred_dim", 256))
        return make_decoder("rnnt", d_model=d, vocab_size=vocab_size, pred_dim=p, joint_dim=p)
    if kind == "attention":
        return make_decoder(
            "attention", d_model=d, vocab_size=vocab_size,
            layers=int(arch.get("decoder_layers", 1)), heads=int(arch.get("heads", 4)),
            ffn_dim=4 * d, dropout=dropout, ctc_weight=float(arch.get("ctc_weight", 0.3)),
        )  # fmt: skip
    raise ValueError(f"decoder: {kind!r} is not one of ctc, rnnt, attention")


class SpeechModel(nn.Module):
    """Normalised input (B, T, D) → encoder (B, T', d_model) → decoder loss or token ids."""

    def __init__(
        self,
        arch: Arch,
        *,
        vocab_size: int,
        dropout: float = 0.1,
        subsampling_channels: int = 32,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.features = feature_config(arch)
        self.vocab_size = vocab_size
        d = int(arch["d_model"])
        self.register_buffer("cmvn_mean", torch.zeros(self.features.dim))
        self.register_buffer("cmvn_std", torch.ones(self.features.dim))
        stages: list[nn.Module] = []
        in_dim = self.features.dim
        if self.features.kind == "waveform":
            frontend = LearnableFrontend(LEARNABLE_FILTERS, sample_rate=self.features.sample_rate)
            stages.append(frontend)
            in_dim = frontend.out_dim
        stages.append(
            Conv2dSubsampling(
                in_dim,
                d,
                factor=int(arch.get("subsampling_factor", 4)),
                channels=subsampling_channels,
                depthwise=arch.get("subsampling", "conv2d") == "dwconv2d",
            )
        )
        stages.append(_encoder(arch, d, dropout))
        self.encoder = EncoderChain(*stages)
        self.decoder = _decoder(arch, d, vocab_size, dropout)

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


def build(arch: Arch, *, vocab_size: int, dropout: float = 0.1) -> SpeechModel:
    """A fresh, randomly initialised model for ``arch``."""
    return SpeechModel(arch, vocab_size=vocab_size, dropout=dropout)


def create_model(
    *, arch: Arch | None, model: ModelConfig, features: FeatureConfig, vocab_size: int
) -> nn.Module:
    """The model a training config or a checkpoint describes: an architecture from a search
    space when ``arch`` is given, otherwise the foundation's Conformer-CTC baseline."""
    if arch is not None:
        return build(arch, vocab_size=vocab_size, dropout=model.dropout)
    return ASRModel(model, feat_dim=features.dim, vocab_size=vocab_size)
