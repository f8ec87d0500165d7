"""Utterances → feature/token tensors, with seeded, resumable augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from speechnas.data.audio import read_audio
from speechnas.data.features import (
    FeatureConfig,
    FeatureExtractor,
    SpecAugmentConfig,
    spec_augment,
    speed_perturb,
)
from speechnas.data.synth.effects import EffectConfig, apply_effects, sample_effects
from speechnas.data.tokenizer import Tokenizer
from speechnas.data.utterance import Utterance

_BABBLE_TALKERS = 4


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Training-time augmentation; ``None`` fields switch a part off."""

    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    spec_augment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)
    #: channel effects drawn per example after speed perturbation (noise at an SNR, with babble
    #: made of other training utterances; reverberation; the telephone channel), the same
    #: effects the built-in corpus renders; off by default
    channel: EffectConfig | None = None


@dataclass(slots=True)
class Batch:
    """A padded batch. feats (B, T, D), feat_lens (B,), tokens (B, U), token_lens (B,)."""

    feats: torch.Tensor
    feat_lens: torch.Tensor
    tokens: torch.Tensor
    token_lens: torch.Tensor
    texts: list[str]
    ids: list[str]
    seconds: float  # audio in the batch, after speed perturbation


class SpeechDataset:
    """Random-access dataset over utterances.

    Augmentation draws from a generator seeded by ``(seed, epoch, index)``, so what an example
    looks like does not depend on which examples were drawn before it, and a resumed run sees
    exactly the examples an uninterrupted one would.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        tokenizer: Tokenizer,
        features: FeatureConfig,
        *,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        cache_audio: bool = True,
    ) -> None:
        self.utterances = list(utterances)
        self.tokenizer = tokenizer
        self.features = features
        self.extractor = FeatureExtractor(features)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._cache: dict[int, np.ndarray] | None = {} if cache_audio else None

    def __len__(self) -> int:
        return len(self.utterances)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def durations(self) -> list[float]:
        return [u.duration or 0.0 for u in self.utterances]

    def audio(self, index: int) -> np.ndarray:
        """Float32 samples, always passed through 16-bit PCM: lossless for 16-bit sources, and
        a cold cache returns exactly what a warm one does, so a resumed run sees the same input.
        """
        pcm = self._cache.get(index) if self._cache is not None else None
        if pcm is None:
            u = self.utterances[index]
            x = read_audio(
                u.audio_path,
                sample_rate=self.features.sample_rate,
                offset=u.offset,
                duration=u.duration,
            )
            pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
            if self._cache is not None:
                self._cache[index] = pcm
        return pcm.astype(np.float32) / 32768.0

    def example(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (T, D) and token ids (U,) of one utterance."""
        x = self.audio(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        aug = self.augment
        if aug is not None and aug.speed_factors:
            factor = float(aug.speed_factors[int(rng.integers(len(aug.speed_factors)))])
            x = speed_perturb(x, self.features.sample_rate, factor)
        if aug is not None and aug.channel is not None:
            x = self._channel(x, aug.channel, rng)
        feats, _ = self.extractor(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        feats = feats[0]
        if aug is not None and aug.spec_augment is not None and self.features.kind != "waveform":
            spec_augment(feats, aug.spec_augment, rng)
        tokens = torch.tensor(self.tokenizer.encode(self.utterances[index].text), dtype=torch.long)
        return feats, tokens

    def _channel(self, x: np.ndarray, cfg: EffectConfig, rng: np.random.Generator) -> np.ndarray:
        choice = sample_effects(rng, cfg)
        sources = None
        if choice["noise"] == "babble":  # other utterances of this set as the talkers
            sources = [self.audio(int(j)) for j in rng.integers(len(self), size=_BABBLE_TALKERS)]
        return apply_effects(x, self.features.sample_rate, choice, rng, sources)

    def batch(self, indices: Sequence[int]) -> Batch:
        examples = [self.example(i) for i in indices]
        feat_lens = torch.tensor([f.shape[0] for f, _ in examples], dtype=torch.long)
        token_lens = torch.tensor([t.shape[0] for _, t in examples], dtype=torch.long)
        feats = torch.nn.utils.rnn.pad_sequence([f for f, _ in examples], batch_first=True)
        tokens = torch.nn.utils.rnn.pad_sequence([t for _, t in examples], batch_first=True)
        return Batch(
            feats=feats,
            feat_lens=feat_lens,
            tokens=tokens,
            token_lens=token_lens,
            texts=[self.utterances[i].text for i in indices],
            ids=[self.utterances[i].id for i in indices],
            seconds=float(feat_lens.sum()) / self.features.frame_rate,
        )
