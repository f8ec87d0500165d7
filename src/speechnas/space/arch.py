"""`Arch`: one immutable architecture, a mapping from choice name to value.

A value is a scalar (int, float, str, bool) or, for a per-layer choice, a tuple of scalars with one
element per layer. Two archs are equal exactly when their canonical keys are equal, so `1`, `1.0`
and `True` are three different values (as they are in the JSON form).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeAlias

Scalar: TypeAlias = int | float | str | bool
Value: TypeAlias = Scalar | tuple[Scalar, ...]

_SCALAR_TYPES = (bool, int, float, str)


def check_scalar(where: str, v: object) -> Scalar:
    """Return `v` if it is a JSON-safe scalar; raise a ValueError naming `where` otherwise."""
    if not isinstance(v, _SCALAR_TYPES):
        raise ValueError(f"{where}: {v!r} is not an int, float, str or bool")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{where}: {v!r} is not a finite number")
    return v


def _check_value(name: str, v: object) -> Value:
    if isinstance(v, list | tuple):
        return tuple(check_scalar(f"{name}[{i}]", e) for i, e in enumerate(v))
    return check_scalar(name, v)


class Arch(Mapping[str, Value]):
    """A frozen architecture: `arch["d_model"]`, `arch.get(...)`, `arch.items()`, hashable.

    Iteration is in sorted key order, whatever the construction order.
    """

    __slots__ = ("_items", "_key", "_map")

    _items: tuple[tuple[str, Value], ...]
    _map: dict[str, Value]
    _key: str | None

    def __init__(
        self, values: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), /, **kwargs: Any
    ) -> None:
        merged = dict(values.items() if isinstance(values, Mapping) else values)
        merged.update(kwargs)
        checked: dict[str, Value] = {}
        for name in sorted(merged):
            if not isinstance(name, str) or not name:
                raise ValueError(f"arch: field name {name!r} is not a non-empty string")
            checked[name] = _check_value(name, merged[name])
        object.__setattr__(self, "_map", checked)
        object.__setattr__(self, "_items", tuple(checked.items()))
        object.__setattr__(self, "_key", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Arch is immutable; use arch.replace(...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Arch is immutable; use arch.replace(...)")

    # Mapping protocol
    def __getitem__(self, name: str) -> Value:
        return self._map[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._map

    # identity
    def key(self) -> str:
        """The canonical string: compact JSON with sorted keys."""
        if self._key is None:
            text = json.dumps(
                self.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False
            )
            object.__setattr__(self, "_key", text)
        assert self._key is not None
        return self._key

    def hash(self) -> str:
        """The first 16 hex characters of the SHA-256 of `key()`."""
        return hashlib.sha256(self.key().encode("utf-8")).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Arch):
            return NotImplemented
        return self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._items)
        return f"Arch({inner})"

    # derived archs and serialisation
    def replace(self, **changes: Any) -> Arch:
        """A copy with `changes` applied; a value of None removes that field."""
        merged: dict[str, Any] = dict(self._map)
        for name, v in changes.items():
            if v is None:
                merged.pop(name, None)
            else:
                merged[name] = v
        return Arch(merged)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists), keys sorted."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._items}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Arch:
        """The inverse of `to_json` (lists become tuples)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"arch: expected a JSON object, got {type(data).__name__}")
        return cls(data)
