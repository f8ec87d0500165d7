"""Phonemes for speech synthesis: eSpeak NG's, with the time each was spoken, and the symbol
table that numbers them for an acoustic model.

The symbols are eSpeak NG's own phoneme mnemonics (``h``, ``@``, ``'oU``: stress marks are part
of a vowel's symbol), taken from its phoneme events while it speaks, so the phonemes a model is
trained on are exactly those eSpeak timed. eSpeak ends each clause with pauses (``_:``, then
``_`` which spans the silence before the next clause's first sound). Every sequence here starts
with :data:`PAUSE` too, spanning the silence before eSpeak's first phoneme (empty when there is
none): the phonemes then cover the audio from its first sample to its last, and their
durations add up to the whole utterance.

:func:`phonemize` gives the symbols for a text without keeping the audio, the same list
:func:`speak_phonemes` records (eSpeak's phonemes depend on the language voice, not on the
variant or the prosody); it runs eSpeak once, about 10 ms for a sentence, and loads no torch.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechnas.data.synth.espeak import Espeak, list_variants
from speechnas.data.synth.voice import Voice

__all__ = ["PAD", "PAUSE", "PhonemeVocab", "Spoken", "espeak_voice", "phonemize", "speak_phonemes"]

#: index 0 of every vocabulary: padding
PAD = "<pad>"
#: eSpeak's short pause, also standing for the silence before the first phoneme
PAUSE = "_"


@dataclass(frozen=True)
class Spoken:
    """Audio (float32 at ``sample_rate``) and its phonemes; phoneme ``i`` spans samples
    ``starts[i]`` to ``starts[i + 1]`` (the last one to the end)."""

    audio: np.ndarray
    sample_rate: int
    phonemes: list[str]
    starts: list[int]


def espeak_voice(name: str) -> Voice:
    """An eSpeak voice name, ``language`` or ``language+variant`` (``en-us+m3``), as a
    :class:`Voice` at eSpeak's own prosody."""
    language, _, variant = name.partition("+")
    if not language or (variant and variant not in list_variants()):
        raise ValueError(
            f"voice: {name!r} is not 'language' or 'language+variant'; variants: "
            + ", ".join(list_variants())
        )
    return Voice(language, variant)


def speak_phonemes(text: str, voice: Voice, *, seed: int = 0) -> Spoken:
    """``text`` spoken by eSpeak NG with ``voice``, its phonemes and where each starts.

    A function of ``(text, voice, seed)`` alone, like :meth:`Espeak.synthesize` (whose samples
    these are); the phonemes start with :data:`PAUSE` at sample 0.
    """
    engine = Espeak.get()
    audio, names, starts = engine.synthesize_phonemes(text, voice, seed=seed)
    starts = [0, *starts]
    if any(b < a for a, b in itertools.pairwise(starts)) or starts[-1] > audio.size:
        raise RuntimeError(
            f"eSpeak NG timed the phonemes of {text!r} ({voice.name}) out of order or past the "
            f"end of its {audio.size} samples: {starts}"
        )
    return Spoken(audio, engine.sample_rate, [PAUSE, *names], starts)


def phonemize(text: str, voice: str | Voice = "en") -> list[str]:
    """The phonemes :func:`speak_phonemes` records for ``text`` in ``voice`` (an eSpeak voice
    name or a :class:`Voice`)."""
    v = espeak_voice(voice) if isinstance(voice, str) else voice
    _, names, _ = Espeak.get().synthesize_phonemes(text, v)
    return [PAUSE, *names]


@dataclass(frozen=True)
class PhonemeVocab:
    """Phoneme symbols numbered for an embedding; index 0 is :data:`PAD`."""

    symbols: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        symbols = tuple(self.symbols)
        if not symbols or symbols[0] != PAD:
            raise ValueError(f"symbols: the first must be {PAD!r}, got {symbols[:1]}")
        dup = sorted({s for s in symbols if symbols.count(s) > 1})
        if dup:
            raise ValueError(f"symbols: {dup} appear more than once")
        if not all(isinstance(s, str) and s for s in symbols):
            raise ValueError(f"symbols: expected non-empty strings, got {symbols}")
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(symbols)})

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]]) -> PhonemeVocab:
        """The symbols of ``sequences``, sorted, after :data:`PAD`."""
        return cls((PAD, *sorted({s for seq in sequences for s in seq} - {PAD})))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, phonemes: Sequence[str]) -> list[int]:
        try:
            return [self._index[p] for p in phonemes]
        except KeyError:
            unknown = sorted({p for p in phonemes if p not in self._index})
            raise ValueError(
                f"unknown phoneme(s) {unknown}; known: {' '.join(self.symbols[1:])}"
            ) from None

    def decode(self, ids: Iterable[int]) -> list[str]:
        ids = list(ids)
        bad = [i for i in ids if not 0 <= i < len(self.symbols)]
        if bad:
            raise ValueError(f"phoneme ids {bad} out of range [0, {len(self.symbols)})")
        return [self.symbols[i] for i in ids]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"symbols": list(self.symbols)}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> PhonemeVocab:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read a phoneme vocabulary: {err}") from err
        symbols = data.get("symbols") if isinstance(data, dict) else None
        if not isinstance(symbols, list):
            raise ValueError(f'{path}: expected {{"symbols": [...]}}, got {str(data)[:80]}')
        try:
            return cls(tuple(symbols))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
