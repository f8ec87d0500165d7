"""The parts of a search space: a `Choice` (one decision) and a `Constraint` (a rule across two)."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from speechnas.space.arch import Scalar, check_scalar


def vkey(v: object) -> tuple[str, object]:
    """A type-strict identity for a scalar, so that 1, 1.0 and True stay distinct."""
    return (type(v).__name__, v)


def fmt_values(values: tuple[Scalar, ...]) -> str:
    return "[" + ", ".join(repr(v) for v in values) + "]"


@dataclass(frozen=True, slots=True)
class Choice:
    """One decision of a search space.

    values: the allowed values (scalars, non-empty, no duplicates).
    when: parent choice name -> allowed parent values; the choice is active only if every listed
        parent is active and has one of those values (empty: always active).
    per_layer: the name of an integer choice giving the number of layers; the value is then a tuple
        with one element per layer, each from `values`. The choice is also inactive when that
        layer-count choice is.
    """

    name: str
    values: tuple[Scalar, ...]
    when: Mapping[str, tuple[Scalar, ...]] = field(default_factory=dict)
    per_layer: str | None = None
    doc: str = ""
    _keys: frozenset[tuple[str, object]] = field(
        init=False, repr=False, compare=False, default=frozenset()
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"choice name: {self.name!r} is not an identifier")
        where = f"choice {self.name!r}"
        if not isinstance(self.values, list | tuple) or not self.values:
            raise ValueError(f"{where}: values {self.values!r} must be a non-empty list")
        values = tuple(check_scalar(f"{where} values", v) for v in self.values)
        if len({vkey(v) for v in values}) != len(values):
            raise ValueError(f"{where}: values {fmt_values(values)} contain duplicates")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "_keys", frozenset(vkey(v) for v in values))
        if not isinstance(self.when, Mapping):
            raise ValueError(f"{where}: when {self.when!r} must map choice names to values")
        when: dict[str, tuple[Scalar, ...]] = {}
        for parent, allowed in self.when.items():
            if not isinstance(parent, str):
                raise ValueError(f"{where}: when names {parent!r}, not a choice name")
            seq = allowed if isinstance(allowed, list | tuple) else (allowed,)
            if not seq:
                raise ValueError(f"{where}: when {parent} lists no values")
            when[parent] = tuple(check_scalar(f"{where} when {parent}", v) for v in seq)
        object.__setattr__(self, "when", types.MappingProxyType(when))
        if self.per_layer is not None and not isinstance(self.per_layer, str):
            raise ValueError(f"{where}: per_layer {self.per_layer!r} must be a choice name")
        if not isinstance(self.doc, str):
            raise ValueError(f"{where}: doc must be a string")

    def __hash__(self) -> int:
        return hash((self.name, self.values, tuple(self.when.items()), self.per_layer, self.doc))

    def allows(self, v: object) -> bool:
        """Whether `v` is one of `values` (type-strict)."""
        try:
            return vkey(v) in self._keys
        except TypeError:  # unhashable, so not a scalar
            return False

    def condition_text(self) -> str:
        """The `when` condition as text, e.g. "encoder in ['conformer']" ("" if always)."""
        return " and ".join(f"{p} in {fmt_values(vs)}" for p, vs in self.when.items())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "values": list(self.values)}
        if self.when:
            d["when"] = {p: list(vs) for p, vs in self.when.items()}
        if self.per_layer is not None:
            d["per_layer"] = self.per_layer
        if self.doc:
            d["doc"] = self.doc
        return d


def _divisible(a: Scalar, b: Scalar) -> bool:
    assert isinstance(a, int) and isinstance(b, int)
    return a % b == 0


# kind -> (number of fields, predicate, how to say it failed)
CONSTRAINT_KINDS = {
    "divisible": (2, _divisible, "is not divisible by"),
}


@dataclass(frozen=True, slots=True)
class Constraint:
    """A rule over scalar choices, e.g. `{divisible: [d_model, heads]}` (d_model % heads == 0).

    It holds vacuously when one of its fields is inactive.
    """

    kind: str
    fields: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in CONSTRAINT_KINDS:
            raise ValueError(
                f"constraint kind: {self.kind!r} is not one of {sorted(CONSTRAINT_KINDS)}"
            )
        n = CONSTRAINT_KINDS[self.kind][0]
        fields = tuple(self.fields) if isinstance(self.fields, list | tuple) else ()
        if len(fields) != n or not all(isinstance(f, str) for f in fields):
            raise ValueError(f"constraint {self.kind}: {self.fields!r} must be {n} choice names")
        object.__setattr__(self, "fields", fields)

    def holds(self, *values: Scalar) -> bool:
        return CONSTRAINT_KINDS[self.kind][1](*values)

    def describe_failure(self, *values: Scalar) -> str:
        a, b = self.fields
        return f"{a}={values[0]!r} {CONSTRAINT_KINDS[self.kind][2]} {b}={values[1]!r}"

    def to_dict(self) -> dict[str, list[str]]:
        return {self.kind: list(self.fields)}
