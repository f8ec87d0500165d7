"""Batches by total audio duration, with length bucketing and an exactly resumable state."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class DurationBatchSampler:
    """Yields lists of indices whose durations add up to at most ``max_seconds``.

    Each epoch: shuffle (seeded by ``seed`` and the epoch), cut the order into buckets of
    ``bucket_size`` utterances, sort each bucket by duration so a batch holds similar lengths
    (little padding), pack batches greedily, then shuffle the batch order. The order depends on
    ``(seed, epoch)`` only, so :meth:`state_dict` needs just the epoch and the batches already
    yielded to resume at the next batch.
    """

    def __init__(
        self,
        durations: Sequence[float],
        *,
        max_seconds: float,
        seed: int = 0,
        shuffle: bool = True,
        bucket_size: int = 512,
        max_batch_size: int | None = None,
    ) -> None:
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.durations = np.asarray(durations, dtype=np.float64)
        self.max_seconds = max_seconds
        self.seed = seed
        self.shuffle = shuffle
        self.bucket_size = bucket_size
        self.max_batch_size = max_batch_size
        self.epoch = 0
        self.consumed = 0  # batches of this epoch already yielded

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = (
            rng.permutation(len(self.durations)) if self.shuffle else np.arange(len(self.durations))
        )
        batches: list[list[int]] = []
        for start in range(0, len(order), self.bucket_size):
            bucket = order[start : start + self.bucket_size]
            bucket = bucket[np.argsort(self.durations[bucket], kind="stable")]
            batch: list[int] = []
            longest = 0.0
            for i in bucket.tolist():
                d = float(self.durations[i])
                full = self.max_batch_size is not None and len(batch) >= self.max_batch_size
                # padded cost: every utterance in a batch costs as much as its longest one
                if batch and (max(longest, d) * (len(batch) + 1) > self.max_seconds or full):
                    batches.append(batch)
                    batch, longest = [], 0.0
                batch.append(i)
                longest = max(longest, d)
            if batch:
                batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def __len__(self) -> int:
        return len(self._batches(self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)
        while self.consumed < len(batches):
            batch = batches[self.consumed]
            self.consumed += 1
            yield batch
        self.epoch, self.consumed = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"sampler state is for seed {state['seed']}, this one has {self.seed}")
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
