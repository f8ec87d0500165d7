"""The layers of a FastSpeech-style acoustic model: searchable ops, stacks, variance predictors,
postnet and the length regulator.

Every block runs channels-last, (B, T, D), and takes the padding of its batch as a
:class:`Frames` built once per stack. ``Frames.full()`` stands for a batch without padding (a
single utterance at inference): no masking op is run then, so an exported inference graph holds
only the model's own work. With padding, every op that mixes frames reads padded frames as zeros
(convolutions), ignores them (attention keys) or reaches them only after every valid frame (an
LSTM, each direction), so the outputs at valid frames do not depend on what the padding holds
or how long it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.blocks._common import check_dropout, check_positive, zero_padding
from speechnas.nn.blocks.attention import MultiHeadSelfAttention, attention_mask
from speechnas.nn.blocks.masks import padding_mask
from speechnas.nn.blocks.rnn import reverse_within
from speechnas.nn.tts.spec import TtsLayerSpec

__all__ = [
    "POSTNET_KERNEL",
    "POSTNET_LAYERS",
    "PREDICTOR_KERNEL",
    "Frames",
    "PostNet",
    "TtsLayer",
    "TtsStack",
    "VariancePredictor",
    "length_regulate",
]

#: Kernel of the two convolutions of a variance predictor.
PREDICTOR_KERNEL = 3
#: Convolutions of the postnet and their kernel (Tacotron 2's postnet, d_model channels wide).
POSTNET_LAYERS = 5
POSTNET_KERNEL = 5


@dataclass(frozen=True, eq=False)
class Frames:
    """The padding of a batch of T frames: lengths (B,), pad (B, T) True on padded frames and
    the attention mask (B, T, T) True where a query may attend a key; all None without
    padding."""

    lengths: torch.Tensor | None
    pad: torch.Tensor | None
    mask: torch.Tensor | None

    @classmethod
    def of(cls, lengths: torch.Tensor, length: int, *, attention: bool) -> Frames:
        mask = attention_mask(lengths, length) if attention else None
        return cls(lengths, padding_mask(lengths, length), mask)

    @classmethod
    def full(cls) -> Frames:
        return cls(None, None, None)

    def zero(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) with its padded frames set to 0 (unchanged without padding)."""
        return x if self.pad is None else zero_padding(x, self.pad)


class _Conv(nn.Module):
    """'same' convolution over time on channels-last input, padded frames read as zeros:
    (B, T, C_in) → (B, T, C_out)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, groups: int = 1) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"_Conv.kernel: {kernel} must be odd for 'same' padding")
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, groups=groups)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        return self.conv(frames.zero(x).transpose(1, 2)).transpose(1, 2)


class _Attention(nn.Module):
    """Multi-head self-attention over the valid keys (absolute positions are added by the
    model): (B, T, D) → (B, T, D)."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.attn = MultiHeadSelfAttention(d_model, heads, pos="abs")

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        mask = frames.mask
        if mask is None:  # no padding: every key is valid (one broadcast True)
            mask = torch.ones(1, 1, 1, dtype=torch.bool, device=x.device)
        return self.attn(x, mask)


