"""Decoding a whole dataset with a trained model, and scoring it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from speechnas.data.dataset import Batch, SpeechDataset
from speechnas.data.sampler import DurationBatchSampler
from speechnas.evaluate.metrics import ErrorRates, error_rates
from speechnas.nn.build import SpeechModel


@dataclass(frozen=True, slots=True)
class Evaluation:
    rates: ErrorRates
    hypotheses: tuple[str, ...]
    audio_seconds: float
    compute_seconds: float
    references: tuple[str, ...] = ()  # in the order of ``hypotheses``

    @property
    def rtf(self) -> float:
        return self.compute_seconds / max(self.audio_seconds, 1e-9)


def prepare_batches(
    dataset: SpeechDataset, *, max_batch_seconds: float = 300.0
) -> list[tuple[list[int], Batch]]:
    """The dataset's evaluation batches with their features computed, to decode many models
    (supernet paths) without extracting the features again each time."""
    sampler = DurationBatchSampler(
        dataset.durations(), max_seconds=max_batch_seconds, shuffle=False
    )
    return [(indices, dataset.batch(indices)) for indices in sampler]


@torch.no_grad()
def evaluate_dataset(
    model: SpeechModel,
    dataset: SpeechDataset,
    *,
    max_batch_seconds: float = 300.0,
    batches: Sequence[tuple[list[int], Batch]] | None = None,
) -> Evaluation:
    """Decodes every utterance (greedy); WER/CER against the dataset's texts. ``batches`` are
    :func:`prepare_batches` of the same dataset, made once for many models."""
    was_training = model.training
    model.eval()
    if batches is None:
        sampler = DurationBatchSampler(
            dataset.durations(), max_seconds=max_batch_seconds, shuffle=False
        )
        batches = ((indices, dataset.batch(indices)) for indices in sampler)
    hyps: list[str] = [""] * len(dataset)
    audio = compute = 0.0
    for indices, batch in batches:
        start = time.perf_counter()
        decoded = model.decode(batch.feats, batch.feat_lens)
        compute += time.perf_counter() - start
        audio += batch.seconds
        for i, ids in zip(indices, decoded, strict=True):
            hyps[i] = dataset.tokenizer.decode(ids)
    model.train(was_training)
    refs = [u.text for u in dataset.utterances]
    return Evaluation(
        rates=error_rates(refs, hyps),
        hypotheses=tuple(hyps),
        audio_seconds=audio,
        compute_seconds=compute,
        references=tuple(refs),
    )
