"""Padding masks and sinusoidal positions, shared by every encoder block and decoder."""

from __future__ import annotations

import math

import torch

__all__ = ["padding_mask", "sinusoidal_at", "sinusoidal_positions", "stream_mask"]


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths → (B, T) bool, True on padded frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(T, D) absolute sinusoidal position encoding: sin in the even columns, cos in the odd.

    Interleaved by a stack rather than written into strided slices, which an exported graph
    would run as two ScatterND per call (the values are the same, bit for bit)."""
    if dim % 2:
        raise ValueError(f"sinusoidal_positions: dim {dim} must be even")
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angle = pos * div  # (T, D/2)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(-2)


def sinusoidal_at(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """(...) positions (any sign, any integer or float dtype) → (..., D) sinusoidal encodings,
    the rows :func:`sinusoidal_positions` gives at those positions."""
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angle = pos.to(torch.float32)[..., None] * div.to(pos.device)
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(-2)


def stream_mask(
    offset: torch.Tensor,
    lengths: torch.Tensor,
    cache: int,
    chunk: int,
    cache_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Who may attend whom in one streamed chunk: (B, C, cache + C) bool.

    Keys are the ``cache`` frames before the chunk (the chunk's left context, so the cache holds
    exactly what the full forward's chunk mask allows) and the chunk's ``C`` frames. A cached key
    is valid once the stream has produced it (``offset`` frames so far, (B,)); a chunk key is
    valid below the chunk's ``lengths`` (B,). Every query may attend itself, as in the full mask.
    ``cache_valid`` (B, cache) bool, if given, must also allow a cached key (a runtime that
    passes its own mask of the cache, such as sherpa-onnx's WeNet format).
    """
    keys = torch.arange(cache + chunk, device=offset.device)
    cached_ok = keys[None, :] >= (cache - offset)[:, None]  # (B, K): stream position >= 0
    if cache_valid is not None:
        chunk_part = torch.ones_like(cached_ok[:, cache:])
        cached_ok = cached_ok & torch.cat([cache_valid, chunk_part], dim=1)
    in_chunk = (keys[None, :] - cache) < lengths[:, None]  # (B, K)
    is_cached = keys[None, :] < cache
    valid = (is_cached & cached_ok) | (~is_cached & in_chunk)  # (B, K); ORT has no bool Where
    q = torch.arange(chunk, device=offset.device)
    diagonal = keys[None, :] == (q[:, None] + cache)  # (C, K)
    return valid[:, None, :] | diagonal[None]