class _SepConv(nn.Module):
    """Depthwise conv (kernel K) → ReLU → pointwise d → d: (B, T, D) → (B, T, D)."""

    def __init__(self, d_model: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = _Conv(d_model, d_model, kernel, groups=d_model)
        self.pointwise = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        return self.pointwise(torch.relu(self.depthwise(x, frames)))


class _GluConv(nn.Module):
    """Conv d → 2d (kernel K), one half gating the other: (B, T, D) → (B, T, D)."""

    def __init__(self, d_model: int, kernel: int) -> None:
        super().__init__()
        self.conv = _Conv(d_model, 2 * d_model, kernel)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        return F.glu(self.conv(x, frames), dim=-1)


class _BiLstm(nn.Module):
    """Bidirectional LSTM, d/2 per direction: (B, T, D) → (B, T, D). The backward direction
    runs forward over each utterance reversed within its length, so it starts at the
    utterance's last valid frame (:func:`~speechnas.nn.blocks.rnn.reverse_within`, exact and
    faster on CPU than a packed batch)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.fwd = nn.LSTM(d_model, d_model // 2, batch_first=True)
        self.bwd = nn.LSTM(d_model, d_model // 2, batch_first=True)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        back, _ = self.bwd(reverse_within(x, frames.lengths))
        return torch.cat([self.fwd(x)[0], reverse_within(back, frames.lengths)], dim=-1)


def _op(layer: TtsLayerSpec, d_model: int, heads: int) -> nn.Module:
    kind, kernel = layer.kind, layer.kernel
    if kind == "attn":
        return _Attention(d_model, heads)
    if kind == "sep":
        return _SepConv(d_model, kernel)
    if kind == "glu":
        return _GluConv(d_model, kernel)
    if kind == "lstm":
        return _BiLstm(d_model)
    raise ValueError(f"tts layer op: {layer.op!r} is unknown")  # decode_tts lets none through


class _FeedForward(nn.Module):
    """Conv d → ffn (kernel k) → ReLU → linear ffn → d: (B, T, D) → (B, T, D)."""

    def __init__(self, d_model: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.up = _Conv(d_model, hidden, kernel)
        self.down = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        return self.down(torch.relu(self.up(x, frames)))


class TtsLayer(nn.Module):
    """x + op(LN(x)), then x + FFN(LN(x)) when the layer has an FFN: (B, T, D) → (B, T, D)."""

    def __init__(
        self, layer: TtsLayerSpec, *, d_model: int, heads: int, ffn_kernel: int, dropout: float
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.op = _op(layer, d_model, heads)
        self.ffn_norm = nn.LayerNorm(d_model) if layer.ffn else None
        self.ffn = _FeedForward(d_model, layer.ffn, ffn_kernel) if layer.ffn else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        x = x + self.drop(self.op(self.norm(x), frames))
        if self.ffn is not None and self.ffn_norm is not None:
            x = x + self.drop(self.ffn(self.ffn_norm(x), frames))
        return x


class TtsStack(nn.Module):
    """Pre-norm layers and a final LayerNorm: x (B, T, D), lengths (B,) or None (no padding)
    → (B, T, D), zero on padded frames."""

    def __init__(
        self,
        layers: tuple[TtsLayerSpec, ...],
        *,
        d_model: int,
        heads: int,
        ffn_kernel: int,
        dropout: float,
    ) -> None:
        super().__init__()
        check_dropout("TtsStack", dropout)
        self.attention = any(ly.kind == "attn" for ly in layers)
        self.layers = nn.ModuleList(
            TtsLayer(ly, d_model=d_model, heads=heads, ffn_kernel=ffn_kernel, dropout=dropout)
            for ly in layers
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        frames = (
            Frames.full()
            if lengths is None
            else Frames.of(lengths, x.shape[1], attention=self.attention)
        )
        for layer in self.layers:
            x = layer(x, frames)
        return frames.zero(self.norm(x))


class VariancePredictor(nn.Module):
    """2 × (conv, kernel 3 → ReLU → LayerNorm → dropout) → linear to one value per phoneme:
    x (B, N, D), pad (B, N) or None → (B, N), zero on padding."""

    def __init__(self, d_model: int, channels: int, *, dropout: float) -> None:
        super().__init__()
        check_positive("VariancePredictor", "channels", channels)
        self.conv1 = _Conv(d_model, channels, PREDICTOR_KERNEL)
        self.norm1 = nn.LayerNorm(channels)
        self.conv2 = _Conv(channels, channels, PREDICTOR_KERNEL)
        self.norm2 = nn.LayerNorm(channels)
        self.out = nn.Linear(channels, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, frames: Frames) -> torch.Tensor:
        x = self.drop(self.norm1(torch.relu(self.conv1(x, frames))))
        x = self.drop(self.norm2(torch.relu(self.conv2(x, frames))))
        return frames.zero(self.out(x)).squeeze(-1)


class PostNet(nn.Module):
    """Tacotron 2's residual refinement of the mel frames: 5 convolutions (kernel 5,
    ``channels`` wide, LayerNorm and tanh between them): (B, T, M) → (B, T, M), the residual
    (the caller adds it)."""

    def __init__(self, n_mels: int, channels: int, *, dropout: float) -> None:
        super().__init__()
        widths = [n_mels] + [channels] * (POSTNET_LAYERS - 1) + [n_mels]
        self.convs = nn.ModuleList(_Conv(a, b, POSTNET_KERNEL) for a, b in pairwise(widths))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(POSTNET_LAYERS - 1))
        self.drop = nn.Dropout(dropout)

    def forward(self, mel: torch.Tensor, frames: Frames) -> torch.Tensor:
        x = mel
        for conv, norm in zip(self.convs[:-1], self.norms, strict=True):
            x = self.drop(torch.tanh(norm(conv(x, frames))))
        return frames.zero(self.convs[-1](x, frames))


def length_regulate(h: torch.Tensor, durations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeats each phoneme's vector for its duration: h (B, N, D), durations (B, N) integer
    frames (0 allowed) → y (B, T, D) with T = the longest total, zero after each utterance's
    end, and lengths (B,) the totals.

    Frame t of an utterance belongs to the phoneme n with start_n <= t < end_n, i.e. to the
    number of phonemes that end at or before t; the frames are gathered by that index. Only
    a cumulative sum, comparisons and a gather, so an ONNX graph keeps T symbolic (no
    repeat_interleave with data-dependent repeats).
    """
    ends = durations.cumsum(1)  # (B, N)
    lengths = ends[:, -1]  # (B,)
    t = torch.arange(lengths.max(), device=h.device)  # (T,)
    index = (ends[:, None, :] <= t[None, :, None]).sum(-1)  # (B, T) phoneme of each frame
    index = index.clamp(max=h.shape[1] - 1)  # frames past an utterance's end: masked below
    y = torch.gather(h, 1, index[..., None].expand(-1, -1, h.shape[2]))
    return zero_padding(y, t[None, :] >= lengths[:, None]), lengths
