"""SearchSpace: counting, enumeration, uniform sampling, mutation, crossover, validation, YAML."""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from speechnas.space import (
    Arch,
    Choice,
    Constraint,
    SearchSpace,
    builtin_spaces,
    describe,
    load_space,
    space_from_yaml,
)


def flat() -> SearchSpace:
    return SearchSpace(
        "flat",
        [
            Choice("encoder", ("a", "b")),
            Choice("layers", (1, 2)),
            Choice("heads", (2, 4), when={"encoder": ("a",)}),
            Choice("ffn", ("x", "y", "z"), per_layer="layers"),
        ],
    )


def nested() -> SearchSpace:
    return SearchSpace(
        "nested",
        [
            Choice("encoder", ("conformer", "lstm", "cnn")),
            Choice("attention", ("abs", "local"), when={"encoder": ("conformer",)}),
            Choice("window", (8, 16), when={"attention": ("local",)}),
            Choice("streaming", (False, True), when={"encoder": ("conformer", "lstm")}),
            Choice("chunk", (4, 8), when={"streaming": (True,)}),
            Choice("layers", (1, 2)),
            Choice("kernel", (3, 5), per_layer="layers", when={"encoder": ("conformer", "cnn")}),
        ],
    )


def constrained() -> SearchSpace:
    """Conditional layer count (so per-layer choices inherit its condition) and a pruning rule."""
    return SearchSpace(
        "constrained",
        [
            Choice("d_model", (4, 6, 8)),
            Choice("deep", (False, True)),
            Choice("layers", (2, 3), when={"deep": (True,)}),
            Choice("heads", (1, 2, 3, 4)),
            Choice("ffn", (1, 2), per_layer="layers"),
        ],
        constraints=[Constraint("divisible", ("d_model", "heads"))],
    )


def single() -> SearchSpace:
    return SearchSpace("single", [Choice("a", (1,)), Choice("b", ("x",), per_layer="a")])


SMALL = [flat, nested, constrained, single]


def brute_force(space: SearchSpace) -> Iterator[dict[str, object]]:
    """Every assignment of values (or absence) to every choice that `validate` accepts."""
    options: list[list[object]] = []
    for c in space.choices:
        if c.per_layer is None:
            opts: list[object] = list(c.values)
        else:
            lengths = space[c.per_layer].values
            opts = [t for n in lengths for t in itertools.product(c.values, repeat=n)]  # type: ignore[call-overload]
        options.append([None, *opts])
    for combo in itertools.product(*options):
        d = {c.name: v for c, v in zip(space.choices, combo, strict=True) if v is not None}
        if space.is_valid(d):
            yield d


# counting and enumeration
@pytest.mark.parametrize("make", SMALL)
def test_count_matches_enumeration_and_brute_force(make) -> None:
    space = make()
    archs = list(space.enumerate())
    assert space.count() == len(archs) == len(set(archs))
    assert {Arch(d) for d in brute_force(space)} == set(archs)


def test_small_counts_by_hand() -> None:
    assert flat().count() == 2 * 3 + 2 * 9 + 3 + 9  # (a: heads x ffn per layer) + (b: ffn)
    # conformer: attention (abs 1 + local 2) x streaming (off 1 + on 2) x kernels (2 + 4)
    assert nested().count() == 3 * 3 * 6 + 3 * 2 + 6
    # (d_model, heads) pairs that divide: 4:{1,2,4} 6:{1,2,3} 8:{1,2,4}; shallow 1 + deep 4 + 8
    assert constrained().count() == 9 * (1 + 4 + 8)
    assert single().count() == 1


def speech_all_by_hand() -> int:
    total = 0
    for n in (2, 4, 6, 8, 12):
        attention = 3 * (1 + 1 + 3)  # heads x (abs, rel, local x window)
        streaming = 1 + 3 * 3  # off, or on with chunk_size x left_chunks
        ffn = 4**n * 3**n  # ffn_dim x ffn_lowrank per layer
        total += (
            attention * streaming * ffn * 2 * 3**n * 2**n  # conformer
            + attention * streaming * ffn  # transformer
            + attention * streaming * ffn * 3**n  # ebranchformer
            + streaming * 3  # lstm
            + 3  # blstm
            + streaming * 3**n * 2 * 2  # cnn
        )
    decoders = 1 + 2 + 2 * 2  # ctc, rnnt x pred_dim, attention x ctc_weight x decoder_layers
    return 5 * 2 * 3 * 4 * total * decoders  # frontend, subsampling, factor, d_model


