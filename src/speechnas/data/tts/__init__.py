"""Data for speech synthesis: eSpeak NG phonemes with exact durations, log-mel spectrograms,
the synthetic corpus and batches for training an acoustic model.

The names below are imported on first access (PEP 562), so that synthesis code reading
:func:`phonemize` or :func:`griffin_lim` loads no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MelConfig": "speechnas.data.tts.mel",
    "frames": "speechnas.data.tts.mel",
    "griffin_lim": "speechnas.data.tts.mel",
    "log_mel": "speechnas.data.tts.mel",
    "log_mel_np": "speechnas.data.tts.mel",
    "mel_filters": "speechnas.data.tts.mel",
    "PhonemeVocab": "speechnas.data.tts.phonemes",
    "Spoken": "speechnas.data.tts.phonemes",
    "phonemize": "speechnas.data.tts.phonemes",
    "speak_phonemes": "speechnas.data.tts.phonemes",
    "TtsCorpusConfig": "speechnas.data.tts.corpus",
    "TtsCorpusInfo": "speechnas.data.tts.corpus",
    "TtsUtterance": "speechnas.data.tts.corpus",
    "build_tts_corpus": "speechnas.data.tts.corpus",
    "load_ljspeech": "speechnas.data.tts.corpus",
    "load_tts_manifest": "speechnas.data.tts.corpus",
    "write_tts_corpus": "speechnas.data.tts.corpus",
    "TtsBatch": "speechnas.data.tts.dataset",
    "TtsDataset": "speechnas.data.tts.dataset",
    "collate_tts": "speechnas.data.tts.dataset",
    "tts_batches": "speechnas.data.tts.dataset",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
