"""eSpeak NG speech synthesis through ctypes, on the library that ``espeakng-loader`` ships.

The library keeps global state (one voice, one set of parameters, one callback), so a process
holds a single :class:`Espeak`. Its output also depends on everything it spoke before in the
process (oscillator phases and filter memories carry over, and no call resets them), so each
utterance is spoken in a child forked from a process that has initialised the library but never
spoken: the samples are then a function of (text, voice, seed) alone.
"""

from __future__ import annotations

import ctypes
import os
import struct
from functools import cache
from pathlib import Path

import espeakng_loader
import numpy as np

from speechnas.data.synth.voice import Voice

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
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
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library holds it
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]

    @classmethod
    def get(cls) -> Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, wav: ctypes.Array, n: int, _events: int) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synthesize(self, text: str, voice: Voice, *, seed: int = 0) -> np.ndarray:
        """Speak ``text`` with ``voice``; float32 samples at :attr:`sample_rate`.

        Runs in a forked child so that this process's library state stays pristine; the
        result depends on ``(text, voice, seed)`` only.
        """
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: speak once, send int16 samples (or an error) back, exit
            os.close(read_fd)
            try:
                payload = b"\0" + self._speak_here(text, voice, seed).tobytes()
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
        return np.frombuffer(payload[1:], dtype=np.int16).astype(np.float32) / 32768.0

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
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        err = self._lib.espeak_Synth(data, len(data), 0, 0, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if err != 0:
            raise RuntimeError(f"eSpeak NG failed (code {err}) on {text!r} with {voice.name}")
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)
