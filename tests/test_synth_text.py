"""Tests for speechnas.data.synth.text: digit strings, phrases, normalisation, task registry."""

from __future__ import annotations

import importlib.resources
import itertools
import re

import numpy as np
import pytest

from speechnas.data.synth import text as T
from speechnas.data.synth.text import (
    DIGIT_WORDS,
    TASKS,
    load_words,
    make_digits,
    make_phrase,
    make_text,
    normalize_text,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- digits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["en", "de", "es", "fr"])
def test_digit_words_table(lang: str) -> None:
    table = DIGIT_WORDS[lang]
    assert len(table) == 10
    assert all(alts and all(w == w.lower() and " " not in w for w in alts) for alts in table)


def test_digit_words_forms() -> None:
    assert DIGIT_WORDS["en"][0] == ["zero", "oh"]
    assert [a[0] for a in DIGIT_WORDS["en"][1:]] == [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ]  # fmt: skip
    assert set(DIGIT_WORDS["de"][2]) == {"zwei", "zwo"}
    assert DIGIT_WORDS["de"][5] == ["fünf"]
    assert DIGIT_WORDS["es"][1] == ["uno"]
    assert DIGIT_WORDS["fr"][0] == ["zéro"]


@pytest.mark.parametrize("lang", ["en", "de", "es", "fr"])
def test_make_digits_lengths_and_vocabulary(lang: str) -> None:
    vocab = {w for alts in DIGIT_WORDS[lang] for w in alts}
    g = rng(1)
    lengths = set()
    for _ in range(400):
        s = make_digits(g, lang)
        words = s.split(" ")
        assert s == " ".join(words) and "" not in words  # single spaces, no padding
        assert 1 <= len(words) <= 7
        assert set(words) <= vocab
        assert normalize_text(s) == s
        lengths.add(len(words))
    assert lengths == set(range(1, 8))


def test_make_digits_alternatives_and_uniform_digits() -> None:
    g = rng(2)
    counts: dict[str, int] = {}
    for _ in range(1500):
        for w in make_digits(g, "en").split():
            counts[w] = counts.get(w, 0) + 1
    assert counts["zero"] > 0 and counts["oh"] > 0
    # Digit 0 is as likely as any other digit; its two forms share that mass.
    zero = counts["zero"] + counts["oh"]
    assert 0.8 < zero / counts["five"] < 1.25
    assert 0.75 < counts["zero"] / counts["oh"] < 1.33
    de = " ".join(make_digits(g, "de") for _ in range(300)).split()
    assert "zwei" in de and "zwo" in de


def test_make_digits_custom_length_and_errors() -> None:
    g = rng(3)
    assert all(len(make_digits(g, min_len=4, max_len=4).split()) == 4 for _ in range(20))
    with pytest.raises(ValueError, match="de, en, es, fr"):
        make_digits(g, "xx")
    with pytest.raises(ValueError):
        make_digits(g, min_len=0)
    with pytest.raises(ValueError):
        make_digits(g, min_len=5, max_len=4)


def test_make_digits_deterministic() -> None:
    a = [make_digits(rng(7), "fr") for _ in range(1)] + [make_text("digits", rng(7), "de")]
    b = [make_digits(rng(7), "fr") for _ in range(1)] + [make_text("digits", rng(7), "de")]
    assert a == b
    g1, g2 = rng(11), rng(11)
    assert [make_digits(g1) for _ in range(50)] == [make_digits(g2) for _ in range(50)]
    g3 = rng(12)
    assert [make_digits(g1) for _ in range(50)] != [make_digits(g3) for _ in range(50)]


# --- word list --------------------------------------------------------------------------------


def test_word_list_file() -> None:
    raw = (
        importlib.resources.files("speechnas.data.synth")
        .joinpath("words_en.txt")
        .read_text(encoding="utf-8")
    )
    lines = raw.splitlines()
    assert all(re.fullmatch(r"[a-z]+", w) for w in lines)
    assert len(lines) == len(set(lines))
    assert len(set(lines)) >= 600
    words = load_words("en")
    assert words == lines
    words.append("mutation")  # a copy, the cache is unaffected
    assert "mutation" not in load_words()


def test_word_list_covers_parts_of_speech() -> None:
    words = set(load_words())
    for tag, pool in T._POS.items():
        assert set(pool) <= words, tag
    for w in ["the", "and", "of", "is", "quickly", "house", "green", "saw", "walked"]:
        assert w in words
    with pytest.raises(ValueError, match="en"):
        load_words("de")


