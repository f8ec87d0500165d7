"""LayerNorm that stays finite in low precision: a mean-absolute-deviation (MAD) pre-normaliser.

LayerNorm computes the variance of its input, i.e. squares of activations. In float16 (and in
the low-precision arithmetic of phone and watch accelerators, which do not widen to float32)
an activation 256 away from its mean already squares past float16's largest finite value,
65504, and the output becomes inf or NaN. The on-device Conformer (Apple, 2024) divides the
input by its mean absolute deviation first: MAD needs only absolute values and means, which stay
in range, and after the division the squares are O(1). LayerNorm is invariant to the scale of
its input (up to its epsilon), so in float32 the pre-normalised layer computes the same
function with the same parameters: a checkpoint trained with one loads into the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NORMS", "MadLayerNorm", "layer_norm_decomposed", "use_mad_prenorm"]

#: The normalisation choices of an architecture (``norm``).
NORMS: tuple[str, ...] = ("layernorm", "mad_prenorm")


class MadLayerNorm(nn.LayerNorm):
    """x / (mean |x - mean x| + eps) → LayerNorm, over the last dimension: (..., D) → (..., D).

    The parameters (``weight``, ``bias``) and their names are those of :class:`nn.LayerNorm`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        mad = centred.abs().mean(-1, keepdim=True)
        y = centred / (mad + self.eps)
        return F.layer_norm(y, self.normalized_shape, self.weight, self.bias, self.eps)


def use_mad_prenorm(model: nn.Module) -> nn.Module:
    """Turns every ``nn.LayerNorm`` of ``model`` into a :class:`MadLayerNorm` in place (same
    parameters, same state-dict keys). Returns ``model``."""
    for m in model.modules():
        if type(m) is nn.LayerNorm:
            m.__class__ = MadLayerNorm
    return model


def layer_norm_decomposed(
    x: torch.Tensor, norm: nn.LayerNorm, *, prenorm: bool = False
) -> torch.Tensor:
    """``norm`` (or its MAD-pre-normalised form) computed op by op in ``x``'s dtype, the way a
    graph of elementwise ops and reductions runs on an accelerator without wider accumulators
    (PyTorch's fused CPU kernel widens float16 to float32 inside, which hides the overflow)."""
    if prenorm:
        centred = x - x.mean(-1, keepdim=True)
        x = centred / (centred.abs().mean(-1, keepdim=True) + norm.eps)
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) * (x - mean)).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + norm.eps)
    return y * norm.weight.to(x.dtype) + norm.bias.to(x.dtype)
