"""The ASR model of the foundation: normalised features → Conformer encoder → CTC head."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.data.tokenizer import BLANK
from speechnas.nn.conformer import ConformerEncoder


class SpeechRecognizer(Protocol):
    """What the trainer and the evaluator need of a model."""

    vocab_size: int

    def loss(
        self, feats: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor: ...  # fmt: skip

    def decode(
        self, feats: torch.Tensor, lengths: torch.Tensor, *, beam: int = 1
    ) -> list[list[int]]: ...

    def set_cmvn(self, mean: torch.Tensor, std: torch.Tensor) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Conformer-CTC hyper-parameters."""

    d_model: int = 144
    layers: int = 6
    heads: int = 4
    ffn_dim: int = 384
    conv_kernel: int = 15
    dropout: float = 0.1
    subsampling_channels: int = 32

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "dropout":
                if not 0.0 <= v < 1.0:
                    raise ValueError(f"model.dropout: {v} is not in [0, 1)")
            elif not isinstance(v, int) or v <= 0:
                raise ValueError(f"model.{f.name}: expected a positive integer, got {v!r}")
        if self.d_model % self.heads:
            raise ValueError(f"model.heads: {self.heads} does not divide d_model={self.d_model}")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"model.conv_kernel: {self.conv_kernel} must be odd")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Named sizes; "base" is the default baseline (under 3 M parameters with a 29-symbol vocabulary).
PRESETS: dict[str, ModelConfig] = {
    "small": ModelConfig(d_model=96, layers=4, heads=4, ffn_dim=256, conv_kernel=15),
    "base": ModelConfig(),
    "large": ModelConfig(d_model=192, layers=8, heads=4, ffn_dim=768, conv_kernel=31),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"model preset {name!r} is unknown; choose from {sorted(PRESETS)}")
    return PRESETS[name]


class ASRModel(nn.Module):
    """Features (B, T, D) → CTC log-probabilities (B, T', V).

    Global mean/variance normalisation lives in the model as buffers, so a checkpoint or an
    exported graph carries its statistics with it.
    """

    def __init__(self, cfg: ModelConfig, *, feat_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.feat_dim = feat_dim
        self.vocab_size = vocab_size
        self.register_buffer("cmvn_mean", torch.zeros(feat_dim))
        self.register_buffer("cmvn_std", torch.ones(feat_dim))
        self.encoder = ConformerEncoder(
            in_dim=feat_dim,
            d_model=cfg.d_model,
            layers=cfg.layers,
            heads=cfg.heads,
            ffn_dim=cfg.ffn_dim,
            kernel=cfg.conv_kernel,
            dropout=cfg.dropout,
            subsampling_channels=cfg.subsampling_channels,
        )
        self.ctc = nn.Linear(cfg.d_model, vocab_size)

    def set_cmvn(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std.clamp(min=1e-5))

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, D), lengths (B,) → log_probs (B, T', V), lengths (B,)."""
        x = (feats - self.cmvn_mean) / self.cmvn_std
        y, lengths = self.encoder(x, lengths)
        return F.log_softmax(self.ctc(y), dim=-1), lengths

    def loss(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        """Mean over the batch of each utterance's CTC loss."""
        log_probs, out_lens = self(feats, lengths)
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),
            tokens,
            out_lens,
            token_lens,
            blank=BLANK,
            reduction="sum",
            zero_infinity=True,
        )
        return loss / feats.shape[0]

    @torch.no_grad()
    def decode(
        self, feats: torch.Tensor, lengths: torch.Tensor, *, beam: int = 1
    ) -> list[list[int]]:
        """Greedy CTC token ids per utterance (the baseline has no beam search)."""
        return greedy_ctc(*self(feats, lengths))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def greedy_ctc(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks. (B, T, V) → token ids per row."""
    best = log_probs.argmax(dim=-1)
    out: list[list[int]] = []
    for row, n in zip(best.tolist(), lengths.tolist(), strict=True):
        ids, prev = [], BLANK
        for i in row[:n]:
            if i != prev and i != BLANK:
                ids.append(i)
            prev = i
        out.append(ids)
    return out
