"""FastSpeech 2-style acoustic models for text-to-speech: the searchable architecture
(:mod:`~speechnas.nn.tts.spec`), the model (:mod:`~speechnas.nn.tts.model`), its loss, its
analytic cost and the hand-designed presets."""

from speechnas.nn.tts.blocks import length_regulate
from speechnas.nn.tts.cost import tts_macs, tts_parameters
from speechnas.nn.tts.loss import tts_loss
from speechnas.nn.tts.model import FastSpeech, TtsOutput, predicted_durations
from speechnas.nn.tts.presets import TTS_PRESETS, tts_preset
from speechnas.nn.tts.spec import FIELDS, OPS, TtsLayerSpec, TtsSpec, decode_tts

__all__ = [
    "FIELDS",
    "OPS",
    "TTS_PRESETS",
    "FastSpeech",
    "TtsLayerSpec",
    "TtsOutput",
    "TtsSpec",
    "decode_tts",
    "length_regulate",
    "predicted_durations",
    "tts_loss",
    "tts_macs",
    "tts_parameters",
    "tts_preset",
]
