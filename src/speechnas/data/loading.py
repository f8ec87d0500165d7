"""Corpora in, ready datasets out: what a training run reads, loaded and tokenised once."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from speechnas.data.config import DataConfig, TokenizerConfig, TrainSource
from speechnas.data.dataset import AugmentConfig, SpeechDataset
from speechnas.data.features import FeatureConfig
from speechnas.data.manifest import load_corpus
from speechnas.data.synth.text import normalize_text
from speechnas.data.tokenizer import Tokenizer, build_tokenizer
from speechnas.data.utterance import Utterance

__all__ = ["TrainingData", "load_training_data", "load_utterances", "mix_sources", "subset"]


def load_utterances(
    path: str, *, skip_invalid: bool, skipped: dict[str, list[str]] | None = None
) -> list[Utterance]:
    """Loads a corpus and normalises its texts the way the tokenizer and the scorer see them.

    Entries dropped under ``skip_invalid`` are recorded in ``skipped[path]``.
    """
    report = load_corpus(path, skip_invalid=skip_invalid)
    if skipped is not None and report.skipped:
        skipped[path] = [str(p) for p in report.skipped]
    return [dataclasses.replace(u, text=normalize_text(u.text)) for u in report.utterances]


def subset(utts: list[Utterance], fraction: float, seed: int) -> list[Utterance]:
    """A seeded share ``fraction`` of ``utts``, in their original order (at least one)."""
    if fraction >= 1.0:
        return utts
    n = max(1, round(len(utts) * fraction))
    keep = np.sort(np.random.default_rng([seed, 7]).permutation(len(utts))[:n])
    return [utts[i] for i in keep]


def mix_sources(
    sources: Sequence[TrainSource], load: Callable[[str], list[Utterance]], seed: int
) -> list[Utterance]:
    """The training utterances of a mix: corpus ``i`` contributes ``round(N * w_i / sum(w))``
    utterances, ``N`` the total of all corpora (a seeded subset when that is fewer than it has,
    all of them repeated plus a seeded subset when more), so a step draws from each corpus in
    proportion to its weight. The draw is fixed for the run; augmentation varies repeats. One
    corpus is returned as it is. Written here because the mix must follow the seed and the
    duration-bucketed sampler, which no data-loading library's weighted sampler does."""
    corpora = [load(s.manifest) for s in sources]
    if len(corpora) == 1:
        return corpora[0]
    total = sum(len(c) for c in corpora)
    weights = sum(s.weight for s in sources)
    out: list[Utterance] = []
    for i, (source, utts) in enumerate(zip(sources, corpora, strict=True)):
        n = max(1, round(total * source.weight / weights))
        rng = np.random.default_rng([seed, 11, i])
        whole, rest = divmod(n, len(utts))
        extra = np.sort(rng.permutation(len(utts))[:rest])
        idx = np.concatenate([np.tile(np.arange(len(utts)), whole), extra])
        out += [utts[j] for j in idx]
    return out


@dataclass
class TrainingData:
    """The datasets of one training run and the tokenizer built from its training texts."""

    tokenizer: Tokenizer
    features: FeatureConfig
    train: SpeechDataset
    dev: SpeechDataset
    tests: dict[str, SpeechDataset]
    skipped: dict[str, list[str]] = field(default_factory=dict)  # manifest → problems


def load_training_data(
    data: DataConfig,
    *,
    tokenizer: TokenizerConfig,
    features: FeatureConfig,
    augment: AugmentConfig,
    seed: int,
) -> TrainingData:
    """Loads the train (a seeded ``data.fraction`` of it), dev and test corpora and builds the
    tokenizer on the training texts; only the training set is augmented."""
    if not data.train or not data.dev:
        raise ValueError("data.train and data.dev must name a manifest or a Kaldi data dir")
    skipped: dict[str, list[str]] = {}
    load = functools.partial(load_utterances, skip_invalid=data.skip_invalid, skipped=skipped)
    train = subset(mix_sources(data.train_sources(), load, seed), data.fraction, seed)
    dev = load(data.dev)
    tok = build_tokenizer(tokenizer.kind, [u.text for u in train], vocab_size=tokenizer.vocab_size)
    return TrainingData(
        tokenizer=tok,
        features=features,
        train=SpeechDataset(train, tok, features, augment=augment, seed=seed),
        dev=SpeechDataset(dev, tok, features, seed=seed),
        tests={
            name: SpeechDataset(load(p), tok, features, seed=seed) for name, p in data.test.items()
        },
        skipped=skipped,
    )
