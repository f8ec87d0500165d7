"""Bit widths per sub-module under a model-size budget, by dynamic programming.

The problem: choose bits b_i for every sub-module i to minimise Σ_i S_i(b_i) (the KL
sensitivities, taken as additive) subject to Σ_i bytes_i(b_i) + fixed ≤ budget. Bytes are far
too many to index a table by, so the program keeps, after each sub-module, the Pareto set of
(bytes so far, sensitivity so far) over all choices for the sub-modules seen: any partial choice
that is both larger and more sensitive than another can never be part of the best completion.
The final set is the exact size/sensitivity front of the whole model; the allocation under a
budget is its least sensitive point that fits. A test checks it against brute force.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from speechnas.compress.sensitivity import Sensitivity

__all__ = ["Allocation", "allocate", "module_bytes", "pareto_allocations", "uniform_allocation"]


def module_bytes(numel: int, channels: int, bits: int) -> int:
    """Bytes of one weight at ``bits``: packed values plus a float32 scale per output channel
    (float32 values when ``bits`` is 32); the rule of :func:`speechnas.nn.quant.weight_bytes`."""
    if bits == 32:
        return 4 * numel
    return (numel * bits + 7) // 8 + 4 * channels


@dataclass(frozen=True, slots=True)
class Allocation:
    """Bits per sub-module, the model's bytes with them (``fixed`` bytes included) and the
    summed sensitivity."""

    bits: dict[str, int]
    bytes: int
    sensitivity: float

    def average_bits(self, numel: Mapping[str, int]) -> float:
        """Weight-count-weighted mean bit width of the allocated sub-modules."""
        total = sum(numel[m] for m in self.bits)
        return sum(numel[m] * b for m, b in self.bits.items()) / total

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _cost(s: Sensitivity, name: str, bits: int) -> tuple[int, float]:
    kl = 0.0 if bits == 32 else s.kl[name][bits]
    return module_bytes(s.numel[name], s.channels[name], bits), kl


def _options(s: Sensitivity, bits: Iterable[int] | None) -> list[int]:
    measured = sorted(set.intersection(*(set(r) for r in s.kl.values())))
    if bits is None:
        return measured
    wanted = sorted(set(bits))
    missing = [b for b in wanted if b != 32 and b not in measured]
    if missing:
        raise ValueError(f"bits: {missing} were not measured (the sensitivities have {measured})")
    return wanted


def pareto_allocations(
    s: Sensitivity, *, fixed_bytes: int = 0, bits: Iterable[int] | None = None
) -> list[Allocation]:
    """Every allocation on the size/sensitivity front, smallest first (sensitivity falls as
    size grows). ``bits``: the widths allowed (default: every measured width)."""
    options = _options(s, bits)
    names = s.modules
    if not names:
        raise ValueError("sensitivity: holds no sub-modules")
    # front: list of (bytes, sensitivity, back-pointer) per stage; back = (prev index, bits)
    stages: list[list[tuple[int, float, int, int]]] = []
    front: list[tuple[int, float, int, int]] = [(fixed_bytes, 0.0, -1, 0)]
    for name in names:
        cand = [
            (size + c[0], sens + c[1], i, b)
            for i, (size, sens, _, _) in enumerate(front)
            for b in options
            for c in [_cost(s, name, b)]
        ]
        cand.sort(key=lambda t: (t[0], t[1]))
        kept: list[tuple[int, float, int, int]] = []
        for t in cand:
            if not kept or t[1] < kept[-1][1]:
                kept.append(t)
        stages.append(kept)
        front = kept
    out = []
    for end in range(len(front)):
        chosen: dict[str, int] = {}
        idx = end
        for stage in range(len(names) - 1, -1, -1):
            _, _, prev, b = stages[stage][idx]
            chosen[names[stage]] = b
            idx = prev
        size, sens, _, _ = front[end]
        out.append(Allocation(bits={n: chosen[n] for n in names}, bytes=size, sensitivity=sens))
    return out


def allocate(
    s: Sensitivity,
    budget_bytes: int,
    *,
    fixed_bytes: int = 0,
    bits: Iterable[int] | None = None,
) -> Allocation:
    """The least sensitive allocation whose model fits in ``budget_bytes``; a ValueError giving
    the smallest achievable size when none does."""
    front = pareto_allocations(s, fixed_bytes=fixed_bytes, bits=bits)
    fitting = [a for a in front if a.bytes <= budget_bytes]
    if not fitting:
        raise ValueError(
            f"size budget: {budget_bytes} bytes is below the smallest achievable model, "
            f"{front[0].bytes} bytes (every sub-module at {min(front[0].bits.values())} bits); "
            "raise the budget or allow fewer bits"
        )
    return fitting[-1]


def uniform_allocation(s: Sensitivity, bits: int, *, fixed_bytes: int = 0) -> Allocation:
    """Every sub-module at ``bits``: the comparison for a mixed allocation."""
    total_bytes, total_kl = fixed_bytes, 0.0
    for name in s.modules:
        size, kl = _cost(s, name, bits)
        total_bytes += size
        total_kl += kl
    return Allocation(bits=dict.fromkeys(s.modules, bits), bytes=total_bytes, sensitivity=total_kl)
