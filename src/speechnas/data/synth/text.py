"""Text side of the synthetic corpus: what eSpeak NG speaks and what the model must output.

Two tasks are provided:

* ``digits``: TIDIGITS-like connected digit strings, spoken as words in one of several
  languages (``en``, ``de``, ``es``, ``fr``).
* ``phrases``: short open-vocabulary English phrases built from a shipped word list
  (``words_en.txt``), mixing simple grammatical templates with random word sequences so that
  words keep appearing in new combinations.

Every random choice is drawn from an explicit :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import unicodedata
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "DIGIT_WORDS",
    "TASKS",
    "load_words",
    "make_digits",
    "make_phrase",
    "make_text",
    "normalize_text",
]

# ---------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------

#: Per language code, the spoken forms of the digits 0..9 (index = digit). Where a digit has
#: several forms, each is equally likely.
DIGIT_WORDS: dict[str, list[list[str]]] = {
    "en": [
        ["zero", "oh"],
        ["one"],
        ["two"],
        ["three"],
        ["four"],
        ["five"],
        ["six"],
        ["seven"],
        ["eight"],
        ["nine"],
    ],
    "de": [
        ["null"],
        ["eins"],
        ["zwei", "zwo"],
        ["drei"],
        ["vier"],
        ["fünf"],
        ["sechs"],
        ["sieben"],
        ["acht"],
        ["neun"],
    ],
    "es": [
        ["cero"],
        ["uno"],
        ["dos"],
        ["tres"],
        ["cuatro"],
        ["cinco"],
        ["seis"],
        ["siete"],
        ["ocho"],
        ["nueve"],
    ],
    "fr": [
        ["zéro"],
        ["un"],
        ["deux"],
        ["trois"],
        ["quatre"],
        ["cinq"],
        ["six"],
        ["sept"],
        ["huit"],
        ["neuf"],
    ],
}


def _check_lang(lang: str, supported: Sequence[str], what: str) -> None:
    if lang not in supported:
        raise ValueError(
            f"unsupported language {lang!r} for {what}; supported: {', '.join(sorted(supported))}"
        )


def make_digits(
    rng: np.random.Generator, lang: str = "en", min_len: int = 1, max_len: int = 7
) -> str:
    """A connected digit string as a lowercase word transcript joined by single spaces.

    The length is uniform in ``[min_len, max_len]``, each digit is uniform in 0..9 and, where a
    digit has several spoken forms (English 0: "zero"/"oh", German 2: "zwei"/"zwo"), the form is
    picked uniformly.
    """
    _check_lang(lang, list(DIGIT_WORDS), "digits")
    if min_len < 1 or max_len < min_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    forms = DIGIT_WORDS[lang]
    n = int(rng.integers(min_len, max_len + 1))
    words: list[str] = []
    for d in rng.integers(0, 10, size=n):
        alts = forms[int(d)]
        words.append(alts[int(rng.integers(len(alts)))] if len(alts) > 1 else alts[0])
    return " ".join(words)


# ---------------------------------------------------------------------------------------------
# Open-vocabulary phrases
# ---------------------------------------------------------------------------------------------

_WORD_LIST_LANGS = ("en",)


@functools.cache
def _load_words_cached(lang: str) -> tuple[str, ...]:
    res = importlib.resources.files("speechnas.data.synth").joinpath(f"words_{lang}.txt")
    text = res.read_text(encoding="utf-8")
    words: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        w = line.strip()
        if w and w not in seen:
            seen.add(w)
            words.append(w)
    return tuple(words)


def load_words(lang: str = "en") -> list[str]:
    """The shipped word list for ``lang`` (file order, no duplicates)."""
    _check_lang(lang, _WORD_LIST_LANGS, "the word list")
    return list(_load_words_cached(lang))


def _w(words: str) -> tuple[str, ...]:
    return tuple(words.split())


# Part-of-speech pools used to fill the phrase templates. Only the words that are also in the
# ``words`` list passed to :func:`make_phrase` are used, so every phrase stays inside it.
_POS: dict[str, tuple[str, ...]] = {
    "DET": _w("the a this that every one some my your his her our their another"),
    "PRON": _w("i you he she we they"),
    "COP": _w("is was seems looked became"),
    "INT": _w("very quite really too so almost"),
    "CONJ": _w("and but or"),
    "PREP": _w(
        "in on at near under behind beside with from into over across by through around along "
        "inside outside"
    ),
    "ADV": _w(
        "quickly slowly quietly loudly carefully happily sadly gently suddenly often never "
        "always sometimes soon today yesterday again early late here there together alone "
        "finally later twice once well badly tonight"
    ),
    "ADJ": _w(
        "big small large little tall short long old new young good bad great happy sad angry "
        "tired hungry busy quiet loud soft hard strange clean dirty bright dark rich poor "
        "strong weak kind brave careful calm gentle wild full empty open sharp round flat "
        "heavy warm cold hot cool wet dry fresh sweet beautiful pretty ugly funny famous "
        "friendly lonely proud clever silly honest broken red blue green yellow black white "
        "brown gray pink purple fast slow lucky special simple"
    ),
    "NOUN": _w(
        "man woman child boy girl baby friend mother father sister brother teacher doctor "
        "nurse student farmer driver king queen captain pilot artist writer singer neighbor "
        "stranger guest soldier sailor house room door window garden street bridge city "
        "village school shop market library station hotel park farm river lake beach island "
        "mountain forest table chair bed lamp clock picture mirror box bag basket bottle cup "
        "plate bowl knife key book letter pen map ticket phone radio camera computer car bus "
        "train boat ship plane bicycle truck dog cat horse cow pig sheep goat chicken duck "
        "bird fish mouse rabbit bear wolf fox lion tiger monkey frog apple orange banana "
        "lemon cake bread cheese egg coat hat shoe dress jacket ring watch tree flower song "
        "game story gift message stone cloud star moon"
    ),
    # Past-tense transitive verbs: "<subject> <TV> <object>".
    "TV": _w(
        "saw found took made gave bought sold held kept brought built broke caught chose "
        "wrote opened closed moved carried wanted liked loved needed watched cleaned washed "
        "pushed pulled dropped lifted fixed followed visited helped called painted cooked "
        "remembered forgot met lost sent showed used changed left"
    ),
    # Past-tense intransitive verbs: "<subject> <IV> (<adverb> | <prep phrase>)".
    "IV": _w(
        "ran walked slept smiled laughed waited fell stopped arrived stayed worked played "
        "sang danced cried jumped swam talked listened returned went came sat stood grew "
        "spoke lived moved left won lost turned started"
    ),
}

# Each template is a sequence of part-of-speech slots (keys of ``_POS``).
_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("PRON", "IV", "ADV"),
    ("DET", "NOUN", "COP", "ADJ"),
    ("DET", "NOUN", "IV", "ADV"),
    ("DET", "NOUN", "COP", "INT", "ADJ"),
    ("PRON", "TV", "DET", "ADJ", "NOUN"),
    ("DET", "ADJ", "NOUN", "IV", "ADV"),
    ("DET", "ADJ", "NOUN", "TV", "DET", "NOUN"),
    ("ADV", "DET", "NOUN", "TV", "DET", "NOUN"),
    ("PRON", "IV", "PREP", "DET", "ADJ", "NOUN"),
    ("PRON", "TV", "DET", "NOUN", "PREP", "DET", "NOUN"),
    ("DET", "ADJ", "NOUN", "IV", "PREP", "DET", "NOUN"),
    ("DET", "NOUN", "PREP", "DET", "NOUN", "COP", "ADJ"),
    ("PRON", "TV", "DET", "NOUN", "CONJ", "DET", "NOUN"),
    ("DET", "ADJ", "ADJ", "NOUN", "TV", "DET", "ADJ", "NOUN"),
    ("DET", "NOUN", "TV", "DET", "NOUN", "PREP", "DET", "NOUN"),
)

#: Probability that :func:`make_phrase` uses a template (when one fits) rather than a random
#: word sequence.
TEMPLATE_PROB = 0.6

_VOWELS = frozenset("aeiou")


@functools.lru_cache(maxsize=8)
def _pools_for(words: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The part-of-speech pools restricted to ``words``, in a deterministic order."""
    present = frozenset(words)
    return {tag: tuple(w for w in pool if w in present) for tag, pool in _POS.items()}