def test_builtin_counts_are_exact_and_stable() -> None:
    speech_all = load_space("speech-all")
    assert speech_all.count() == speech_all_by_hand() == 4891516529923268745531532200
    small = load_space("conformer-ctc")
    assert small.count() == 2 * 3 * 2 * 2 * sum(9**n for n in (2, 4, 6)) == 12913992


# sampling, mutation, crossover
def test_sampling_is_uniform_over_architectures() -> None:
    space = nested()  # 66 archs; per-choice sampling would give each lstm arch 1/24, not 1/66
    rng = random.Random(1234)
    draws = 6000
    freq = Counter(space.sample(rng) for _ in range(draws))
    assert set(freq) == set(space.enumerate())
    expected = draws / space.count()
    for arch, n in freq.items():
        assert abs(n - expected) < 5 * math.sqrt(expected), (arch, n, expected)
    chi2 = sum((n - expected) ** 2 / expected for n in freq.values())
    df = space.count() - 1
    assert chi2 < df + 5 * math.sqrt(2 * df)


def test_sampling_by_choice_draws_each_choice_uniformly() -> None:
    space = nested()
    rng = random.Random(99)
    draws = 6000
    freq = Counter(space.sample(rng, by="choice") for _ in range(draws))
    assert set(freq) == set(space.enumerate())

    def chance(arch: Arch) -> float:  # each active choice (each layer's) uniform over its values
        p = 1.0
        for c in space.choices:
            if c.name in arch:
                n = len(arch[c.name]) if c.per_layer else 1
                p /= len(c.values) ** n
        return p

    assert sum(chance(a) for a in freq) == pytest.approx(1.0)
    chi2 = sum((n - draws * chance(a)) ** 2 / (draws * chance(a)) for a, n in freq.items())
    df = space.count() - 1
    assert chi2 < df + 5 * math.sqrt(2 * df)
    with pytest.raises(ValueError, match=r"sample by: 'layer' is not one of"):
        space.sample(rng, by="layer")


def test_by_choice_every_encoder_and_depth_of_speech_all_comes_up() -> None:
    space = load_space("speech-all")
    rng = random.Random(0)
    archs = [space.sample(rng, by="choice") for _ in range(600)]
    for arch in archs:
        space.validate(arch.to_json())  # the constraints hold as they do for uniform draws
    for name in ("encoder", "layers"):
        counts = Counter(a[name] for a in archs)
        values = next(c.values for c in space.choices if c.name == name)
        assert set(counts) == set(values)
        assert min(counts.values()) > 600 / len(values) / 2, (name, counts)


