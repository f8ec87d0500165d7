"""Architectures as flat parameter dicts, the form Optuna and the policy strategies work with.

A scalar choice keeps its name; a per-layer choice becomes one entry per layer, ``name.0``,
``name.1``, … Only active choices appear, so a conditional choice is present exactly when its
condition holds, and ``ffn_dim.3`` only when there are at least four layers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from speechnas.space import Arch, SearchSpace
from speechnas.space.arch import Scalar, Value

if TYPE_CHECKING:
    from optuna.distributions import CategoricalDistribution


def layer_name(name: str, layer: int) -> str:
    """The flat name of one layer of a per-layer choice: ``ffn_dim.2``."""
    return f"{name}.{layer}"


def flatten(arch: Mapping[str, Any], space: SearchSpace) -> dict[str, Scalar]:
    """``arch`` (validated against ``space``) as ``{flat name: scalar}`` in declaration order."""
    arch = space.validate(arch)
    out: dict[str, Scalar] = {}
    for name in space.active(arch):
        value = arch[name]
        if space[name].per_layer is None:
            out[name] = value  # type: ignore[assignment]
        else:
            assert isinstance(value, tuple)
            for i, v in enumerate(value):
                out[layer_name(name, i)] = v
    return out


def walk(
    space: SearchSpace,
    suggest: Callable[[str, list[Scalar]], Any],
    *,
    rng: random.Random | None = None,
) -> Arch:
    """An architecture built by asking ``suggest(flat_name, choices)`` for every active choice.

    Choices are asked in declaration order, and a choice only when the answers so far make it
    active; a per-layer choice is asked once per layer. If the answers break a constraint of the
    space (e.g. ``d_model`` not divisible by ``heads``), the result is ``space.repair`` of them with
    ``rng``; without an ``rng`` that raises the ValueError of ``space.validate``.
    """
    partial: dict[str, Value] = {}
    while True:
        pending = [n for n in space.active(partial) if n not in partial]
        if not pending:
            break
        choice = space[pending[0]]
        values = list(choice.values)
        if choice.per_layer is None:
            partial[choice.name] = suggest(choice.name, values)
        else:
            layers = partial[choice.per_layer]
            assert isinstance(layers, int)
            partial[choice.name] = tuple(
                suggest(layer_name(choice.name, i), values) for i in range(layers)
            )
    if rng is not None and not space.is_valid(partial):
        return space.repair(partial, rng)
    return space.validate(partial)


def unflatten(params: Mapping[str, Any], space: SearchSpace) -> Arch:
    """The inverse of `flatten`. Entries for choices that the others make inactive are ignored;
    a missing active one raises a ValueError naming it."""

    def lookup(name: str, choices: list[Scalar]) -> Any:
        if name not in params:
            raise ValueError(f"{name}: missing from the parameters; allowed: {choices}")
        return params[name]

    return walk(space, lookup)


def flat_names(space: SearchSpace) -> dict[str, list[Scalar]]:
    """Every flat name that can ever be active, with its choices, in declaration order."""
    out: dict[str, list[Scalar]] = {}
    for c in space.choices:
        if c.per_layer is None:
            out[c.name] = list(c.values)
            continue
        counts = space[c.per_layer].values
        most = max(v for v in counts if isinstance(v, int))
        for i in range(most):
            out[layer_name(c.name, i)] = list(c.values)
    return out


def distributions(space: SearchSpace) -> dict[str, CategoricalDistribution]:
    """An Optuna categorical distribution for every flat name of `flat_names`."""
    from optuna.distributions import CategoricalDistribution

    return {name: CategoricalDistribution(choices) for name, choices in flat_names(space).items()}


__all__ = ["distributions", "flat_names", "flatten", "layer_name", "unflatten", "walk"]
