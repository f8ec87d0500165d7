"""Where the corpora are and how their text becomes tokens: the data sections of a config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DataConfig", "TokenizerConfig", "TrainSource"]


@dataclass(frozen=True, slots=True)
class TrainSource:
    """One corpus of a training mix and its sampling weight (relative to the others')."""

    manifest: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.manifest:
            raise ValueError("data.train: every entry needs a manifest")
        if not self.weight > 0:
            raise ValueError(
                f"data.train: weight of {self.manifest} must be > 0, got {self.weight}"
            )


@dataclass(frozen=True, slots=True)
class DataConfig:
    """Where the corpora are: a JSONL manifest, a Kaldi data dir or a Lhotse CutSet per entry.

    ``train`` is one corpus, or a mix: a list of ``{manifest, weight}``, each corpus drawn in
    proportion to its weight (see :func:`speechnas.data.loading.mix_sources`).
    """

    train: tuple[TrainSource, ...] | str = ""
    dev: str = ""
    test: dict[str, str] = field(default_factory=dict)
    skip_invalid: bool = False
    fraction: float = 1.0  # fidelity: share of the training utterances used (a seeded subset)

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"data.fraction: {self.fraction} is not in (0, 1]")
        if isinstance(self.train, tuple) and not self.train:
            raise ValueError("data.train: an empty mix; name at least one manifest")

    def train_sources(self) -> tuple[TrainSource, ...]:
        """The training corpora with their weights (one of weight 1 for a plain path)."""
        if isinstance(self.train, str):
            return (TrainSource(self.train),) if self.train else ()
        return self.train

    def with_corpus(self, manifests: Mapping[str, str | Path]) -> DataConfig:
        """This config reading a built corpus: its ``train`` and ``dev`` splits, and every
        ``test*`` split as a test set (the manifests of ``CorpusInfo.manifests``)."""
        return dataclasses.replace(
            self,
            train=str(manifests["train"]),
            dev=str(manifests["dev"]),
            test={k: str(v) for k, v in manifests.items() if k.startswith("test")},
        )


@dataclass(frozen=True, slots=True)
class TokenizerConfig:
    kind: str = "char"
    vocab_size: int = 128

    def __post_init__(self) -> None:
        if self.kind not in ("char", "bpe"):
            raise ValueError(f"tokenizer.kind: {self.kind!r} is not one of 'char', 'bpe'")