def _fix_articles(tokens: list[str], vocab: frozenset[str]) -> list[str]:
    """Use "an" before a vowel letter and "a" before a consonant, where both are in ``vocab``."""
    if not {"a", "an"} <= vocab:
        return tokens
    out = list(tokens)
    for i in range(len(out) - 1):
        if out[i] in ("a", "an"):
            out[i] = "an" if out[i + 1][0] in _VOWELS else "a"
    return out


def make_phrase(
    rng: np.random.Generator,
    words: Sequence[str],
    min_words: int = 3,
    max_words: int = 8,
) -> str:
    """A short phrase made only of ``words``, with between ``min_words`` and ``max_words`` words.

    With probability :data:`TEMPLATE_PROB` a grammatical template whose length fits is filled
    with words of the right part of speech (e.g. "the old dog saw a red car", "the lamp is
    bright"); otherwise (or when no template fits) the phrase is a uniformly random sequence of
    words with a length uniform in ``[min_words, max_words]``. The result is deterministic given
    the state of ``rng``.
    """
    if min_words < 1 or max_words < min_words:
        raise ValueError(
            f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}"
        )
    vocab_t = tuple(words)
    if not vocab_t:
        raise ValueError("words must not be empty")
    pools = _pools_for(vocab_t)
    fitting = [
        t for t in _TEMPLATES if min_words <= len(t) <= max_words and all(pools[s] for s in t)
    ]
    use_template = bool(fitting) and float(rng.random()) < TEMPLATE_PROB
    if use_template:
        template = fitting[int(rng.integers(len(fitting)))]
        tokens = [pools[slot][int(rng.integers(len(pools[slot])))] for slot in template]
        tokens = _fix_articles(tokens, frozenset(vocab_t))
    else:
        n = int(rng.integers(min_words, max_words + 1))
        tokens = [vocab_t[int(i)] for i in rng.integers(0, len(vocab_t), size=n)]
    return " ".join(tokens)


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
# An apostrophe not between two word characters (letters/digits/marks) is punctuation.
_LOOSE_APOSTROPHE = re.compile(r"(?<![^\W_])'|'(?![^\W_])")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation (keeping apostrophes inside words) and collapse whitespace.

    Letters outside ASCII (ü, é, ñ, ...) and digits are kept; the text is NFC-normalised first.
    Other punctuation and symbols become word separators, e.g. ``"Well-known, isn't it?"`` ->
    ``"well known isn't it"``.
    """
    s = unicodedata.normalize("NFC", text).lower().translate(_APOSTROPHES)
    chars = [c if c == "'" or unicodedata.category(c)[0] in "LNM" else " " for c in s]
    s = _LOOSE_APOSTROPHE.sub(" ", "".join(chars))
    return _SPACES.sub(" ", s).strip()


# ---------------------------------------------------------------------------------------------
# Task registry
# ---------------------------------------------------------------------------------------------


def _digits_task(rng: np.random.Generator, lang: str) -> str:
    return make_digits(rng, lang)


def _phrases_task(rng: np.random.Generator, lang: str) -> str:
    _check_lang(lang, _WORD_LIST_LANGS, "the phrases task")
    return make_phrase(rng, _load_words_cached(lang))


#: Text generators by task name; each takes ``(rng, lang)`` and returns a normalised transcript.
TASKS: dict[str, Callable[[np.random.Generator, str], str]] = {
    "digits": _digits_task,
    "phrases": _phrases_task,
}


def make_text(task: str, rng: np.random.Generator, lang: str = "en") -> str:
    """One transcript for ``task`` in ``lang`` (see :data:`TASKS`)."""
    try:
        fn = TASKS[task]
    except KeyError:
        raise ValueError(
            f"unknown task {task!r}; valid tasks: {', '.join(sorted(TASKS))}"
        ) from None
    return fn(rng, lang)
