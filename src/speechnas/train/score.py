"""A saved model scored on test sets: the one place that loads a checkpoint and decodes manifests
with the model's own tokenizer and features."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from speechnas.data.dataset import SpeechDataset
from speechnas.data.loading import load_utterances
from speechnas.evaluate.decode import Evaluation, evaluate_dataset
from speechnas.train.checkpoint import load_model


def score_checkpoint(
    checkpoint: str | Path, manifests: Mapping[str, str | Path], *, skip_invalid: bool = False
) -> dict[str, Evaluation]:
    """Name -> greedy-decoding evaluation (rates, hypotheses, RTF) of every manifest."""
    loaded = load_model(checkpoint)
    out = {}
    for name, manifest in manifests.items():
        utts = load_utterances(manifest, skip_invalid=skip_invalid)
        out[name] = evaluate_dataset(
            loaded.model, SpeechDataset(utts, loaded.tokenizer, loaded.features)
        )
    return out


__all__ = ["score_checkpoint"]
