"""Decoders behind one interface (see ``base.Decoder``), chosen by name.

>>> dec = make_decoder("ctc", d_model=144, vocab_size=29)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from speechnas.nn.decoders.attention import AttentionDecoder
from speechnas.nn.decoders.base import Decoder
from speechnas.nn.decoders.ctc import CTCDecoder
from speechnas.nn.decoders.rnnt import RNNTDecoder

__all__ = ["DECODERS", "AttentionDecoder", "CTCDecoder", "Decoder", "RNNTDecoder", "make_decoder"]

DECODERS: dict[str, type[nn.Module]] = {
    "ctc": CTCDecoder,
    "rnnt": RNNTDecoder,
    "attention": AttentionDecoder,
}


def make_decoder(kind: str, **kwargs: Any) -> nn.Module:
    """Build the decoder named ``kind`` with its constructor's arguments (d_model, vocab_size…)."""
    if kind not in DECODERS:
        raise ValueError(f"decoder kind {kind!r} is unknown; choose from {sorted(DECODERS)}")
    return DECODERS[kind](**kwargs)
