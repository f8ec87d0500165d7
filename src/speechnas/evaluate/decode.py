"""Decoding a whole dataset with a trained model, and scoring it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from speechnas.data.dataset import SpeechDataset
from speechnas.data.sampler import DurationBatchSampler
from speechnas.evaluate.metrics import ErrorRates, error_rates
from speechnas.nn.model import SpeechRecognizer


@dataclass(frozen=True, slots=True)
class Evaluation:
    rates: ErrorRates
    hypotheses: tuple[str, ...]
    audio_seconds: float
    compute_seconds: float

    @property
    def rtf(self) -> float:
        return self.compute_seconds / max(self.audio_seconds, 1e-9)


@torch.no_grad()
def evaluate_dataset(
    model: SpeechRecognizer, dataset: SpeechDataset, *, max_batch_seconds: float = 300.0
) -> Evaluation:
    """Decodes every utterance (greedy); WER/CER against the dataset's texts."""
    was_training = model.training
    model.eval()
    sampler = DurationBatchSampler(
        dataset.durations(), max_seconds=max_batch_seconds, shuffle=False
    )
    hyps: list[str] = [""] * len(dataset)
    audio = compute = 0.0
    for indices in sampler:
        batch = dataset.batch(indices)
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
    )
