"""Multi-head self-attention with absolute, relative or local positions, and streaming masks.

Masks are boolean with True meaning "may attend" (or, from a stack whose layers all use an
implementation other than ``sdpa``, the same as an additive float mask: 0 or -inf). Every query
row always allows itself, so a padded query (or a zero-length utterance) never sees an empty row
and never produces NaN that could leak into valid frames through a later layer. How the
products are computed (``attention_impl``, ``qkv``) is :mod:`speechnas.nn.blocks.attention_impl`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.blocks._common import check_choice, check_heads, check_positive, check_window
from speechnas.nn.blocks.attention_impl import (
    ATTENTION_IMPLS,
    QKV_LAYOUTS,
    Relative,
    attend,
    gather_shift,
    restrict,
)
from speechnas.nn.blocks.masks import padding_mask, sinusoidal_at, sinusoidal_positions

PosKind = Literal["abs", "rel", "local"]
POS_KINDS: tuple[str, ...] = ("abs", "rel", "local")

__all__ = [
    "POS_KINDS",
    "MultiHeadSelfAttention",
    "PositionalInput",
    "attention_mask",
    "chunk_mask",
    "local_mask",
    "rel_shift",
    "relative_positions",
    "sinusoidal_positions",
]


def chunk_mask(length: int, chunk: int, left_chunks: int | None) -> torch.Tensor:
    """(T, T) bool: frame i sees its own chunk and `left_chunks` chunks before it (None: all)."""
    check_positive("chunk_mask", "chunk", chunk)
    idx = torch.arange(length) // chunk
    q, k = idx[:, None], idx[None, :]
    allowed = k <= q
    if left_chunks is not None:
        allowed = allowed & (k >= q - left_chunks)  # out of place, so the ONNX tracer takes it
    return allowed


def local_mask(length: int, window: int) -> torch.Tensor:
    """(T, T) bool: |i - j| <= window."""
    idx = torch.arange(length)
    return (idx[:, None] - idx[None, :]).abs() <= window


def attention_mask(
    lengths: torch.Tensor,
    length: int,
    *,
    chunk: int | None = None,
    left_chunks: int | None = None,
) -> torch.Tensor:
    """(B,) lengths → (B, T, T) bool: valid keys, within the chunk structure, plus the diagonal."""
    valid = ~padding_mask(lengths, length)  # (B, T)
    mask = valid[:, None, :].expand(-1, length, -1)
    if chunk is not None:
        mask = mask & chunk_mask(length, chunk, left_chunks).to(lengths.device)
    # The diagonal from an index comparison rather than torch.eye: ONNX Runtime has no boolean
    # EyeLike kernel, and this keeps the time axis of an exported graph symbolic.
    idx = torch.arange(length, device=lengths.device)
    return mask | (idx[:, None] == idx[None, :])


def relative_positions(length: int, dim: int) -> torch.Tensor:
    """(2T - 1, D) sinusoidal embeddings of offsets i - j = T-1, T-2, ..., -(T-1).

    The embedding of an offset does not depend on T, which keeps relative attention independent
    of how far a batch is padded.
    """
    pe = sinusoidal_positions(length, dim)  # offsets 0..T-1
    sign = torch.ones(dim)
    sign[0::2] = -1.0  # sin(-x) = -sin(x), cos(-x) = cos(x)
    return torch.cat([pe.flip(0), pe[1:] * sign], dim=0)


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """(..., T, 2T - 1) scores by offset column (T-1 - i + j) → (..., T, T) scores by key j."""
    *lead, t, w = x.shape
    assert w == 2 * t - 1, f"rel_shift expects width 2T-1={2 * t - 1}, got {w}"
    # With one zero column appended, rows are 2T wide and row i of the wanted matrix starts at
    # flat index (T - 1) + i * (2T - 1): one slicing for every T, T = 1 included, so a traced
    # graph needs no branch on the length.
    flat = F.pad(x, (0, 1)).reshape(*lead, t * (w + 1))[..., t - 1 : t - 1 + t * w]
    return flat.reshape(*lead, t, w)[..., :t]


def _masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores with a boolean mask's disallowed entries at -inf, or an additive mask added."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask


class PositionalInput(nn.Module):
    """Scale by sqrt(d_model) and, when `absolute`, add sinusoidal positions once. (B, T, D)."""

    def __init__(self, d_model: int, *, absolute: bool) -> None:
        super().__init__()
        if absolute and d_model % 2:
            raise ValueError(f"d_model: {d_model} must be even for sinusoidal positions")
        self.d_model = d_model
        self.absolute = absolute
        self.scale = math.sqrt(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale
        if self.absolute:
            x = x + sinusoidal_positions(x.shape[1], self.d_model).to(x)
        return x

    def at(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for a chunk whose first frame is frame ``offset`` (B,) of its stream."""
        x = x * self.scale
        if self.absolute:
            pos = offset[:, None] + torch.arange(x.shape[1], device=x.device)  # (B, C)
            x = x + sinusoidal_at(pos, self.d_model).to(x)
        return x


