"""eSpeak NG speech synthesis through ctypes, on the library that ``espeakng-loader`` ships.

The library keeps global state (one voice, one set of parameters, one callback), so a process
holds a single :class:`Espeak`. Its output also depends on everything it spoke before in the
process (oscillator phases and filter memories carry over, and no call resets them), so each
utterance is spoken in a child forked from a process that has initialised the library but never
spoken: the samples are then a function of (text, voice, seed) alone.

:meth:`Espeak.synthesize_phonemes` also reports the phonemes eSpeak spoke (its phoneme events,
eSpeak's ASCII phoneme mnemonics such as ``h``, ``@``, ``'oU``, ``_:``) and the sample at which
each began; enabling the events leaves the samples unchanged.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path

import espeakng_loader
import numpy as np

from speechnas.data.synth.voice import Voice

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of ``speak_lib.h``."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # samples since the start of the synthesis
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@cache
def list_variants() -> tuple[str, ...]:
    """Names of the voice variants in the shipped eSpeak data (e.g. ``f3``, ``klatt2``)."""
    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))


class Espeak:
    """A handle on the eSpeak NG library of this process."""

    _instance: Espeak | None = None

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        data = str(espeakng_loader.get_data_path()).encode()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if rate <= 0:
            raise RuntimeError(f"eSpeak NG failed to initialise with data at {data.decode()}")
        self.sample_rate: int = rate
        self._chunks: list[np.ndarray] = []
        self._phonemes: list[tuple[str, int]] = []  # (mnemonic, start sample) when enabled
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library holds it
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_ng_SetPhonemeEvents.argtypes = [ctypes.c_int, ctypes.c_int]

    @classmethod
    def get(cls) -> Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, wav: ctypes.Array, n: int, events: ctypes._Pointer[_Event]) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events and events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:  # sent only when enabled
                name = events[i].id.string.decode("utf-8", errors="replace")
                self._phonemes.append((name, events[i].sample))
            i += 1
        return 0

    def synthesize(self, text: str, voice: Voice, *, seed: int = 0) -> np.ndarray:
        """Speak ``text`` with ``voice``; float32 samples at :attr:`sample_rate`.

        Runs in a forked child so that this process's library state stays pristine; the
        result depends on ``(text, voice, seed)`` only.
        """
        payload = self._in_child(lambda: self._speak_here(text, voice, seed).tobytes(), text, voice)
        return np.frombuffer(payload, dtype=np.int16).astype(np.float32) / 32768.0

    def synthesize_phonemes(
        self, text: str, voice: Voice, *, seed: int = 0
    ) -> tuple[np.ndarray, list[str], list[int]]:
        """:meth:`synthesize` with eSpeak's phoneme events: the same samples, the phonemes
        spoken (mnemonics, pauses ``_`` and ``_:`` included) and the sample each started at."""

        def speak() -> bytes:
            self._lib.espeak_ng_SetPhonemeEvents(1, 0)  # in the child only: mnemonics, not IPA
            samples = self._speak_here(text, voice, seed).tobytes()
            events = json.dumps(self._phonemes).encode()
            return struct.pack("<Q", len(samples)) + samples + events

        payload = self._in_child(speak, text, voice)
        n = struct.unpack("<Q", payload[:8])[0]
        audio = np.frombuffer(payload[8 : 8 + n], dtype=np.int16).astype(np.float32) / 32768.0
        events = json.loads(payload[8 + n :])
        return audio, [name for name, _ in events], [start for _, start in events]

    def _in_child(self, work: Callable[[], bytes], text: str, voice: Voice) -> bytes:
        """What ``work`` returns, run in a forked child; its errors are raised here."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: speak once, send the result (or an error) back, exit
            os.close(read_fd)
            try:
                payload = b"\0" + work()
                code = 0
            except BaseException as e:  # reported to the parent, never raised in the child
                payload, code = b"\1" + str(e).encode(), 1
            with os.fdopen(write_fd, "wb") as w:
                w.write(struct.pack("<Q", len(payload)) + payload)
            os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as r:
            blob = r.read()
        os.waitpid(pid, 0)
        if len(blob) < 9:
            raise RuntimeError(f"eSpeak NG child died while speaking {text!r} ({voice.name})")
        payload = blob[8:]
        if payload[:1] == b"\1":
            message = payload[1:].decode(errors="replace")
            raise (ValueError if "no voice" in message else RuntimeError)(message)
        return payload[1:]

    def _speak_here(self, text: str, voice: Voice, seed: int) -> np.ndarray:
        if self._lib.espeak_SetVoiceByName(voice.espeak_name.encode()) != 0:
            raise ValueError(
                f"eSpeak NG has no voice {voice.name!r}; variants: {', '.join(list_variants())}"
            )
        for key, value in (
            ("rate", voice.rate),
            ("pitch", voice.pitch),
            ("range", voice.pitch_range),
            ("wordgap", voice.word_gap),
            ("volume", 100),
        ):
            self._lib.espeak_SetParameter(_PARAM[key], int(value), 0)
        self._lib.espeak_ng_SetRandSeed(seed)
        self._chunks, self._phonemes = [], []
        data = text.encode("utf-8") + b"\0"
        err = self._lib.espeak_Synth(data, len(data), 0, 0, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if err != 0:
            raise RuntimeError(f"eSpeak NG failed (code {err}) on {text!r} with {voice.name}")
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)
