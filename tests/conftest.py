"""Shared fixtures: a tiny real synthetic corpus and a tiny model config."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechnas.data.synth.corpus import CorpusConfig, CorpusInfo, build_corpus
from speechnas.nn.presets import preset
from speechnas.train.config import BudgetConfig, DataConfig, OptimConfig, TrainConfig

TINY_SIZES = {
    "train": 48, "dev": 12, "test": 12, "test-noisy": 8, "test-tel": 8, "test-unseen-engine": 8,
}  # fmt: skip
# The `small` preset's recipe at a size that trains in seconds.
TINY_ARCH = preset(
    "small", d_model=32, layers=1, heads=2, ffn_dim=64, conv_kernel=7, subsampling_channels=8
)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusInfo:
    root = tmp_path_factory.mktemp("corpora")
    return build_corpus(
        CorpusConfig(sizes=TINY_SIZES, babble_pool=6), root, workers=1, show_progress=False
    )


def tiny_config(corpus: CorpusInfo, out: Path, **budget: object) -> TrainConfig:
    m = corpus.manifests
    return TrainConfig(
        seed=3,
        threads=1,
        output_dir=str(out),
        data=DataConfig(train=str(m["train"]), dev=str(m["dev"]), test={"test": str(m["test"])}),
        arch=TINY_ARCH.to_json(),
        optim=OptimConfig(lr=3e-3, warmup_steps=5, max_batch_seconds=30.0),
        budget=BudgetConfig(**{"max_epochs": 2, "patience": None, **budget}),  # type: ignore[arg-type]
    )
