"""The contract every decoder of the zoo implements, and small shared helpers.

Shapes: B batch, T encoder frames, D encoder width, U target tokens, V vocabulary size.
Token id 0 (``BLANK``) is the blank and the padding id; ids 1..V-1 are real tokens.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from speechnas.data.tokenizer import BLANK

__all__ = ["BLANK", "Decoder", "DecoderModule", "check_beam", "check_common"]


@runtime_checkable
class Decoder(Protocol):
    """Maps encoder output to a training loss and to token sequences."""

    vocab_size: int

    def utterance_losses(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        """enc (B, T, D), enc_lens (B,), tokens (B, U) padded, token_lens (B,) → (B,) losses.

        Each entry is the summed loss of one utterance; padding does not change it.
        """
        ...

    def loss(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        """Scalar: the mean over the batch of ``utterance_losses``."""
        ...

    def decode(
        self, enc: torch.Tensor, enc_lens: torch.Tensor, *, beam: int = 1
    ) -> list[list[int]]:
        """enc (B, T, D), enc_lens (B,) → one list of token ids (1..V-1) per utterance."""
        ...


class DecoderModule(nn.Module):
    """Base of the zoo's decoders: ``loss`` is the batch mean of ``utterance_losses``."""

    def utterance_losses(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        raise NotImplementedError

    def loss(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        return self.utterance_losses(enc, enc_lens, tokens, token_lens).sum() / enc.shape[0]


def check_common(d_model: int, vocab_size: int) -> None:
    if not isinstance(d_model, int) or d_model <= 0:
        raise ValueError(f"decoder d_model: expected a positive integer, got {d_model!r}")
    if not isinstance(vocab_size, int) or vocab_size < 2:
        raise ValueError(
            f"decoder vocab_size: expected an integer >= 2 (blank + one token), got {vocab_size!r}"
        )


def check_beam(beam: int) -> None:
    if not isinstance(beam, int) or beam < 1:
        raise ValueError(f"decode beam: expected a positive integer, got {beam!r}")