class MultiHeadSelfAttention(nn.Module):
    """Self-attention core (no norm, no residual): (B, T, D), mask (B, T, T) → (B, T, D).

    pos="abs": plain attention; positions are added at the stack input.
    pos="rel": Transformer-XL relative positions with learnable biases u (content) and v (position).
    pos="local": plain attention restricted to |i - j| <= window.

    `head_dim` (default d_model / heads) sets each head's width, so the heads' inner width
    H · Dh may differ from d_model (layers with more or fewer heads than the model's base).
    `impl` and `qkv` choose how the products and the projection are computed (see
    :mod:`~speechnas.nn.blocks.attention_impl`); the parameters are the same for every choice.
    """

    def __init__(
        self,
        d_model: int,
        heads: int,
        *,
        pos: PosKind = "abs",
        window: int | None = None,
        head_dim: int | None = None,
        impl: str = "sdpa",
        qkv: str = "packed",
    ) -> None:
        super().__init__()
        owner = "MultiHeadSelfAttention"
        check_choice(owner, "impl", impl, ATTENTION_IMPLS)
        check_choice(owner, "qkv", qkv, QKV_LAYOUTS)
        if head_dim is None:
            check_heads(owner, d_model, heads)
            head_dim = d_model // heads
        check_positive(owner, "heads", heads)
        check_positive(owner, "head_dim", head_dim)
        inner = heads * head_dim
        check_choice(owner, "pos", pos, POS_KINDS)
        check_window(owner, pos, window)
        if pos == "rel" and d_model % 2:
            raise ValueError(f"{owner}.d_model: {d_model} must be even for relative positions")
        self.heads = heads
        self.head_dim = head_dim
        self.d_model = d_model
        self.pos = pos
        self.window = window
        self.impl = impl
        self.qkv_layout = qkv
        self.qkv = nn.Linear(d_model, 3 * inner)
        self.proj = nn.Linear(inner, d_model)
        if pos == "rel":
            self.pos_proj = nn.Linear(d_model, inner, bias=False)
            self.u = nn.Parameter(torch.empty(heads, self.head_dim))
            self.v = nn.Parameter(torch.empty(heads, self.head_dim))
            nn.init.xavier_uniform_(self.u)
            nn.init.xavier_uniform_(self.v)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), mask (B, T, T) True where query i may attend key j → (B, T, D)."""
        b, t, _ = x.shape
        q, k, v = self._project(x)  # (B, T, H, Dh)
        if self.window is not None:
            mask = restrict(mask, local_mask(t, self.window).to(mask.device))
        if self.impl != "sdpa":
            rel = None
            if self.pos == "rel":
                p = self.pos_proj(relative_positions(t, self.d_model).to(q))
                rel = Relative(self.u, self.v, p.view(2 * t - 1, self.heads, -1), rel_shift)
            return self.proj(attend(self.impl, q, k, v, mask, rel))
        if self.pos == "rel":
            y = self._relative(q, k, v, mask)
        else:
            q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, H, T, Dh)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        return self.proj(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))

    def streaming_forward(
        self, x: torch.Tensor, mask: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk: x (B, C, D), mask (B, C, L + C) over the L cached keys and the chunk's,
        k_cache/v_cache (B, H, L, Dh) → y (B, C, D) and the caches of the last L frames."""
        b, c, _ = x.shape
        q, k, v = self._project(x)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, H, C, Dh)
        cached = k_cache.shape[2]
        keys = torch.cat([k_cache, k], dim=2)  # (B, H, L + C, Dh)
        values = torch.cat([v_cache, v], dim=2)
        if self.window is not None:
            i = torch.arange(c, device=x.device)[:, None] + cached
            j = torch.arange(cached + c, device=x.device)[None, :]
            mask = restrict(mask, (i - j).abs() <= self.window)
        if self.impl != "sdpa":
            y = self._chunk_by_impl(q, keys, values, mask)
        elif self.pos == "rel":
            y = self._relative_chunk(q, keys, values, mask)
        else:
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[:, None])
        keep = keys.shape[2] - cached
        out = self.proj(y.transpose(1, 2).reshape(b, c, -1))
        return out, keys[:, :, keep:], values[:, :, keep:]

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (B, T, D) → q, k, v (B, T, H, Dh): one packed matmul, or three on the thirds of the
        same weight and bias (``qkv="split"``)."""
        b, t, _ = x.shape
        if self.qkv_layout == "packed":
            return self.qkv(x).view(b, t, 3, self.heads, self.head_dim).unbind(2)
        parts = zip(self.qkv.weight.chunk(3), self.qkv.bias.chunk(3), strict=True)
        return tuple(F.linear(x, w, bias).view(b, t, self.heads, -1) for w, bias in parts)

    def _chunk_by_impl(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """A streamed chunk by a non-default ``impl``: q (B, H, C, Dh), k/v (B, H, K, Dh) with
        the queries as the last C keys, mask (B, C, K) → (B, H, C, Dh)."""
        c, keys = q.shape[2], k.shape[2]
        rel = None
        if self.pos == "rel":
            offsets = torch.arange(keys - 1, -c, -1, device=q.device)  # (K + C - 1,)
            p = self.pos_proj(sinusoidal_at(offsets, self.d_model).to(q))
            rel = Relative(
                self.u, self.v, p.view(-1, self.heads, self.head_dim),
                gather_shift(c, keys, q.device),
            )  # fmt: skip
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, T, H, Dh)
        y = attend(self.impl, q, k, v, mask, rel)  # (B, C, H·Dh)
        return y.view(*y.shape[:2], self.heads, self.head_dim).transpose(1, 2)

    def _relative_chunk(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """q (B, H, C, Dh), k/v (B, H, K, Dh) with the queries as the last C keys → (B, H, C, Dh).

        Query i sits at key position K - C + i, so the offsets i - j run from K - 1 down to
        -(C - 1): their embeddings are made once and each score picked by its offset (a gather
        instead of :func:`rel_shift`, which needs as many keys as queries)."""
        c, keys = q.shape[2], k.shape[2]
        offsets = torch.arange(keys - 1, -c, -1, device=q.device)  # (K + C - 1,)
        p = self.pos_proj(sinusoidal_at(offsets, self.d_model).to(q))
        p = p.view(-1, self.heads, self.head_dim).transpose(0, 1)  # (H, K + C - 1, Dh)
        content = (q + self.u[:, None]) @ k.transpose(-2, -1)  # (B, H, C, K)
        by_offset = (q + self.v[:, None]) @ p.transpose(-2, -1)  # (B, H, C, K + C - 1)
        i = torch.arange(c, device=q.device)[:, None]
        j = torch.arange(keys, device=q.device)[None, :]
        column = (c - 1 - i + j).expand(*by_offset.shape[:2], c, keys)  # offset K-C+i-j's column
        position = torch.gather(by_offset, -1, column)
        scores = (content + position) / math.sqrt(self.head_dim)
        scores = _masked(scores, mask[:, None])
        return torch.softmax(scores, dim=-1) @ v

    def _relative(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """q, k, v (B, T, H, Dh) → (B, H, T, Dh)."""
        t = q.shape[1]
        p = self.pos_proj(relative_positions(t, self.d_model).to(q))
        p = p.view(2 * t - 1, self.heads, self.head_dim).transpose(0, 1)  # (H, 2T-1, Dh)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, Dh)
        content = (q + self.u).transpose(1, 2) @ k.transpose(-2, -1)  # (B, H, T, T)
        position = rel_shift((q + self.v).transpose(1, 2) @ p.transpose(-2, -1))  # (B, H, T, T)
        scores = (content + position) / math.sqrt(self.head_dim)
        scores = _masked(scores, mask[:, None])
        return torch.softmax(scores, dim=-1) @ v
