"""The record every loader produces and every consumer reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Utterance:
    """One utterance of a corpus.

    ``audio_path`` is absolute. ``offset`` and ``duration`` are in seconds; a ``duration`` of
    ``None`` means "to the end of the file".
    """

    id: str
    audio_path: Path
    text: str
    duration: float | None = None
    offset: float = 0.0
    speaker: str | None = None
    lang: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["audio_filepath"] = str(d.pop("audio_path"))
        return {k: v for k, v in d.items() if v is not None}
