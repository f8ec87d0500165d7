"""Architectures of the search space become trainable models through one contract."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.nn.build import build, feature_config
from speechnas.space import Arch, load_space
from speechnas.train.checkpoint import load_model
from speechnas.train.trainer import Trainer

BASE = {
    "frontend": "fbank40", "subsampling": "conv2d", "subsampling_factor": 4,
    "d_model": 32, "layers": 2,
}  # fmt: skip
ATTN = {"heads": 2, "attention": "rel", "streaming": False, "ffn_dim": (64, 64),
        "ffn_lowrank": (0, 16)}  # fmt: skip
CASES = {
    "conformer-ctc": {**BASE, **ATTN, "encoder": "conformer", "macaron": True,
                      "conv_kernel": (7, 15), "module_order": ("mhsa_first", "conv_first"),
                      "decoder": "ctc"},
    "transformer-attention-local": {**BASE, **ATTN, "encoder": "transformer",
                                    "attention": "local", "attention_window": 16,
                                    "decoder": "attention", "ctc_weight": 0.3,
                                    "decoder_layers": 1},
    "ebranchformer-rnnt-dw6": {**BASE, **ATTN, "encoder": "ebranchformer",
                               "subsampling": "dwconv2d", "subsampling_factor": 6,
                               "conv_kernel": (7, 7), "decoder": "rnnt", "pred_dim": 128},
    "lstm-streaming-mfcc": {**BASE, "frontend": "mfcc40", "encoder": "lstm",
                            "lstm_hidden": 256, "streaming": False, "decoder": "ctc"},
    "blstm-learnable-8": {**BASE, "frontend": "learnable", "subsampling_factor": 8,
                          "encoder": "blstm", "lstm_hidden": 256, "decoder": "ctc"},
    "cnn-se-streaming": {**BASE, "encoder": "cnn", "streaming": True, "chunk_size": 8,
                         "left_chunks": 2, "conv_kernel": (7, 15), "cnn_se": True,
                         "cnn_dilation": 2, "decoder": "ctc"},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_family_validates_builds_trains_and_decodes(name: str) -> None:
    arch = Arch(CASES[name])
    # the same choices as a point of speech-all (values are shrunk to keep the test fast)
    assert set(load_space("speech-all").active(arch)) == set(arch)
    torch.manual_seed(0)
    model = build(arch, vocab_size=7, dropout=0.0)
    feats = feature_config(arch)
    t = 16000 if feats.kind == "waveform" else 120
    x = torch.randn(2, t, feats.dim)
    lens = torch.tensor([t, t * 3 // 4])
    tokens = torch.tensor([[1, 2, 3], [4, 5, 0]])
    loss = model.loss(x, lens, tokens, torch.tensor([3, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    hyps = model.decode(x, lens)
    assert len(hyps) == 2 and all(0 < i < 7 for h in hyps for i in h)
    alone = model.decode(x[1:, : lens[1]], lens[1:])
    assert alone[0] == hyps[1]


def test_sampled_architectures_build(tiny_corpus: CorpusInfo) -> None:
    space = load_space("speech-all")
    rng = random.Random(1)
    for _ in range(5):
        arch = space.sample(rng)
        model = build(arch, vocab_size=9)
        assert sum(p.numel() for p in model.parameters()) > 0


def test_trainer_runs_an_architecture_and_reloads_it(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    arch = Arch(CASES["transformer-attention-local"])
    cfg = tiny_config(tiny_corpus, tmp_path / "a", max_epochs=1).replace(arch=arch.to_json())
    result = Trainer.from_config(cfg, show_progress=False).fit()
    loaded = load_model(tmp_path / "a" / "best")
    assert loaded.meta["arch"] == arch.to_json() and loaded.features.n_mels == 40
    assert result.steps > 0 and "test" in result.test
