"""How self-attention is computed: interchangeable implementations over the same parameters.

Every implementation computes softmax(q·kᵀ / sqrt(Dh) + mask) · v per head (plus the
Transformer-XL position term for relative attention) from the same projections, so one
checkpoint runs under any of them; they differ only in the graph a runtime executes:

* ``sdpa``: ``F.scaled_dot_product_attention`` (the fused kernel in PyTorch; in ONNX a
  MatMul/Softmax graph with its own mask conversion and NaN guard per layer). Relative
  attention has no fused form (its position term is not a mask) and is computed by matmul.
  The default: what every architecture used before the choice existed.
* ``matmul``: batched matmuls on (B, H, T, Dh), the scores masked by an additive float mask
  (0 where allowed, -inf elsewhere) that the stack builds once for all its layers.
* ``einsum``: the same products as ``torch.einsum`` on the projections' own (B, T, H, Dh)
  layout, with no explicit transposes.
* ``split_heads``: each head on its own (B, T, Dh) slice, the heads' outputs concatenated
  (the on-device Conformer's split/concat: small working sets, no 4-D tensors).

and in how the query/key/value projection runs (``qkv``): ``packed`` (one matmul to 3·H·Dh
outputs, then split; the default) or ``split`` (three matmuls on the thirds of the same weight).

A mask is (B, T, S) boolean (True: may attend) or additive float (0 or -inf); every query row
allows at least itself, so no softmax row is empty and the NaN guard of ``sdpa`` is not needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "ATTENTION_IMPLS",
    "QKV_LAYOUTS",
    "Relative",
    "additive_mask",
    "attend",
    "gather_shift",
    "restrict",
]

#: The implementations of the attention products (``attention_impl``); the first is the default.
ATTENTION_IMPLS: tuple[str, ...] = ("sdpa", "matmul", "einsum", "split_heads")
#: How the query/key/value projection runs (``qkv``); the first is the default.
QKV_LAYOUTS: tuple[str, ...] = ("packed", "split")


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """(..., T, S) bool, True where attention is allowed → float32 of the same shape: 0 there,
    -inf elsewhere, to be added to the scores before the softmax."""
    return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, float("-inf"))


def restrict(mask: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """A boolean or additive ``mask`` further limited to where ``allowed`` (bool, broadcastable)."""
    if mask.dtype == torch.bool:
        return mask & allowed
    return mask.masked_fill(~allowed, float("-inf"))


def _as_additive(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.is_floating_point() else additive_mask(mask)


@dataclass(frozen=True, slots=True)
class Relative:
    """The relative-position terms of one call: content bias ``u`` and position bias ``v``
    (H, Dh), projected offset embeddings ``p`` (P, H, Dh), and ``shift``, which maps scores by
    offset (..., T, P) to scores by key (..., T, S)."""

    u: torch.Tensor
    v: torch.Tensor
    p: torch.Tensor
    shift: Callable[[torch.Tensor], torch.Tensor]


def gather_shift(queries: int, keys: int, device: torch.device) -> Callable[..., torch.Tensor]:
    """The ``shift`` of a streamed chunk whose ``queries`` queries are its last keys: offsets run
    from ``keys - 1`` down to ``-(queries - 1)``, so query i and key j read column C-1-i+j."""
    i = torch.arange(queries, device=device)[:, None]
    j = torch.arange(keys, device=device)[None, :]
    column = queries - 1 - i + j  # (C, K)

    def shift(by_offset: torch.Tensor) -> torch.Tensor:
        return torch.gather(by_offset, -1, column.expand(*by_offset.shape[:-2], queries, keys))

    return shift


def attend(
    impl: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    rel: Relative | None = None,
) -> torch.Tensor:
    """q (B, T, H, Dh), k and v (B, S, H, Dh), mask (B, T, S) → (B, T, H·Dh) by ``impl``."""
    if impl == "sdpa":
        return _sdpa(q, k, v, mask, rel)
    if impl == "matmul":
        return _matmul(q, k, v, _as_additive(mask), rel)
    if impl == "einsum":
        return _einsum(q, k, v, _as_additive(mask), rel)
    if impl == "split_heads":
        return _split_heads(q, k, v, _as_additive(mask), rel)
    raise ValueError(f"attention_impl: {impl!r} is not one of {list(ATTENTION_IMPLS)}")


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, rel: Relative | None
) -> torch.Tensor:
    if rel is not None:
        return _matmul(q, k, v, _as_additive(mask), rel)
    q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, H, T, Dh)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
    return y.transpose(1, 2).flatten(2)


def _matmul(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, rel: Relative | None
) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5
    kt = k.permute(0, 2, 3, 1)  # (B, H, Dh, S)
    if rel is None:
        scores = (q * scale).transpose(1, 2) @ kt  # (B, H, T, S)
    else:
        content = (q + rel.u).transpose(1, 2) @ kt
        by_offset = (q + rel.v).transpose(1, 2) @ rel.p.permute(1, 2, 0)  # (B, H, T, P)
        scores = (content + rel.shift(by_offset)) * scale
    probs = torch.softmax(scores + bias[:, None], dim=-1)
    return (probs @ v.transpose(1, 2)).transpose(1, 2).flatten(2)


def _einsum(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, rel: Relative | None
) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5
    if rel is None:
        scores = torch.einsum("bthd,bshd->bhts", q * scale, k)
    else:
        content = torch.einsum("bthd,bshd->bhts", q + rel.u, k)
        by_offset = torch.einsum("bthd,phd->bhtp", q + rel.v, rel.p)
        scores = (content + rel.shift(by_offset)) * scale
    probs = torch.softmax(scores + bias[:, None], dim=-1)
    return torch.einsum("bhts,bshd->bthd", probs, v).flatten(2)


def _split_heads(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, rel: Relative | None
) -> torch.Tensor:
    heads, dh = q.shape[2], q.shape[3]
    scale = dh**-0.5
    qs, ks, vs = (z.flatten(2).split(dh, dim=-1) for z in (q, k, v))  # H × (B, T, Dh)
    outs = []
    for h in range(heads):
        kt = ks[h].transpose(1, 2)  # (B, Dh, S)
        if rel is None:
            scores = (qs[h] * scale) @ kt  # (B, T, S)
        else:
            content = (qs[h] + rel.u[h]) @ kt
            by_offset = (qs[h] + rel.v[h]) @ rel.p[:, h].transpose(0, 1)  # (B, T, P)
            scores = (content + rel.shift(by_offset)) * scale
        outs.append(torch.softmax(scores + bias, dim=-1) @ vs[h])  # (B, T, Dh)
    return torch.cat(outs, dim=-1)
