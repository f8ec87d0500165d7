"""The settings of one differentiable architecture compression run (:mod:`.darts`).

One frozen dataclass, validated on construction, so a wrong value fails before a checkpoint is
loaded or a step is taken, with a message naming the field, the value and what is allowed.
Budgets are counted in optimiser steps, not minutes, so a result means the same on any machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SCHEDULES", "WEIGHT_TRAINING", "DartsConfig"]

#: ``pipelined``: weights first (training data), then the architecture with the weights frozen
#: (dev data). ``joint``: after the weight warm-up, alternating weight and architecture steps
#: (first-order DARTS).
SCHEDULES = ("pipelined", "joint")
#: How stage 1 trains the shared weights: one uniformly drawn candidate per layer and step
#: (``sample``, as cheap as the plain model), or every candidate mixed with equal weights.
WEIGHT_TRAINING = ("sample", "uniform")


def _number(name: str, value: Any, *, low: float, strict: bool, integer: bool = False) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if ok:
        ok = value > low if strict else value >= low
    if not ok:
        what = "an integer" if integer else "a number"
        raise ValueError(f"darts.{name}: {value!r} is not {what} {'>' if strict else '>='} {low}")


@dataclass(frozen=True, slots=True)
class DartsConfig:
    """One compression run; see the module docstring of :mod:`speechnas.compress.darts`."""

    #: FFN hidden widths as fractions of each layer's trained ``ffn_dim``; must contain 1.0.
    widths: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    #: Bottleneck widths of the low-rank factorisation W = A·B of both FFN linears; 0 is the
    #: full-rank (unfactorised) FFN and must be present. A rank that saves no parameters at a
    #: width h (k >= d_model·h / (d_model + h)) is left out of that layer's choices.
    ranks: tuple[int, ...] = (0, 96, 64, 32)
    gumbel: bool = True  # Gumbel-softmax mixing; False: plain softmax of the logits (DARTS)
    tau0: float = 2.0  # Gumbel temperature at the first architecture step
    tau_min: float = 0.2  # ... decayed exponentially to this one at the last step
    eta: float = 1.0  # weight of the expected-size penalty (FFN params / fp32 FFN params)
    schedule: str = "pipelined"
    weight_training: str = "sample"
    weight_steps: int = 200  # stage 1 (and the warm-up before a joint search)
    arch_steps: int = 150  # stage 2 (joint: rounds of one weight and one arch step)
    lr_weights: float = 3e-4
    lr_arch: float = 0.05
    semi_orthogonal: bool = False  # keep the d_model-side factor of every W = A·B semi-orthogonal
    projection_period: int = 4  # weight steps between two semi-orthogonal projection steps
    seed: int = 0
    #: Batch size in seconds of audio; None: the checkpoint's training ``optim.max_batch_seconds``.
    batch_seconds: float | None = None
    threads: int = 2

    def __post_init__(self) -> None:
        widths, ranks = self.widths, self.ranks
        if not isinstance(widths, tuple) or not widths:
            raise ValueError(f"darts.widths: {widths!r} is not a non-empty tuple of fractions")
        for w in widths:
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0.0 < w <= 1.0:
                raise ValueError(f"darts.widths: {w!r} is not a fraction in (0, 1]")
        if 1.0 not in widths or len(set(widths)) != len(widths):
            raise ValueError(f"darts.widths: {list(widths)} must hold 1.0 and no repeats")
        if not isinstance(ranks, tuple) or not ranks:
            raise ValueError(f"darts.ranks: {ranks!r} is not a non-empty tuple of integers")
        for r in ranks:
            if isinstance(r, bool) or not isinstance(r, int) or r < 0:
                raise ValueError(f"darts.ranks: {r!r} is not an integer >= 0 (0 = full rank)")
        if 0 not in ranks or len(set(ranks)) != len(ranks):
            raise ValueError(f"darts.ranks: {list(ranks)} must hold 0 (full rank) and no repeats")
        for name in ("gumbel", "semi_orthogonal"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"darts.{name}: {getattr(self, name)!r} is not true or false")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"darts.schedule: {self.schedule!r} is not one of {list(SCHEDULES)}")
        if self.weight_training not in WEIGHT_TRAINING:
            raise ValueError(
                f"darts.weight_training: {self.weight_training!r} is not one of "
                f"{list(WEIGHT_TRAINING)}"
            )
        for name in ("tau0", "tau_min", "lr_weights", "lr_arch"):
            _number(name, getattr(self, name), low=0.0, strict=True)
        if self.tau_min > self.tau0:
            raise ValueError(f"darts.tau_min: {self.tau_min!r} is above tau0={self.tau0!r}")
        _number("eta", self.eta, low=0.0, strict=False)
        for name in ("weight_steps", "arch_steps", "seed"):
            _number(name, getattr(self, name), low=0, strict=False, integer=True)
        for name in ("projection_period", "threads"):
            _number(name, getattr(self, name), low=0, strict=True, integer=True)
        if self.batch_seconds is not None:
            _number("batch_seconds", self.batch_seconds, low=0.0, strict=True)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"], d["ranks"] = list(self.widths), list(self.ranks)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DartsConfig:
        """The config of a mapping (a result's ``config``); unknown keys are named."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"darts: unknown key(s) {unknown}; allowed: {names}")
        values = dict(d)
        for name in ("widths", "ranks"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)

    def replace(self, **changes: Any) -> DartsConfig:
        return dataclasses.replace(self, **changes)

    def stage1_key(self) -> tuple[Any, ...]:
        """What stage 1 depends on: configs with the same key share the trained weights (an
        η sweep, or Gumbel against softmax, trains the supernet weights once)."""
        return (
            self.widths, self.ranks, self.weight_training, self.weight_steps, self.lr_weights,
            self.semi_orthogonal, self.projection_period, self.seed, self.batch_seconds,
        )  # fmt: skip
