"""Sampling, repair, mutation and crossover over a `Tree`.

All of them are one walk in declaration order (`rebuild`): a choice that is inactive given the
values so far is dropped; an active one keeps its preferred value when that is allowed and still
has valid completions, and otherwise gets a random value. Controlling choices are drawn weighted by
their number of completions, so a walk with no preferences is a uniform draw over architectures;
with ``per_choice`` every choice is drawn uniformly over its feasible values instead.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from speechnas.space._tree import State, Tree
from speechnas.space.arch import Scalar, Value
from speechnas.space.choice import Choice, vkey


def _others(c: Choice, v: object) -> list[Scalar]:
    return [x for x in c.values if vkey(x) != vkey(v)]


def _scalar(
    tree: Tree,
    i: int,
    state: State,
    pref: Value | None,
    rng: random.Random,
    change: bool,
    per_choice: bool = False,
) -> Scalar:
    c = tree.choices[i]
    kept = pref is not None and tree.allows(i, pref)
    if not tree.controlling[i]:
        if change and len(c.values) > 1:
            return rng.choice(_others(c, pref))
        return pref if kept else rng.choice(c.values)  # type: ignore[return-value]
    weights = tree.weights(i, state)
    if kept:
        w_pref = weights[[vkey(x) for x in c.values].index(vkey(pref))]
        if change and sum(weights) > w_pref:
            return tree.pick(i, state, rng, exclude=pref)
        if w_pref > 0:
            return pref  # type: ignore[return-value]
    return tree.pick(i, state, rng, per_choice=per_choice)


def _layers(
    c: Choice, layers: int, pref: Value | None, rng: random.Random, change: bool
) -> tuple[Scalar, ...]:
    old = list(pref) if isinstance(pref, tuple) else []
    elems = [e if c.allows(e) else rng.choice(c.values) for e in old[:layers]]
    elems += [rng.choice(c.values) for _ in range(layers - len(elems))]
    if change and len(c.values) > 1:
        j = rng.randrange(layers)
        elems[j] = rng.choice(_others(c, elems[j]))
    return tuple(elems)


def rebuild(
    tree: Tree,
    prefs: Mapping[str, Value],
    rng: random.Random,
    *,
    change: frozenset[str] = frozenset(),
    per_choice: bool = False,
) -> dict[str, Value]:
    """A valid architecture as close to `prefs` as repair allows; choices in `change` get a new
    value (a new element in one layer for per-layer choices) where one is feasible. The values
    drawn at random are uniform over architectures, or with `per_choice` over each choice's
    feasible values."""
    state: State = {}
    out: dict[str, Value] = {}
    for i, c in enumerate(tree.choices):
        if not tree.is_active(i, state):
            continue
        pref = prefs.get(c.name)
        if c.per_layer is None:
            v = _scalar(tree, i, state, pref, rng, c.name in change, per_choice)
            out[c.name] = v
            if tree.controlling[i]:
                state[c.name] = v
        else:
            layers = state[c.per_layer]
            assert isinstance(layers, int)
            out[c.name] = _layers(c, layers, pref, rng, c.name in change)
    return out


def mutable_sites(tree: Tree, arch: Mapping[str, Value]) -> list[str]:
    """The active choices of a valid `arch` that can take another value."""
    state: State = {}
    sites = []
    for i, c in enumerate(tree.choices):
        if not tree.is_active(i, state):
            continue
        v = arch[c.name]
        if tree.controlling[i]:
            weights = tree.weights(i, state)
            if sum(w for x, w in zip(c.values, weights, strict=True) if vkey(x) != vkey(v)):
                sites.append(c.name)
            state[c.name] = v  # type: ignore[assignment]
        elif len(c.values) > 1:
            sites.append(c.name)
    return sites


def mutate(
    tree: Tree, arch: Mapping[str, Value], rng: random.Random, p: float | None
) -> dict[str, Value]:
    sites = mutable_sites(tree, arch)
    if not sites:
        return dict(arch)
    chosen = [] if p is None else [s for s in sites if rng.random() < p]
    if not chosen:
        chosen = [rng.choice(sites)]
    # The earliest chosen site sees the same prefix as `arch`, so it does change.
    return rebuild(tree, arch, rng, change=frozenset(chosen))


def crossover(
    tree: Tree, a: Mapping[str, Value], b: Mapping[str, Value], rng: random.Random
) -> dict[str, Value]:
    prefs: dict[str, Value] = {}
    for c in tree.choices:
        va, vb = a.get(c.name), b.get(c.name)
        if va is None or vb is None:
            pick = vb if va is None else va
            if pick is not None:
                prefs[c.name] = pick
        elif isinstance(va, tuple) and isinstance(vb, tuple):
            shared = [x if rng.random() < 0.5 else y for x, y in zip(va, vb, strict=False)]
            longer = va if len(va) > len(vb) else vb
            prefs[c.name] = (*shared, *longer[len(shared) :])
        else:
            prefs[c.name] = va if rng.random() < 0.5 else vb
    return rebuild(tree, prefs, rng)
