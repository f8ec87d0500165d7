"""What an exported speech model says about itself, in its ONNX ``metadata_props``.

Every value is a string (JSON where structured). Keys: ``speechnas_version``, ``graph``
(model|encoder|predictor|joiner), ``input`` (features|waveform), ``features`` (the feature
config), ``subsampling_factor``, ``frame_shift_ms`` (of the output frames),
``min_input_length`` (input frames, or samples, that give one output frame), ``decoder``
(ctc|rnnt|attention), ``decoding`` (what the graphs support: ctc|rnnt), ``blank_id``,
``vocab_size``, ``vocabulary`` (the tokenizer's ``to_dict()``), ``arch`` (the architecture's
canonical JSON) or ``model_config`` (the baseline's), and for RNN-T ``pred_layers``,
``pred_hidden``, ``max_symbols``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from speechnas import __version__
from speechnas.data.filters import FeatureConfig
from speechnas.data.tokenizer import BLANK, Tokenizer
from speechnas.nn.build import SpeechModel
from speechnas.nn.decoders import AttentionDecoder, CTCDecoder, RNNTDecoder

if TYPE_CHECKING:
    from speechnas.train.checkpoint import LoadedModel

__all__ = ["decoder_kind", "load_float_checkpoint", "model_features", "model_metadata"]


def decoder_kind(model: nn.Module) -> str:
    """ "ctc", "rnnt" or "attention" for a ``SpeechModel``."""
    if not isinstance(model, SpeechModel):
        raise ValueError(f"model: {type(model).__name__} is not a SpeechModel (speechnas.nn.build)")
    decoder = model.decoder
    for kind, cls in (("ctc", CTCDecoder), ("rnnt", RNNTDecoder), ("attention", AttentionDecoder)):
        if isinstance(decoder, cls):
            return kind
    raise ValueError(f"decoder: {type(decoder).__name__} is not one of ctc, rnnt, attention")


def model_features(model: nn.Module, features: FeatureConfig | None) -> FeatureConfig:
    """The model's input pipeline; ``features``, when given, must be the same."""
    if features is not None and features != model.features:
        raise ValueError(f"features: {features} differs from the model's {model.features}")
    return model.features


def _min_input_length(model: nn.Module, upper: int) -> int:
    """Fewest input frames (samples for a waveform model) that give one output frame."""
    stages = [s for s in model.encoder.stages if hasattr(s, "output_lengths")]
    lengths = torch.arange(upper + 1)
    for stage in stages:
        lengths = stage.output_lengths(lengths)
    hits = (lengths >= 1).nonzero()
    return int(hits[0, 0]) if len(hits) else upper


def model_metadata(
    model: nn.Module, *, tokenizer: Tokenizer | None = None, features: FeatureConfig | None = None
) -> dict[str, str]:
    """The metadata every exported graph of ``model`` carries (``graph`` is added per file)."""
    feats = model_features(model, features)
    decoder = decoder_kind(model)
    factor = model.spec.subsampling_factor
    meta = {
        "speechnas_version": __version__,
        "input": "waveform" if feats.kind == "waveform" else "features",
        "features": json.dumps(feats.to_dict(), sort_keys=True),
        "subsampling_factor": str(factor),
        "frame_shift_ms": f"{factor * feats.hop_ms:g}",  # the learnable frontend hops alike
        "min_input_length": str(_min_input_length(model, 4 * feats.sample_rate)),
        "decoder": decoder,
        "decoding": "rnnt" if decoder == "rnnt" else "ctc",
        "blank_id": str(BLANK),
        "vocab_size": str(model.vocab_size),
    }
    if tokenizer is not None:
        if tokenizer.vocab_size != model.vocab_size:
            raise ValueError(
                f"tokenizer: vocab_size {tokenizer.vocab_size} != the model's {model.vocab_size}"
            )
        meta["vocabulary"] = json.dumps(tokenizer.to_dict())
    meta["arch"] = model.arch.key()
    if decoder == "rnnt":
        lstm = model.decoder.predictor.lstm
        meta["pred_layers"] = str(lstm.num_layers)
        meta["pred_hidden"] = str(lstm.hidden_size)
        meta["max_symbols"] = str(model.decoder.max_symbols)
    return meta


def load_float_checkpoint(checkpoint: str | Path, why: str) -> LoadedModel:
    """A checkpoint folder for an exporter that needs float weights; a ValueError saying
    ``why`` (what to do instead) for one holding low-bit quantized weights."""
    from speechnas.train.checkpoint import load_model

    loaded = load_model(checkpoint)
    if loaded.meta.get("bits"):
        raise ValueError(f"checkpoint: {checkpoint} holds low-bit quantized weights; {why}")
    return loaded