def test_sampling_is_reproducible() -> None:
    space = load_space("speech-all")
    a = [space.sample(random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert space.sample(random.Random(8)) != a[0]


def test_samples_from_speech_all_validate() -> None:
    space = load_space("speech-all")
    rng = random.Random(0)
    encoders = Counter()
    for _ in range(1000):
        arch = space.sample(rng)
        space.validate(arch.to_json())
        encoders[arch["encoder"]] += 1
    # uniform over archs: the per-layer-rich conformer dominates, lstm/blstm are vanishingly rare
    assert encoders["conformer"] > 900 and encoders["blstm"] == 0


@pytest.mark.parametrize("p", [None, 0.3])
def test_mutation_is_valid_and_different(p: float | None) -> None:
    space = load_space("speech-all")
    rng = random.Random(1)
    arch = space.sample(rng)
    for _ in range(250):
        child = space.mutate(arch, rng, p=p)
        space.validate(child.to_json())
        assert child != arch
        arch = child if rng.random() < 0.8 else space.sample(rng)


@pytest.mark.parametrize("make", SMALL)
def test_small_space_mutation_and_crossover(make) -> None:
    space = make()
    rng = random.Random(2)
    archs = list(space.enumerate())
    for a in archs:
        child = space.mutate(a, rng)
        assert space.is_valid(child) and (child != a or space.count() == 1)
        b = rng.choice(archs)
        x = space.crossover(a, b, rng)
        assert space.is_valid(x)
        if not space.constraints:  # a constraint may force a value neither parent has
            assert all(x[k] in (a.get(k), b.get(k)) for k in x if space[k].per_layer is None)
        assert space.crossover(a, a, rng) == a


def test_crossover_is_valid() -> None:
    space = load_space("speech-all")
    rng = random.Random(3)
    for _ in range(500):
        a, b = space.sample(rng), space.sample(rng)
        space.validate(space.crossover(a, b, rng).to_json())


def test_mutation_neighbours_change_one_choice_and_repair() -> None:
    space = nested()
    rng = random.Random(4)
    arch = Arch(encoder="lstm", streaming=False, layers=2)
    seen = {space.mutate(arch, rng) for _ in range(200)}
    assert {s for s in seen if s["encoder"] == "lstm"} == {
        Arch(encoder="lstm", streaming=True, chunk=4, layers=2),
        Arch(encoder="lstm", streaming=True, chunk=8, layers=2),
        Arch(encoder="lstm", streaming=False, layers=1),
    }
    assert {s["encoder"] for s in seen} == {"lstm", "conformer", "cnn"}
    for s in seen - {a for a in seen if a["encoder"] == "lstm"}:
        assert s["layers"] == 2 and len(s["kernel"]) == 2  # kept, and new choices filled in
        assert s.get("streaming", False) is False  # kept where still active, dropped for cnn


def test_repair_truncates_extends_and_drops() -> None:
    space = flat()
    rng = random.Random(5)
    arch = Arch(encoder="a", heads=4, layers=2, ffn=("z", "y"))
    shorter = space.repair(arch.replace(layers=1), rng)
    assert shorter == Arch(encoder="a", heads=4, layers=1, ffn=("z",))
    longer = space.repair(Arch(encoder="b", layers=2, ffn=("x",)), rng)
    assert longer["ffn"][0] == "x" and len(longer["ffn"]) == 2
    assert "heads" not in space.repair(arch.replace(encoder="b"), rng)
    assert space.repair(arch.replace(heads=None), rng)["heads"] in (2, 4)


def test_constrained_space_never_breaks_the_constraint() -> None:
    space = constrained()
    rng = random.Random(6)
    for _ in range(300):
        arch = space.mutate(space.sample(rng), rng, p=0.5)
        assert arch["d_model"] % arch["heads"] == 0


def test_mutate_rejects_bad_p() -> None:
    with pytest.raises(ValueError, match=r"mutate p: 1.5 is not in \[0, 1\]"):
        flat().mutate(Arch(encoder="b", layers=1, ffn=("x",)), random.Random(0), p=1.5)


# validation messages
@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"encoder": "a", "layers": 1, "heads": 5, "ffn": ["x"]}, "heads: 5 is not one of [2, 4]"),
        ({"encoder": "gru", "layers": 1}, "encoder: 'gru' is not one of ['a', 'b']"),
        ({"encoder": "a", "layers": 1, "heads": 2.0, "ffn": ["x"]}, "heads: 2.0 (float) is not"),
        ({"encoder": "b", "layers": 2, "ffn": ["x"]}, "ffn: 1 values for 2 layers"),
        ({"encoder": "b", "layers": 1, "ffn": ["w"]}, "ffn[0]: 'w' is not one of ['x', 'y', 'z']"),
        ({"encoder": "b", "layers": 1, "ffn": "x"}, "ffn: 'x' is not a list of 1 values"),
        ({"encoder": "a", "layers": 1, "ffn": ["x"]}, "heads: missing (used when encoder in"),
        ({"encoder": "b", "layers": 1}, "ffn: missing; allowed: ['x', 'y', 'z']"),
        (
            {"encoder": "b", "layers": 1, "heads": 2, "ffn": ["x"]},
            "heads is only used when encoder in ['a']; got encoder='b'",
        ),
        ({"encoder": "b", "layers": 1, "ffn": ["x"], "depth": 3}, "depth is not in space 'flat'"),
    ],
)
def test_validation_messages(arch: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        flat().validate(arch)


def test_validation_names_constraint_and_inherited_condition() -> None:
    space = constrained()
    with pytest.raises(ValueError, match=re.escape("heads: d_model=6 is not divisible by heads=4")):
        space.validate({"d_model": 6, "deep": False, "heads": 4})
    with pytest.raises(ValueError, match="ffn is only used when layers active; got layers inact"):
        space.validate({"d_model": 6, "deep": False, "heads": 3, "ffn": [1, 2]})
    space.validate({"d_model": 6, "deep": True, "layers": 2, "heads": 3, "ffn": [1, 2]})


def test_active_follows_the_values_so_far() -> None:
    space = nested()
    assert space.active({}) == ["encoder", "layers"]
    assert space.active({"encoder": "conformer", "layers": 1}) == [
        "encoder",
        "attention",
        "streaming",
        "layers",
        "kernel",
    ]
    assert space.active({"encoder": "lstm", "attention": "local", "streaming": True}) == [
        "encoder",
        "streaming",
        "chunk",
        "layers",
    ]


# built-ins and YAML
def test_builtins_load_and_round_trip() -> None:
    assert builtin_spaces() == ["conformer-ctc", "speech-all", "streaming", "tts-fastspeech"]
    for name in builtin_spaces():
        space = load_space(name)
        assert space.name == name
        assert SearchSpace.from_dict(space.to_dict()) == space
        rows = describe(space)
        assert [r["name"] for r in rows] == space.names
    rows = {r["name"]: r for r in describe(load_space("speech-all"))}
    assert rows["attention_window"]["condition"] == "attention in ['local']"
    assert rows["ffn_dim"]["per_layer"] == "layers"


def test_load_from_path(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\n"
        "choices:\n"
        "  - {name: encoder, values: [conformer, lstm]}\n"
        "  - {name: layers, values: [2, 4]}\n"
        "  - {name: heads, values: [2, 4], when: {encoder: [conformer]}}\n"
        "  - {name: ffn_dim, values: [256, 512], per_layer: layers}\n"
    )
    space = load_space(path)
    assert space.count() == 2 * (4 + 16) + (4 + 16)
    assert load_space(str(path)) == space


def test_unknown_builtin_lists_the_names() -> None:
    names = re.escape(
        "'nope' is not a built-in space (conformer-ctc, speech-all, streaming, tts-fastspeech)"
    )
    with pytest.raises(ValueError, match=names):
        load_space("nope")
    with pytest.raises(ValueError, match="does not exist"):
        load_space("missing.yaml")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: s\nchoice: []\n", "space 's': unknown key(s) ['choice']"),
        (
            "name: s\nchoices:\n  - {name: a, values: [1], default: 1}\n",
            "space 's', choice 'a': unknown key(s) ['default']",
        ),
        (
            "name: s\nchoices:\n  - {name: a, values: [1], when: {b: [1]}}\n"
            "  - {name: b, values: [1]}\n",
            "space 's', choice 'a': condition on 'b', which is not declared before it",
        ),
        (
            "name: s\nchoices:\n  - {name: b, values: [x, y]}\n"
            "  - {name: a, values: [1], when: {b: [z]}}\n",
            "condition b in ['z'] names ['z'], not in b's values ['x', 'y']",
        ),
        (
            "name: s\nchoices:\n  - {name: n, values: [small, big]}\n"
            "  - {name: a, values: [1, 2], per_layer: n}\n",
            "choice 'a': per_layer 'n' must be a scalar choice with positive integer values",
        ),
        (
            "name: s\nchoices:\n  - {name: a, values: [1, 2], per_layer: n}\n",
            "choice 'a': per_layer 'n' is not a choice declared before it",
        ),
        ("name: s\nchoices:\n  - {name: a, values: [1]}\n  - {name: a, values: [2]}\n", "twice"),
        ("name: s\nchoices:\n  - {name: a, values: [1, 1]}\n", "values [1, 1] contain dupl"),
        ("name: s\nchoices:\n  - {name: a, values: []}\n", "must be a non-empty list"),
        (
            "name: s\nchoices:\n  - {name: a, values: [2]}\nconstraints:\n"
            "  - {divisible: [a, b]}\n",
            "constraint divisible ['a', 'b']: 'b' is not a choice",
        ),
        (
            "name: s\nchoices:\n  - {name: a, values: [1]}\nconstraints:\n  - {less: [a, a]}\n",
            "less",
        ),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_bad_space_definitions(yaml_text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        space_from_yaml(yaml_text)


def test_constraints_that_exclude_everything_are_rejected() -> None:
    with pytest.raises(ValueError, match="the constraints exclude every architecture"):
        SearchSpace(
            "empty",
            [Choice("a", (3,)), Choice("b", (2,))],
            constraints=[Constraint("divisible", ("a", "b"))],
        )
