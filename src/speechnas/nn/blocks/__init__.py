"""Encoder building blocks, one contract for all:
`forward(x (B, T, D_in), lengths (B,)) -> (y (B, T', out_dim), lengths (B,))`, padding-invariant."""

from speechnas.nn.blocks.attention import (
    MultiHeadSelfAttention,
    attention_mask,
    chunk_mask,
    local_mask,
    sinusoidal_positions,
)
from speechnas.nn.blocks.cnn import SeparableConvLayerConfig, SeparableConvStack
from speechnas.nn.blocks.conformer import ConformerLayer, ConformerLayerConfig, ConformerStack
from speechnas.nn.blocks.ebranchformer import (
    EBranchformerLayer,
    EBranchformerLayerConfig,
    EBranchformerStack,
)
from speechnas.nn.blocks.encoder import ENCODERS, EncoderChain, make_encoder
from speechnas.nn.blocks.feedforward import FeedForward
from speechnas.nn.blocks.frontend import LearnableFrontend
from speechnas.nn.blocks.rnn import LSTMEncoder, LSTMLayer
from speechnas.nn.blocks.subsampling import Conv2dSubsampling, subsampled_lengths
from speechnas.nn.blocks.transformer import (
    TransformerLayer,
    TransformerLayerConfig,
    TransformerStack,
)

__all__ = [
    "ENCODERS",
    "ConformerLayer",
    "ConformerLayerConfig",
    "ConformerStack",
    "Conv2dSubsampling",
    "EBranchformerLayer",
    "EBranchformerLayerConfig",
    "EBranchformerStack",
    "EncoderChain",
    "FeedForward",
    "LSTMEncoder",
    "LSTMLayer",
    "LearnableFrontend",
    "MultiHeadSelfAttention",
    "SeparableConvLayerConfig",
    "SeparableConvStack",
    "TransformerLayer",
    "TransformerLayerConfig",
    "TransformerStack",
    "attention_mask",
    "chunk_mask",
    "local_mask",
    "make_encoder",
    "sinusoidal_positions",
    "subsampled_lengths",
]
