"""The training loss of a FastSpeech-style model, every term averaged over valid entries only.

* ``mel``: L1 between predicted and reference log-mel frames, over the frames below each
  utterance's ``mel_lengths`` and every band;
* ``post``: the same for the postnet's output (0 when the model has no postnet);
* ``duration``: MSE between the predicted log(d + 1) and log(reference frames + 1), over the
  phonemes below ``phoneme_lengths``;
* ``energy``: MSE between predicted and reference phoneme energies, over the same phonemes
  (0 when the model has no energy predictor).

The total is their sum. Padded values of the batch never change any term.
"""

from __future__ import annotations

from typing import Protocol

import torch

from speechnas.nn.blocks.masks import padding_mask
from speechnas.nn.tts.model import TtsOutput

__all__ = ["TtsTargets", "tts_loss"]


class TtsTargets(Protocol):
    """What the loss reads from a batch (B utterances, N phonemes, T frames, M bands)."""

    mel: torch.Tensor  # (B, T, M)
    mel_lengths: torch.Tensor  # (B,)
    durations: torch.Tensor  # (B, N) frames
    phoneme_lengths: torch.Tensor  # (B,)
    energy: torch.Tensor  # (B, N)


def _masked_mean(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, *, squared: bool
) -> torch.Tensor:
    """pred and target (B, L, ...), valid (B, L) bool → the mean absolute (or squared) error
    at the valid entries. Invalid targets are replaced before the subtraction, so padding that
    holds inf or NaN leaves the value and the gradients finite."""
    valid = valid.reshape(*valid.shape, *([1] * (pred.dim() - valid.dim())))
    diff = pred - torch.where(valid, target.to(pred.dtype), 0.0)
    err = diff * diff if squared else diff.abs()
    count = valid.sum() * (pred.numel() // valid.numel())
    return torch.where(valid, err, 0.0).sum() / count.clamp(min=1)


def _fit(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T, M) cut or zero-padded to `frames` frames (the batch's padding may differ)."""
    if x.shape[1] >= frames:
        return x[:, :frames]
    return torch.nn.functional.pad(x, (0, 0, 0, frames - x.shape[1]))


def tts_loss(out: TtsOutput, batch: TtsTargets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, {"mel", "post", "duration", "energy"}) of a teacher-forced ``out`` against
    ``batch``. A ValueError when the model's frame counts differ from the batch's (the
    reference durations must sum to each utterance's frames)."""
    if not torch.equal(out.mel_lengths.to(batch.mel_lengths), batch.mel_lengths):
        raise ValueError(
            f"tts_loss: the model made {out.mel_lengths.tolist()} frames for mel_lengths "
            f"{batch.mel_lengths.tolist()}; run it with the batch's durations, which must sum "
            "to each utterance's frames"
        )
    frames = batch.mel.shape[1]
    valid_frames = ~padding_mask(batch.mel_lengths, frames)  # (B, T)
    valid_phonemes = ~padding_mask(batch.phoneme_lengths, batch.durations.shape[1])  # (B, N)
    mel = _masked_mean(_fit(out.mel, frames), batch.mel, valid_frames, squared=False)
    zero = mel.new_zeros(())
    post = zero
    if out.mel_post is not out.mel:
        post = _masked_mean(_fit(out.mel_post, frames), batch.mel, valid_frames, squared=False)
    durations = torch.where(valid_phonemes, batch.durations, 0).to(out.log_durations.dtype)
    duration = _masked_mean(out.log_durations, torch.log1p(durations), valid_phonemes,
                            squared=True)  # fmt: skip
    energy = zero
    if out.energy is not None:
        energy = _masked_mean(out.energy, batch.energy, valid_phonemes, squared=True)
    parts = {"mel": mel, "post": post, "duration": duration, "energy": energy}
    return mel + post + duration + energy, parts
