"""`SearchSpace`: an ordered list of conditional choices, with counting, sampling and variation."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from speechnas.space import _ops
from speechnas.space._tree import State, Tree
from speechnas.space.arch import Arch, Value
from speechnas.space.choice import Choice, Constraint, fmt_values, vkey

_SPACE_KEYS = ("name", "doc", "choices", "constraints")
#: How :meth:`SearchSpace.sample` draws: uniform over architectures, or per choice.
SAMPLE_BY = ("architecture", "choice")
_CHOICE_KEYS = ("name", "values", "when", "per_layer", "doc")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class SearchSpace:
    """Choices in declaration order; a choice's `when` and `per_layer` may only name earlier ones.

    Validated at construction; every error names the space, the choice and what is wrong.
    """

    def __init__(
        self,
        name: str,
        choices: Sequence[Choice],
        *,
        constraints: Sequence[Constraint] = (),
        doc: str = "",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"search space name: {name!r} must be a non-empty string")
        self.name = name
        self.doc = doc
        self.choices: tuple[Choice, ...] = tuple(choices)
        self.constraints: tuple[Constraint, ...] = tuple(constraints)
        self._by_name: dict[str, Choice] = {}
        if not self.choices:
            raise ValueError(f"space {name!r}: has no choices")
        for c in self.choices:
            self._check_choice(c)
            self._by_name[c.name] = c
        for con in self.constraints:
            self._check_constraint(con)
        self._tree = Tree(self.choices, self.constraints)
        if self.count() == 0:
            raise ValueError(f"space {name!r}: the constraints exclude every architecture")

    def _check_choice(self, c: Choice) -> None:
        where = f"space {self.name!r}, choice {c.name!r}"
        if c.name in self._by_name:
            raise ValueError(f"{where}: declared twice")
        for parent, allowed in c.when.items():
            p = self._by_name.get(parent)
            if p is None:
                raise ValueError(
                    f"{where}: condition on {parent!r}, which is not declared before it; "
                    f"earlier choices: {list(self._by_name)}"
                )
            if p.per_layer is not None:
                raise ValueError(f"{where}: condition on per-layer choice {parent!r}")
            bad = [v for v in allowed if not p.allows(v)]
            if bad:
                raise ValueError(
                    f"{where}: condition {parent} in {fmt_values(allowed)} names "
                    f"{fmt_values(tuple(bad))}, not in {parent}'s values {fmt_values(p.values)}"
                )
        if c.per_layer is not None:
            p = self._by_name.get(c.per_layer)
            if p is None:
                raise ValueError(
                    f"{where}: per_layer {c.per_layer!r} is not a choice declared before it; "
                    f"earlier choices: {list(self._by_name)}"
                )
            if p.per_layer is not None or not all(_is_int(v) and v > 0 for v in p.values):
                raise ValueError(
                    f"{where}: per_layer {c.per_layer!r} must be a scalar choice with positive "
                    f"integer values, not {fmt_values(p.values)}"
                )

    def _check_constraint(self, con: Constraint) -> None:
        where = f"space {self.name!r}, constraint {con.kind} {list(con.fields)}"
        for f in con.fields:
            c = self._by_name.get(f)
            if c is None:
                raise ValueError(f"{where}: {f!r} is not a choice; choices: {self.names}")
            if c.per_layer is not None or not all(_is_int(v) for v in c.values):
                raise ValueError(f"{where}: {f!r} must be a scalar choice with integer values")
        if con.kind == "divisible" and any(v == 0 for v in self[con.fields[1]].values):
            raise ValueError(f"{where}: {con.fields[1]!r} has the value 0")

    # lookups
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.choices]

    def __getitem__(self, name: str) -> Choice:
        if name not in self._by_name:
            raise KeyError(f"{name!r} is not in space {self.name!r}; fields: {self.names}")
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.choices)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchSpace):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, {len(self.choices)} choices)"

    # structure
    def active(self, arch_or_partial: Mapping[str, Any]) -> list[str]:
        """The choices that are active given the values so far, in declaration order.

        A choice whose parent has no value yet counts as inactive.
        """
        state: State = {}
        out = []
        for i, c in enumerate(self.choices):
            if not self._tree.is_active(i, state):
                continue
            out.append(c.name)
            v = arch_or_partial.get(c.name)
            if self._tree.controlling[i] and v is not None and c.allows(v):
                state[c.name] = v
        return out

    def validate(self, arch: Mapping[str, Any]) -> Arch:
        """Return `arch` as an `Arch`, or raise a ValueError naming the field, the value and the
        allowed values."""
        unknown = [k for k in arch if k not in self._by_name]
        if unknown:
            raise ValueError(
                f"{unknown[0]} is not in space {self.name!r}; fields: {', '.join(self.names)}"
            )
        state: State = {}
        for i, c in enumerate(self.choices):
            v = arch.get(c.name)
            if not self._tree.is_active(i, state):
                if v is not None:
                    raise ValueError(f"{c.name} is only used when {self._why_inactive(c, state)}")
                continue
            if v is None:
                used = f" (used when {c.condition_text()})" if c.condition_text() else ""
                raise ValueError(f"{c.name}: missing{used}; allowed: {fmt_values(c.values)}")
            if c.per_layer is None:
                self._check_value(c.name, c, v)
                if self._tree.controlling[i]:
                    state[c.name] = v
                    failed = self._tree.failed_constraint(i, state)
                    if failed is not None:
                        raise ValueError(f"{c.name}: {failed}")
                continue
            layers = state[c.per_layer]
            if not isinstance(v, list | tuple):
                raise ValueError(
                    f"{c.name}: {v!r} is not a list of {layers} values from {fmt_values(c.values)}"
                )
            if len(v) != layers:
                raise ValueError(f"{c.name}: {len(v)} values for {layers} layers")
            for j, e in enumerate(v):
                self._check_value(f"{c.name}[{j}]", c, e)
        return arch if isinstance(arch, Arch) else Arch(arch)

    @staticmethod
    def _check_value(field: str, c: Choice, v: object) -> None:
        if c.allows(v):
            return
        note = ""
        if any(x == v and vkey(x) != vkey(v) for x in c.values):
            note = f" ({type(v).__name__})"
        raise ValueError(f"{field}: {v!r}{note} is not one of {fmt_values(c.values)}")

    def _why_inactive(self, c: Choice, state: State) -> str:
        conds = [c.condition_text()] if c.when else []
        got = [f"{p}={state[p]!r}" if p in state else f"{p} inactive" for p in c.when]
        if c.per_layer is not None:
            conds.append(f"{c.per_layer} active")
            if c.per_layer not in state:
                got.append(f"{c.per_layer} inactive")
        return f"{' and '.join(conds)}; got {', '.join(got)}"

    def is_valid(self, arch: Mapping[str, Any]) -> bool:
        try:
            self.validate(arch)
        except ValueError:
            return False
        return True

    # counting and enumeration
    def count(self) -> int:
        """The exact number of valid architectures (without enumerating them)."""
        return self._tree.completions(0, {})

    def enumerate(self) -> Iterator[Arch]:
        """Every valid architecture; only for small spaces."""
        for d in self._tree.enumerate():
            yield Arch(d)

    # random variation
    def sample(self, rng: random.Random, *, by: str = "architecture") -> Arch:
        """A random valid architecture: ``by="architecture"`` uniform over all of them, ``by=
        "choice"`` each active choice uniform over its feasible values, in declaration order.

        The two differ wherever per-layer choices multiply: uniform over architectures, a space
        whose blocks each choose a width is almost all of its deepest models (the default search
        space: 83% of 2,000 draws at its 6 layers, one at 2; ``speech-all``: all 2,000 12-layer
        Conformers), while by choice every depth and encoder family comes up about as often.
        """
        if by not in SAMPLE_BY:
            raise ValueError(f"sample by: {by!r} is not one of {list(SAMPLE_BY)}")
        return Arch(_ops.rebuild(self._tree, {}, rng, per_choice=by == "choice"))

    def mutate(
        self, arch: Mapping[str, Any], rng: random.Random, *, p: float | None = None
    ) -> Arch:
        """A valid neighbour of `arch` differing in at least one active choice.

        p None: one random active choice changes; otherwise each changes with probability p (and
        one at random if none was drawn). A per-layer choice changes in one layer. Choices a change
        activates get random values; ones it deactivates are dropped. With a single architecture in
        the space, `arch` itself is returned.
        """
        if p is not None and not 0.0 <= p <= 1.0:
            raise ValueError(f"mutate p: {p} is not in [0, 1]")
        arch = self.validate(arch)
        return Arch(_ops.mutate(self._tree, arch, rng, p))

    def crossover(self, a: Mapping[str, Any], b: Mapping[str, Any], rng: random.Random) -> Arch:
        """Uniform crossover: each choice (each layer, where both parents have it) from a random
        parent, then repaired to a valid architecture."""
        return Arch(_ops.crossover(self._tree, self.validate(a), self.validate(b), rng))

    def repair(self, partial: Mapping[str, Value], rng: random.Random) -> Arch:
        """The valid architecture keeping as much of `partial` as possible; the rest random."""
        return Arch(_ops.rebuild(self._tree, partial, rng))

    # serialisation
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.doc:
            d["doc"] = self.doc
        d["choices"] = [c.to_dict() for c in self.choices]
        if self.constraints:
            d["constraints"] = [con.to_dict() for con in self.constraints]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        if not isinstance(data, Mapping):
            raise ValueError(f"search space: expected a mapping, got {type(data).__name__}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"search space: name {name!r} must be a non-empty string")
        where = f"space {name!r}"
        _reject_unknown(where, data, _SPACE_KEYS)
        raw_choices = data.get("choices")
        if not isinstance(raw_choices, list):
            raise ValueError(f"{where}: choices must be a list, got {raw_choices!r}")
        choices = []
        for k, rc in enumerate(raw_choices):
            if not isinstance(rc, Mapping):
                raise ValueError(f"{where}: choices[{k}] must be a mapping, got {rc!r}")
            _reject_unknown(f"{where}, choice {rc.get('name', k)!r}", rc, _CHOICE_KEYS)
            try:
                choices.append(Choice(**{key: rc[key] for key in _CHOICE_KEYS if key in rc}))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}, choices[{k}]: {e}") from None
        constraints = []
        for k, rcon in enumerate(data.get("constraints") or []):
            if not isinstance(rcon, Mapping) or len(rcon) != 1:
                raise ValueError(
                    f"{where}: constraints[{k}] {rcon!r} must be one {{kind: [fields]}} entry"
                )
            ((kind, fields),) = rcon.items()
            try:
                constraints.append(Constraint(kind, fields))
            except ValueError as e:
                raise ValueError(f"{where}, constraints[{k}]: {e}") from None
        return cls(name, choices, constraints=constraints, doc=data.get("doc") or "")


def _reject_unknown(where: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {list(allowed)}")


def describe(space: SearchSpace) -> list[dict[str, Any]]:
    """One row per choice (name, values, condition, per_layer, doc), e.g. for a table."""
    return [
        {
            "name": c.name,
            "values": list(c.values),
            "condition": c.condition_text(),
            "per_layer": c.per_layer or "",
            "doc": c.doc,
        }
        for c in space.choices
    ]
