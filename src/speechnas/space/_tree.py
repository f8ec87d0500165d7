"""Counting over the conditional structure of a space, without enumerating architectures.

Choices are processed in declaration order. The *controlling* choices (named by another choice's
`when` or `per_layer`, or by a constraint) are branched on; every other choice is a leaf that
multiplies the count by `len(values)` (or `len(values) ** layers` when per-layer). The number of
completions from position `i` depends only on the controlling values that later positions still
look at, so it is memoised on exactly those ("live") values; this keeps counting cheap even for
spaces with astronomically many architectures.

`state` below is a dict holding the values of the active controlling choices decided so far.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping, Sequence

from speechnas.space.arch import Scalar, Value
from speechnas.space.choice import Choice, Constraint, vkey

State = dict[str, Scalar]


class Tree:
    def __init__(self, choices: Sequence[Choice], constraints: Sequence[Constraint]) -> None:
        self.choices = tuple(choices)
        self.constraints = tuple(constraints)
        self.index = {c.name: i for i, c in enumerate(self.choices)}
        self._conds = [
            tuple((p, frozenset(vkey(v) for v in vs)) for p, vs in c.when.items())
            for c in self.choices
        ]
        # the position at which each name is last needed, and the constraints checked at each
        last_use: dict[str, int] = {}
        self._checks: list[list[Constraint]] = [[] for _ in self.choices]
        for j, c in enumerate(self.choices):
            for p in (*c.when, *([c.per_layer] if c.per_layer else [])):
                last_use[p] = max(last_use.get(p, -1), j)
        for con in self.constraints:
            at = max(self.index[f] for f in con.fields)
            self._checks[at].append(con)
            for f in con.fields:
                last_use[f] = max(last_use.get(f, -1), at)
        self.controlling = [c.name in last_use for c in self.choices]
        self._live = [
            tuple(
                n
                for n, j in sorted(last_use.items(), key=lambda t: self.index[t[0]])
                if self.index[n] < i <= j
            )
            for i in range(len(self.choices) + 1)
        ]
        self._memo: dict[tuple[object, ...], int] = {}
        self._wmemo: dict[tuple[object, ...], list[int]] = {}

    def allows(self, i: int, v: object) -> bool:
        return self.choices[i].allows(v)

    def is_active(self, i: int, state: Mapping[str, Scalar]) -> bool:
        for parent, allowed in self._conds[i]:
            v = state.get(parent)
            if v is None or vkey(v) not in allowed:
                return False
        per_layer = self.choices[i].per_layer
        return per_layer is None or per_layer in state

    def failed_constraint(self, i: int, state: Mapping[str, Scalar]) -> str | None:
        """The first constraint decided at position `i` that `state` breaks, as text."""
        for con in self._checks[i]:
            vals = [state.get(f) for f in con.fields]
            if all(v is not None for v in vals) and not con.holds(*vals):  # type: ignore[arg-type]
                return con.describe_failure(*vals)  # type: ignore[arg-type]
        return None

    def completions(self, i: int, state: State) -> int:
        """The number of valid ways to decide choices `i..` given `state`."""
        if i == len(self.choices):
            return 1
        key = (i, *(state.get(n) for n in self._live[i]))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        c = self.choices[i]
        if not self.is_active(i, state):
            total = self.completions(i + 1, state)
        elif self.controlling[i]:
            total = sum(self.weights(i, state))
        else:
            layers = state[c.per_layer] if c.per_layer else 1
            assert isinstance(layers, int)
            total = len(c.values) ** layers * self.completions(i + 1, state)
        self._memo[key] = total
        return total

    def weights(self, i: int, state: State) -> list[int]:
        """For active controlling choice `i`: the completions under each of its values."""
        key = (i, *(state.get(n) for n in self._live[i]))
        hit = self._wmemo.get(key)
        if hit is None:
            hit = []
            for v in self.choices[i].values:
                nxt = {**state, self.choices[i].name: v}
                ok = self.failed_constraint(i, nxt) is None
                hit.append(self.completions(i + 1, nxt) if ok else 0)
            self._wmemo[key] = hit
        return list(hit)

    def pick(
        self,
        i: int,
        state: State,
        rng: random.Random,
        *,
        exclude: object = None,
        per_choice: bool = False,
    ) -> Scalar:
        """A value for controlling choice `i`, weighted by completions (uniform over archs), or
        with ``per_choice`` uniform over the values that have any."""
        values = self.choices[i].values
        weights = self.weights(i, state)
        if per_choice:
            weights = [min(w, 1) for w in weights]
        if exclude is not None:
            k = vkey(exclude)
            weights = [0 if vkey(v) == k else w for v, w in zip(values, weights, strict=True)]
        total = sum(weights)
        assert total > 0, f"{self.choices[i].name}: no feasible value"
        r = rng.randrange(total)
        for v, w in zip(values, weights, strict=True):
            if r < w:
                return v
            r -= w
        raise AssertionError("unreachable")

    def enumerate(self) -> Iterator[dict[str, Value]]:
        """Every valid architecture as a dict (only sensible for small spaces)."""
        yield from self._enumerate(0, {}, {})

    def _enumerate(self, i: int, state: State, out: dict[str, Value]) -> Iterator[dict[str, Value]]:
        if i == len(self.choices):
            yield dict(out)
            return
        c = self.choices[i]
        if not self.is_active(i, state):
            yield from self._enumerate(i + 1, state, out)
            return
        options: list[Value]
        if c.per_layer is not None:
            layers = state[c.per_layer]
            assert isinstance(layers, int)
            options = list(itertools.product(c.values, repeat=layers))
        else:
            options = list(c.values)
        for v in options:
            nxt = {**state, c.name: v} if self.controlling[i] else state
            if self.controlling[i] and self.failed_constraint(i, nxt) is not None:
                continue
            yield from self._enumerate(i + 1, nxt, {**out, c.name: v})  # type: ignore[arg-type]
