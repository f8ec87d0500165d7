"""FastSpeech 2-style non-autoregressive acoustic model: phonemes → log-mel frames.

Phoneme embedding + sinusoidal positions → encoder stack → variance adaptor (log-duration
predictor; energy predictor and energy embedding when the architecture has them) → length
regulator → sinusoidal positions → decoder stack → linear to mel bands (→ residual postnet).
The layers of both stacks are searchable (:mod:`speechnas.nn.tts.spec`). Training runs
:meth:`FastSpeech.forward` with the reference durations (and energies); :meth:`FastSpeech.infer`
synthesises one utterance from predicted durations and exports to ONNX with the phoneme count
and the frame count symbolic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from speechnas.nn.blocks._common import check_dropout, check_positive
from speechnas.nn.blocks.masks import sinusoidal_positions
from speechnas.nn.tts.blocks import (
    Frames,
    PostNet,
    TtsStack,
    VariancePredictor,
    length_regulate,
)
from speechnas.nn.tts.spec import TtsSpec, decode_tts

__all__ = ["FastSpeech", "TtsOutput", "length_regulate", "predicted_durations"]


@dataclass(frozen=True, eq=False)
class TtsOutput:
    """What :meth:`FastSpeech.forward` returns (B utterances, N phonemes, T frames, M bands).

    ``mel_post`` is ``mel`` itself (the same tensor) when the model has no postnet.
    """

    mel: torch.Tensor  # (B, T, M) log-mel, zero on padded frames
    mel_post: torch.Tensor  # (B, T, M) after the postnet
    mel_lengths: torch.Tensor  # (B,) frames of each utterance
    log_durations: torch.Tensor  # (B, N) predicted log(duration + 1), zero on padding
    energy: torch.Tensor | None  # (B, N) predicted energy, zero on padding; None without


def predicted_durations(log_durations: torch.Tensor, frames: Frames) -> torch.Tensor:
    """log(d + 1) (B, N) → integer frames (B, N): round(exp(·) - 1), at least 0, zero on
    padding, and one frame on the first phoneme of an utterance that would get none."""
    d = torch.clamp(torch.round(torch.exp(log_durations) - 1.0), min=0.0).long()
    d = frames.zero(d[..., None]).squeeze(-1)
    empty = (d.sum(1, keepdim=True) == 0).long()  # (B, 1)
    first = (torch.arange(d.shape[1], device=d.device) == 0).long()  # (N,)
    return d + empty * first


class FastSpeech(nn.Module):
    """The acoustic model of one :class:`~speechnas.nn.tts.spec.TtsSpec` (or an Arch of one).

    ``n_phonemes`` is the vocabulary size with the padding symbol 0; ``n_mels`` the mel bands.
    """

    def __init__(
        self,
        spec: TtsSpec | Mapping[str, Any],
        *,
        n_phonemes: int,
        n_mels: int = 80,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        spec = spec if isinstance(spec, TtsSpec) else decode_tts(spec)
        check_positive("FastSpeech", "n_phonemes", n_phonemes)
        check_positive("FastSpeech", "n_mels", n_mels)
        check_dropout("FastSpeech", dropout)
        self.spec = spec
        self.n_phonemes = n_phonemes
        self.n_mels = n_mels
        d = spec.d_model
        stack = {"d_model": d, "heads": spec.heads, "ffn_kernel": spec.ffn_kernel,
                 "dropout": dropout}  # fmt: skip
        self.embed = nn.Embedding(n_phonemes, d, padding_idx=0)
        self.encoder = TtsStack(spec.encoder, **stack)
        self.duration = VariancePredictor(d, spec.variance_dim, dropout=dropout)
        self.energy = (
            VariancePredictor(d, spec.variance_dim, dropout=dropout) if spec.energy else None
        )
        # a 1 → d convolution of kernel 1, written as the linear map it is
        self.energy_embed = nn.Linear(1, d) if spec.energy else None
        self.decoder = TtsStack(spec.decoder, **stack)
        self.mel_out = nn.Linear(d, n_mels)
        self.postnet = PostNet(n_mels, d, dropout=dropout) if spec.postnet else None

    def forward(
        self,
        phonemes: torch.Tensor,
        phoneme_lengths: torch.Tensor,
        durations: torch.Tensor | None = None,
        energy: torch.Tensor | None = None,
    ) -> TtsOutput:
        """phonemes (B, N) ids, phoneme_lengths (B,), durations (B, N) frames (None: the
        predicted ones), energy (B, N) reference energies for the energy embedding (None: the
        predicted ones, detached) → :class:`TtsOutput`. Padding never changes valid outputs."""
        frames = Frames.of(phoneme_lengths, phonemes.shape[1], attention=False)
        h, log_durations, energy_pred = self._encode(phonemes, phoneme_lengths, frames, energy)
        if durations is None:
            durations = predicted_durations(log_durations, frames)
        else:
            durations = frames.zero(durations[..., None]).squeeze(-1)
        mel, mel_post, mel_lengths = self._decode(h, durations, padded=True)
        return TtsOutput(mel, mel_post, mel_lengths, log_durations, energy_pred)

    @torch.no_grad()
    def infer(self, phonemes: torch.Tensor) -> torch.Tensor:
        """phonemes (1, N), no padding → mel (1, T, M) from the predicted durations."""
        h, log_durations, _ = self._encode(phonemes, None, Frames.full(), None)
        durations = predicted_durations(log_durations, Frames.full())
        return self._decode(h, durations, padded=False)[1]

    def _encode(
        self,
        phonemes: torch.Tensor,
        lengths: torch.Tensor | None,
        frames: Frames,
        energy: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """→ phoneme states (B, N, D) with the energy embedding added, log-durations (B, N) and
        predicted energies (B, N) or None."""
        x = self.embed(phonemes)  # (B, N, D)
        x = x + sinusoidal_positions(x.shape[1], self.spec.d_model).to(x)
        h = self.encoder(x, lengths)
        log_durations = self.duration(h, frames)
        energy_pred = None
        if self.energy is not None and self.energy_embed is not None:
            energy_pred = self.energy(h, frames)
            used = energy_pred.detach() if energy is None else energy  # (B, N)
            h = h + self.energy_embed(frames.zero(used[..., None]))
        return h, log_durations, energy_pred

    def _decode(
        self, h: torch.Tensor, durations: torch.Tensor, *, padded: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h (B, N, D), durations (B, N) → mel, mel_post (B, T, M), lengths (B,)."""
        y, lengths = length_regulate(h, durations)  # (B, T, D)
        y = y + sinusoidal_positions(y.shape[1], self.spec.d_model).to(y)
        frames = Frames.of(lengths, y.shape[1], attention=False) if padded else Frames.full()
        y = self.decoder(y, lengths if padded else None)
        mel = frames.zero(self.mel_out(y))
        if self.postnet is None:
            return mel, mel, lengths
        return mel, mel + self.postnet(mel, frames), lengths
