"""Speech synthesis engines behind one interface, so a corpus can mix them.

- ``espeak``: eSpeak NG (formant synthesis; the ``espeakng-loader`` wheel, always present),
  104 voice variants in many languages.
- ``flite``: CMU Flite (Debian package ``flite``), through its shared library: the
  statistical-parametric (clustergen) voices ``awb``, ``rms``, ``slt``; English only.
- ``festival``: Festival (Debian packages ``festival``, ``festvox-kallpc16k``,
  ``festvox-kdlpc16k``, ``festvox-us-slt-hts``), in batch mode, one process per batch:
  diphone voices ``kal_diphone`` and ``ked_diphone`` and the HTS voice
  ``cmu_us_slt_arctic_hts``; English only.

Each engine synthesizes a batch of ``(text, voice, seed)`` requests to float32 samples at the
engine's own rate; every output is a function of its request alone (eSpeak renders in a fresh
child; Flite's and Festival's random generators are seeded per request). Tempo follows
``voice.rate`` on every voice but Festival's HTS one; pitch follows ``voice.pitch`` on eSpeak and
Flite. An engine that is not installed raises :class:`EngineUnavailable` naming the packages to
install. Written against the engines' own C
and Scheme interfaces because no maintained Python binding covers Flite or Festival.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from speechnas.data.synth.voice import Voice

#: what installs each optional engine (``bash scripts/install.sh --engines`` runs these)
INSTALL_HINT = {
    "flite": "apt-get install flite",
    "festival": "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
}


#: each request spoken: float32 samples and their sample rate
Spoken = list[tuple[np.ndarray, int]]
Request = tuple[str, Voice, int]  # text, voice, seed


class EngineUnavailable(RuntimeError):
    """A synthesis engine (or one of its voices) is not installed on this machine."""


class Synthesizer(Protocol):
    name: str

    def voices(self, lang: str) -> tuple[str, ...]:
        """Voice names this engine has for a language (empty when it has none)."""
        ...

    def synthesize(self, requests: Sequence[Request]) -> Spoken:
        """Each ``(text, voice, seed)`` spoken: float32 samples and their sample rate."""
        ...


class EspeakEngine:
    name = "espeak"

    def voices(self, lang: str) -> tuple[str, ...]:
        from speechnas.data.synth.espeak import list_variants

        return list_variants()

    def synthesize(self, requests: Sequence[Request]) -> Spoken:
        from speechnas.data.synth.espeak import Espeak

        engine = Espeak.get()
        return [(engine.synthesize(t, v, seed=s), engine.sample_rate) for t, v, s in requests]


class _Wave(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_char_p),
        ("sample_rate", ctypes.c_int),
        ("num_samples", ctypes.c_int),
        ("num_channels", ctypes.c_int),
        ("samples", ctypes.POINTER(ctypes.c_short)),
    ]


class _FliteVoice(ctypes.Structure):  # the leading fields of cst_voice
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p)]


def _pitch_factor(pitch: int) -> float:
    """eSpeak's 0-100 pitch scale (50 = the voice's own) as a multiplier, ±0.5 octave."""
    return float(2.0 ** ((pitch - 50) / 100))


class FliteEngine:
    name = "flite"
    VOICES = ("awb", "rms", "slt")

    def __init__(self) -> None:
        path = ctypes.util.find_library("flite")
        if path is None:
            raise EngineUnavailable(
                f"flite is not installed; install it with: {INSTALL_HINT['flite']}"
            )
        self._lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        self._lib.flite_init()
        self._lib.flite_text_to_wave.restype = ctypes.POINTER(_Wave)
        self._lib.flite_text_to_wave.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        self._lib.flite_feat_set_float.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_float]
        self._lib.delete_wave.argtypes = [ctypes.POINTER(_Wave)]
        self._voices: dict[str, ctypes._Pointer[_FliteVoice]] = {}
        self._libc = ctypes.CDLL(None)
        self._libc.srand.argtypes = [ctypes.c_uint]

    def voices(self, lang: str) -> tuple[str, ...]:
        return self.VOICES if lang == "en" else ()

    def _voice(self, name: str) -> ctypes._Pointer[_FliteVoice]:
        if name not in self._voices:
            if name not in self.VOICES:
                raise ValueError(f"flite has no voice {name!r}; voices: {', '.join(self.VOICES)}")
            path = ctypes.util.find_library(f"flite_cmu_us_{name}")
            if path is None:
                raise EngineUnavailable(
                    f"the flite voice {name!r} is not installed; install it with: "
                    f"{INSTALL_HINT['flite']}"
                )
            register = getattr(
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL), f"register_cmu_us_{name}"
            )
            register.restype = ctypes.POINTER(_FliteVoice)
            register.argtypes = [ctypes.c_char_p]
            self._voices[name] = register(None)
        return self._voices[name]

    def synthesize(self, requests: Sequence[Request]) -> Spoken:
        out = []
        for text, voice, seed in requests:
            # the clustergen voices draw their unvoiced excitation from libc's rand(): seeded per
            # utterance, the samples depend on the request alone
            self._libc.srand(seed % 2**32)
            v = self._voice(voice.variant)
            feats = v.contents.features
            self._lib.flite_feat_set_float(feats, b"duration_stretch", 175.0 / voice.rate)
            self._lib.flite_feat_set_float(feats, b"f0_shift", _pitch_factor(voice.pitch))
            wave = self._lib.flite_text_to_wave(text.encode("utf-8"), v)
            if not wave:
                raise RuntimeError(f"flite produced nothing for {text!r} ({voice.name})")
            w = wave.contents
            x = np.ctypeslib.as_array(w.samples, (w.num_samples * w.num_channels,)).copy()
            rate = w.sample_rate
            self._lib.delete_wave(wave)
            out.append((x.astype(np.float32) / 32768.0, rate))
        return out


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalEngine:
    name = "festival"
    VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")

    def __init__(self) -> None:
        self._exe = shutil.which("festival")
        if self._exe is None:
            raise EngineUnavailable(
                f"festival is not installed; install it with: {INSTALL_HINT['festival']}"
            )

    def voices(self, lang: str) -> tuple[str, ...]:
        return self.VOICES if lang == "en" else ()

    def synthesize(self, requests: Sequence[Request]) -> Spoken:
        """The whole batch in one Festival process (its start-up costs more than a sentence)."""
        if not requests:
            return []
        with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
            lines = []
            for i, (text, voice, seed) in enumerate(requests):
                if voice.variant not in self.VOICES:
                    raise ValueError(
                        f"festival has no voice {voice.variant!r}; voices: {', '.join(self.VOICES)}"
                    )
                lines += [
                    f"(voice_{voice.variant})",
                    f"(srand {seed % 2**31})",
                    f"(Parameter.set 'Duration_Stretch {175.0 / voice.rate:.4f})",
                    f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "
                    f'"{tmp}/{i}.wav" \'riff)',
                ]
            script = Path(tmp) / "batch.scm"
            script.write_text("\n".join(lines) + "\n")
            run = subprocess.run(
                [self._exe, "-b", str(script)], capture_output=True, text=True, timeout=600
            )
            out = []
            for i, (_text, voice, _seed) in enumerate(requests):
                wav = Path(tmp) / f"{i}.wav"
                if not wav.is_file():
                    detail = (run.stderr or run.stdout).strip()[-400:]
                    if "unbound variable" in detail and "voice_" in detail:
                        raise EngineUnavailable(
                            f"the festival voice {voice.variant!r} is not installed; install it "
                            f"with: {INSTALL_HINT['festival']}"
                        )
                    raise RuntimeError(
                        f"festival produced no audio (voice {voice.variant}): {detail}"
                    )
                x, rate = sf.read(wav, dtype="float32", always_2d=True)
                out.append((x.mean(axis=1), int(rate)))
        return out


ENGINES: dict[str, type[EspeakEngine] | type[FliteEngine] | type[FestivalEngine]] = {
    "espeak": EspeakEngine,
    "flite": FliteEngine,
    "festival": FestivalEngine,
}


@cache
def get_engine(name: str) -> Synthesizer:
    """The engine ``name`` of this process (loaded once); :class:`EngineUnavailable` when it is
    not installed, ``ValueError`` when there is no such engine."""
    if name not in ENGINES:
        raise ValueError(f"unknown synthesis engine {name!r}; engines: {', '.join(ENGINES)}")
    return ENGINES[name]()


@cache
def available(name: str) -> bool:
    """Whether engine ``name`` and its voices can be used here."""
    try:
        engine = get_engine(name)
        if isinstance(engine, FliteEngine):
            for v in engine.VOICES:
                engine._voice(v)
        elif isinstance(engine, FestivalEngine):
            check = [
                ("one", Voice(language="en", variant=v, engine=name), 0) for v in engine.VOICES
            ]
            engine.synthesize(check)
    except EngineUnavailable:
        return False
    return True
