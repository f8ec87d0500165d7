"""A concrete synthetic speaker: an engine, its voice, and prosody settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Voice:
    """``variant`` is the engine's voice name (an eSpeak variant such as ``f3``, a Flite voice
    such as ``rms``, a Festival voice such as ``kal_diphone``); ``language`` the eSpeak language
    voice (``en-us``) or plain language code. ``rate`` is in words per minute (175 = the engine's
    own tempo), ``pitch`` and ``pitch_range`` on eSpeak's 0-100 scale (50 = the voice's own),
    ``word_gap`` in units of 10 ms; an engine uses those it has controls for.
    """

    language: str
    variant: str
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50
    word_gap: int = 0
    engine: str = "espeak"

    @property
    def espeak_name(self) -> str:
        return f"{self.language}+{self.variant}"

    @property
    def name(self) -> str:
        """Unique across engines: ``en-us+f3`` for eSpeak, ``flite:rms`` for the others."""
        return self.espeak_name if self.engine == "espeak" else f"{self.engine}:{self.variant}"
