"""Training data: corpora mixed with sampling weights, channel augmentation."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from speechnas.data.config import TrainSource
from speechnas.data.loading import mix_sources
from speechnas.data.synth.corpus import CorpusInfo
from speechnas.data.utterance import Utterance
from speechnas.train.config import config_from_dict
from speechnas.train.trainer import Trainer


def _corpus(name: str, n: int) -> list[Utterance]:
    return [Utterance(f"{name}-{i}", Path(f"/{name}/{i}.wav"), "one", 1.0) for i in range(n)]


def test_each_corpus_contributes_by_its_weight() -> None:
    corpora = {"a": _corpus("a", 10), "b": _corpus("b", 30)}

    def mixed(wa: float, wb: float, seed: int = 0) -> list[Utterance]:
        sources = [TrainSource("a", wa), TrainSource("b", wb)]
        return mix_sources(sources, corpora.__getitem__, seed)

    even = mixed(1, 1)
    counts = Counter(u.id.split("-")[0] for u in even)
    assert counts == {"a": 20, "b": 20}  # 40 in all, half each: a repeated, b subsampled
    assert Counter(u.id for u in even if u.id.startswith("a")) == {f"a-{i}": 2 for i in range(10)}
    assert even == mixed(1, 1) and even != mixed(1, 1, seed=1)  # fixed by the seed
    assert Counter(u.id.split("-")[0] for u in mixed(3, 1)) == {"a": 30, "b": 10}
    assert mix_sources([TrainSource("b")], corpora.__getitem__, 0) == corpora["b"]


def test_a_training_config_mixes_corpora(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    base = tiny_config(tiny_corpus, tmp_path / "run", max_steps=1).to_dict()
    m = tiny_corpus.manifests
    base["data"]["train"] = [
        {"manifest": str(m["train"]), "weight": 1},
        {"manifest": str(m["test-unseen-engine"]), "weight": 1},
    ]
    cfg = config_from_dict(base)
    trainer = Trainer.from_config(cfg, show_progress=False)
    speakers = Counter(
        "festival" if (u.speaker or "").startswith("festival:") else "other"
        for u in trainer.train_set.utterances
    )
    assert speakers == {"other": 28, "festival": 28}  # (48 + 8) utterances, half each
    trainer.fit()
    with pytest.raises(ValueError, match=r"data.train: weight of .* must be > 0"):
        config_from_dict(
            {**base, "data": {**base["data"], "train": [{"manifest": "x", "weight": 0}]}}
        )
    assert dataclasses.asdict(cfg.data)["train"][0]["weight"] == 1.0


def test_channel_augmentation_is_seeded_and_off_by_default(tiny_corpus: CorpusInfo) -> None:
    from speechnas.data.dataset import AugmentConfig, SpeechDataset
    from speechnas.data.features import FeatureConfig
    from speechnas.data.manifest import load_manifest
    from speechnas.data.synth.effects import EffectConfig
    from speechnas.data.tokenizer import build_tokenizer

    utts = list(load_manifest(tiny_corpus.manifests["dev"]).utterances)
    tok = build_tokenizer("char", [u.text for u in utts])
    plain = AugmentConfig(speed_factors=(), spec_augment=None)
    noisy = dataclasses.replace(
        plain,
        channel=EffectConfig(
            noise_prob=1.0, snr_db=(0.0, 0.0), noise_kinds=("babble",), telephone_prob=1.0
        ),
    )
    feats = FeatureConfig()
    clean = SpeechDataset(utts, tok, feats, augment=plain, seed=1).example(0)[0]
    a = SpeechDataset(utts, tok, feats, augment=noisy, seed=1)
    b = SpeechDataset(utts, tok, feats, augment=noisy, seed=1)
    x = a.example(0)[0]
    assert torch.equal(x, b.example(0)[0])  # the same (seed, epoch, index): the same example
    assert not torch.allclose(x, clean)  # 0 dB babble through a telephone channel
    a.set_epoch(1)
    assert not torch.equal(x, a.example(0)[0])  # another epoch, another draw
    assert AugmentConfig().channel is None
