"""Arch: immutability, mapping access, canonical key and hash, JSON round-trip."""

from __future__ import annotations

import json

import pytest

from speechnas.space import Arch


def test_mapping_access() -> None:
    arch = Arch(d_model=144, ffn_dim=[256, 512], encoder="conformer")
    assert arch["d_model"] == 144
    assert arch["ffn_dim"] == (256, 512)
    assert arch.get("heads") is None and arch.get("heads", 4) == 4
    assert list(arch) == ["d_model", "encoder", "ffn_dim"]
    assert dict(arch.items()) == {"d_model": 144, "encoder": "conformer", "ffn_dim": (256, 512)}
    assert "encoder" in arch and len(arch) == 3


def test_immutable_and_hashable() -> None:
    arch = Arch(a=1)
    with pytest.raises(AttributeError, match="immutable"):
        arch.a = 2  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        arch["a"] = 2  # type: ignore[index]
    assert len({arch, Arch(a=1), Arch({"a": 1})}) == 1


def test_replace() -> None:
    arch = Arch(a=1, b="x")
    assert arch.replace(a=2) == Arch(a=2, b="x")
    assert arch.replace(b=None) == Arch(a=1)
    assert arch == Arch(a=1, b="x")


def test_key_is_canonical_whatever_the_construction_order() -> None:
    a = Arch({"layers": 2, "ffn": (1, 2), "encoder": "lstm"})
    b = Arch([("encoder", "lstm"), ("ffn", [1, 2])], layers=2)
    assert a == b and hash(a) == hash(b)
    assert a.key() == b.key() == '{"encoder":"lstm","ffn":[1,2],"layers":2}'
    assert a.hash() == b.hash() and len(a.hash()) == 16
    assert int(a.hash(), 16) >= 0


def test_types_are_part_of_the_identity() -> None:
    assert len({Arch(a=1), Arch(a=True), Arch(a=1.0), Arch(a="1")}) == 4
    assert Arch(a=1) != {"a": 1}


def test_json_round_trip_is_exact() -> None:
    arch = Arch(w=0.3, flag=False, name="conv2d", n=12, per=(7, 15, 31), bools=(True, False))
    back = Arch.from_json(json.loads(json.dumps(arch.to_json())))
    assert back == arch and back.key() == arch.key() and back.hash() == arch.hash()
    assert back["per"] == (7, 15, 31) and back["w"] == 0.3 and back["flag"] is False
    assert arch.to_json()["per"] == [7, 15, 31]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"a": None}, "a: None is not an int, float, str or bool"),
        ({"a": [1, [2]]}, r"a\[1\]: \[2\] is not an int"),
        ({"a": float("nan")}, "a: nan is not a finite number"),
        ({"": 1}, "field name '' is not a non-empty string"),
    ],
)
def test_bad_values(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Arch(values)


def test_from_json_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        Arch.from_json([1, 2])  # type: ignore[arg-type]
