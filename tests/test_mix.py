"""Training corpora mixed with sampling weights."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
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
