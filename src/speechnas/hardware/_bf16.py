"""A module behind a wrapper that casts its float inputs to bfloat16.

Its own module (not a closure in ``backends``) so that the memory probe's child process can
unpickle the wrapped module, and so that ``backends`` keeps importing torch lazily.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Bf16Inputs"]


class Bf16Inputs(nn.Module):
    """Calls ``inner`` (a bfloat16 module) with float inputs cast to bfloat16; integer inputs,
    such as lengths, pass unchanged; outputs stay as ``inner`` returns them."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor) -> Any:
        return self.inner(*(a.to(torch.bfloat16) if a.is_floating_point() else a for a in args))