# --- phrases ----------------------------------------------------------------------------------


def test_make_phrase_uses_only_list_words() -> None:
    words = load_words()
    vocab = set(words)
    g = rng(4)
    phrases = [make_phrase(g, words) for _ in range(600)]
    used: set[str] = set()
    for p in phrases:
        toks = p.split(" ")
        assert 3 <= len(toks) <= 8
        assert set(toks) <= vocab
        assert normalize_text(p) == p
        used.update(toks)
    # Open vocabulary: a large share of the list is used, phrases rarely repeat.
    assert len(used) > 400
    assert len(set(phrases)) > 590
    # Both templates (grammatical, e.g. containing a copula after a determiner + noun) and
    # random sequences occur.
    templ = [p for p in phrases if re.match(r"^(the|a|an|this|that|my|our) \w+ (is|was) ", p)]
    assert templ


def test_make_phrase_articles_and_word_combinations() -> None:
    words = load_words()
    g = rng(5)
    neighbours: dict[str, set[str]] = {}
    for _ in range(1500):
        toks = make_phrase(g, words).split()
        for a, b in itertools.pairwise(toks):
            neighbours.setdefault(a, set()).add(b)
    assert "an" in neighbours  # templates use "an" before vowel-initial words
    # The same noun appears with many different neighbours (new combinations).
    assert len(neighbours["dog"]) >= 5
    vocab = frozenset(words)
    assert T._fix_articles(["a", "old", "dog"], vocab) == ["an", "old", "dog"]
    assert T._fix_articles(["an", "red", "apple"], vocab) == ["a", "red", "apple"]
    assert T._fix_articles(["a", "old"], frozenset({"a", "old"})) == ["a", "old"]


def test_make_phrase_custom_list_and_lengths() -> None:
    g = rng(6)
    small = ["alpha", "beta", "gamma"]  # no parts of speech known: random sequences only
    for _ in range(50):
        toks = make_phrase(g, small, min_words=2, max_words=4).split()
        assert 2 <= len(toks) <= 4 and set(toks) <= set(small)
    words = load_words()
    for lo, hi in [(1, 1), (3, 3), (8, 8), (5, 12)]:
        for _ in range(40):
            assert lo <= len(make_phrase(g, words, lo, hi).split()) <= hi
    with pytest.raises(ValueError):
        make_phrase(g, words, min_words=0)
    with pytest.raises(ValueError):
        make_phrase(g, words, min_words=4, max_words=3)
    with pytest.raises(ValueError):
        make_phrase(g, [])


def test_make_phrase_deterministic() -> None:
    words = load_words()
    g1, g2 = rng(9), rng(9)
    assert [make_phrase(g1, words) for _ in range(100)] == [
        make_phrase(g2, words) for _ in range(100)
    ]


# --- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  many   spaces\tand\nlines  ", "many spaces and lines"),
        ("Don't stop.", "don't stop"),
        ("'quoted' words'", "quoted words"),
        ("rock'n'roll", "rock'n'roll"),
        ("O’Neil’s cat", "o'neil's cat"),
        ("Well-known; semi:colon (paren) [x]", "well known semi colon paren x"),
        ("Grüße aus Köln", "grüße aus köln"),
        ("ÉTÉ à Paris", "été à paris"),
        ("e\u0301te\u0301", "été"),  # decomposed accents are composed
        ("Ein Zwo Drei", "ein zwo drei"),
        ("¿Qué tal? ¡Bien!", "qué tal bien"),
        ("room 101", "room 101"),
        ("' ' -- ...", ""),
        ("", ""),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


# --- task registry ----------------------------------------------------------------------------


def test_tasks_registry() -> None:
    assert set(TASKS) == {"digits", "phrases"}
    g = rng(10)
    d = make_text("digits", g, "es")
    assert set(d.split()) <= {w for alts in DIGIT_WORDS["es"] for w in alts}
    p = make_text("phrases", g)
    assert set(p.split()) <= set(load_words())
    assert make_text("phrases", rng(3), "en") == make_text("phrases", rng(3), "en")
    with pytest.raises(ValueError, match="digits, phrases"):
        make_text("nope", g)
    with pytest.raises(ValueError, match="en"):
        make_text("phrases", g, "de")
    with pytest.raises(ValueError, match="supported"):
        make_text("digits", g, "it")
