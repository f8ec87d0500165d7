"""Symmetric per-channel n-bit fake quantization of weights, trainable through a straight-through
estimator.

Every weight of a quantizable sub-module (``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``) is
snapped to ``2^(n-1) - 1`` signed levels on each side of zero, with one scale per output channel
(``max |w|`` of that channel over the level count), and kept in float: the model computes what
an n-bit integer model with float scales computes. ``32`` bits means "not quantized".

The quantizer is attached with :mod:`torch.nn.utils.parametrize`, so the module still computes
``F.linear(x, weight)`` and training updates the latent float weight (``original``) while the
forward sees its quantized value; the rounding is bypassed in the backward pass (the
straight-through estimator), so gradients reach the latent weight unchanged.

Written here rather than taken from Brevitas or NNCF: both replace the layers with their own
quantized classes, which the ONNX export, the latency profiler and the bit allocation would
then have to know, and neither exports 3- or 6-bit weights to a graph ONNX Runtime runs. The
quantizer itself is a few lines; what the package adds is the allocation around it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "BITS",
    "FakeQuant",
    "allocation_of",
    "apply_bits",
    "bake",
    "load_plain_state",
    "plain_state_dict",
    "quantizable",
    "quantize_codes",
    "quantize_weight",
    "remove_bits",
    "weight_bytes",
]

#: The bit widths a sub-module may get; 32 leaves it in float.
BITS: tuple[int, ...] = (2, 3, 4, 6, 8, 32)
_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _check_bits(bits: int, where: str = "bits") -> int:
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"{where}: {bits!r} is not one of {list(BITS)}")
    return bits


def quantize_codes(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (same shape as ``w``, in [-(2^(bits-1) - 1), 2^(bits-1) - 1]) and the
    per-output-channel scales (out,) of ``w`` at ``bits`` < 32: codes * scale is the quantized
    weight. The one quantizer: fake quantization and the low-bit export both use it."""
    _check_bits(bits)
    if bits == 32:
        raise ValueError("bits: 32 means unquantized; there are no codes")
    levels = 2 ** (bits - 1) - 1
    w = w.detach()
    scale = w.reshape(w.shape[0], -1).abs().amax(dim=1).clamp(min=1e-12) / levels  # (out,)
    codes = torch.clamp(
        torch.round(w / scale.reshape((-1,) + (1,) * (w.dim() - 1))), -levels, levels
    )
    return codes, scale


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` (out, ...) snapped to ``bits``-bit symmetric levels per output channel.

    The value is the quantized weight; its gradient with respect to ``w`` is the identity
    (straight-through). ``bits == 32`` returns ``w`` itself.
    """
    _check_bits(bits)
    if bits == 32:
        return w
    codes, scale = quantize_codes(w, bits)
    q = codes * scale.reshape((-1,) + (1,) * (w.dim() - 1))
    return w + (q - w).detach()


class FakeQuant(nn.Module):
    """A parametrization: weight → its ``bits``-bit fake-quantized value."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = _check_bits(bits)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_weight(w, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def quantizable(model: nn.Module) -> dict[str, nn.Module]:
    """Name → every sub-module whose weight can be quantized, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _TYPES)}


def _resolve(model: nn.Module, allocation: Mapping[str, int]) -> dict[str, nn.Module]:
    mods = quantizable(model)
    unknown = sorted(set(allocation) - set(mods))
    if unknown:
        raise ValueError(
            f"bit allocation: {unknown[:5]} are not quantizable sub-modules of the model "
            f"(it has {len(mods)}, e.g. {list(mods)[:3]})"
        )
    for name, bits in allocation.items():
        _check_bits(bits, f"bit allocation[{name!r}]")
    return mods


def apply_bits(model: nn.Module, allocation: Mapping[str, int]) -> nn.Module:
    """Attaches a :class:`FakeQuant` of the given width to each named sub-module's weight
    (replacing any earlier one); 32 removes it. Returns ``model``."""
    mods = _resolve(model, allocation)
    for name, bits in allocation.items():
        m = mods[name]
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        if bits != 32:
            parametrize.register_parametrization(m, "weight", FakeQuant(bits))
    return model


def remove_bits(model: nn.Module) -> nn.Module:
    """Detaches every quantizer, restoring the latent float weights. Returns ``model``."""
    for m in quantizable(model).values():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    return model


def bake(model: nn.Module) -> dict[str, int]:
    """Replaces every fake-quantized weight by its quantized value, so the model is an
    ordinary module again (its state dict loads into a fresh model of the same architecture);
    returns the allocation it had (name → bits, 32 for the float ones)."""
    out = {}
    for name, m in quantizable(model).items():
        if parametrize.is_parametrized(m, "weight"):
            out[name] = m.parametrizations.weight[0].bits
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        else:
            out[name] = 32
    return out


def _latent(m: nn.Module) -> torch.Tensor:
    """The float weight training updates (under a quantizer, its ``original``)."""
    if parametrize.is_parametrized(m, "weight"):
        return m.parametrizations.weight.original
    return m.weight


def weight_bytes(model: nn.Module, allocation: Mapping[str, int] | None = None) -> int:
    """Bytes to store the model with ``allocation`` (name → bits; missing names and every
    other parameter or buffer stay float32): the packed n-bit weights, rounded up to whole
    bytes per tensor, plus one float32 scale per output channel of each quantized weight."""
    allocation = dict(allocation or {})
    mods = _resolve(model, allocation)
    packed = {}
    for name, bits in allocation.items():
        if bits != 32:
            w = _latent(mods[name])
            packed[id(w)] = (w.numel() * bits + 7) // 8 + 4 * w.shape[0]
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        total += packed[id(t)] if id(t) in packed else t.element_size() * t.numel()
    return total


def allocation_of(model: nn.Module) -> dict[str, int]:
    """Name → bits of every fake-quantized sub-module (empty for a float model)."""
    return {
        name: m.parametrizations.weight[0].bits
        for name, m in quantizable(model).items()
        if parametrize.is_parametrized(m, "weight")
    }


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the model as a float model would have it: a fake-quantized weight
    appears under its plain name (``...weight``) with its quantized value, so the tensors load
    into a fresh model of the same architecture."""
    state = {}
    for key, value in model.state_dict().items():
        if ".parametrizations.weight.original" in key:
            continue
        state[key] = value
    for name, m in quantizable(model).items():
        if parametrize.is_parametrized(m, "weight"):
            state[f"{name}.weight" if name else "weight"] = m.weight.detach().clone()
    return state


def load_plain_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Loads a :func:`plain_state_dict` (or any float model's state) into ``model``, which may
    be fake-quantized: a quantized weight's latent float value becomes the stored value."""
    quantized = {
        f"{n}.weight": m for n, m in quantizable(model).items()
        if parametrize.is_parametrized(m, "weight")
    }  # fmt: skip
    rest = {k: v for k, v in state.items() if k not in quantized}
    own = {k for k in model.state_dict() if ".parametrizations.weight.original" not in k}
    missing = sorted(own - set(rest))
    unexpected = sorted(set(rest) - own)
    if missing or unexpected or set(quantized) - set(state):
        raise ValueError(
            f"state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    with torch.no_grad():
        for key, m in quantized.items():
            m.parametrizations.weight.original.copy_(state[key])
    model.load_state_dict(rest, strict=False)
