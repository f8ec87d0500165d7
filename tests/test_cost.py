"""Parameters and MACs of architectures: exact on meta, analytic formulas vs FlopCounterMode."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import torch

from speechnas.data.tokenizer import BLANK
from speechnas.nn.build import SpeechModel, feature_config
from speechnas.nn.cost import (
    analytic_macs,
    count_parameters,
    measured_breakdown,
    measured_macs,
    subsampling_share,
)
from speechnas.space import Arch, load_space

VOCAB = 29
SECONDS = 5.0
L = 4  # layers
BASE = {"frontend": "fbank80", "subsampling": "conv2d", "subsampling_factor": 4,
        "d_model": 144, "layers": L, "decoder": "ctc"}  # fmt: skip
ATTN = {"heads": 4, "attention": "rel", "streaming": False, "ffn_dim": (512, 768, 512, 256),
        "ffn_lowrank": (0, 64, 0, 128)}  # fmt: skip
CASES: dict[str, dict[str, Any]] = {
    "conformer-rel-ctc": {**BASE, **ATTN, "encoder": "conformer", "macaron": True,
                          "conv_kernel": (7, 15, 31, 15),
                          "module_order": ("mhsa_first", "conv_first") * 2},
    "conformer-local-streaming-no-macaron": {
        **BASE, **ATTN, "encoder": "conformer", "attention": "local", "attention_window": 16,
        "streaming": True, "chunk_size": 16, "left_chunks": 2, "macaron": False,
        "conv_kernel": (15,) * L, "module_order": ("conv_first",) * L},
    "transformer-abs-dw6-attention": {**BASE, **ATTN, "frontend": "fbank40",
                                      "subsampling": "dwconv2d", "subsampling_factor": 6,
                                      "encoder": "transformer", "attention": "abs",
                                      "decoder": "attention", "ctc_weight": 0.3,
                                      "decoder_layers": 2},
    "ebranchformer-rel-8-rnnt": {**BASE, **ATTN, "frontend": "fbank64", "subsampling_factor": 8,
                                 "encoder": "ebranchformer", "conv_kernel": (31, 15, 15, 7),
                                 "decoder": "rnnt", "pred_dim": 128},
    "lstm-mfcc-ctc": {**BASE, "frontend": "mfcc40", "encoder": "lstm", "lstm_hidden": 320,
                      "streaming": False},
    "blstm-learnable-ctc": {**BASE, "frontend": "learnable", "encoder": "blstm",
                            "lstm_hidden": 256},
    "cnn-se-streaming-ctc": {**BASE, "encoder": "cnn", "streaming": True, "chunk_size": 8,
                             "left_chunks": 2, "conv_kernel": (7, 15, 31, 15), "cnn_se": True,
                             "cnn_dilation": 2},
}  # fmt: skip


@cache
def arch_of(name: str) -> Arch:
    """The case as a validated point of speech-all."""
    return load_space("speech-all").validate(Arch(CASES[name]))


def with_channels(arch: Arch, channels: int) -> Arch:
    """``arch`` with another subsampling width (a field outside every space's choices)."""
    return arch if channels == 32 else Arch({**arch, "subsampling_channels": channels})


@cache
def model_of(name: str, channels: int = 32) -> SpeechModel:
    torch.manual_seed(0)
    return SpeechModel(with_channels(arch_of(name), channels), vocab_size=VOCAB).eval()


def utterance(arch: Arch) -> tuple[torch.Tensor, torch.Tensor]:
    """A 5 s input of batch 1: feature frames, or samples for the learnable front end."""
    cfg = feature_config(arch)
    samples = round(SECONDS * cfg.sample_rate)
    t = samples if cfg.kind == "waveform" else cfg.num_frames(samples)
    return torch.randn(1, t, cfg.dim), torch.tensor([t])


@pytest.mark.parametrize("name", sorted(CASES))
def test_count_parameters_matches_the_built_model(name: str) -> None:
    model = model_of(name)
    assert count_parameters(arch_of(name), vocab_size=VOCAB) == sum(
        p.numel() for p in model.parameters()
    )


def test_count_parameters_follows_the_subsampling_channels() -> None:
    name = "conformer-rel-ctc"
    wide = model_of(name, 64)
    assert count_parameters(with_channels(arch_of(name), 64), vocab_size=VOCAB) == sum(
        p.numel() for p in wide.parameters()
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_analytic_macs_match_flop_counter(name: str) -> None:
    arch = arch_of(name)
    feats, lengths = utterance(arch)
    measured = measured_breakdown(model_of(name), feats, lengths)
    analytic = analytic_macs(arch, seconds=SECONDS, vocab_size=VOCAB)
    ctc = arch["decoder"] == "ctc"
    # Equal stage by stage (the brief asks for 5%; the formulas are exact for these blocks).
    assert measured.frontend == analytic.frontend
    assert measured.subsampling == analytic.subsampling
    assert measured.encoder == analytic.encoder > 0
    assert measured.decoder == (analytic.decoder if ctc else 0)
    total = analytic.total if ctc else analytic.encoder_side
    assert measured_macs(model_of(name), feats, lengths) == pytest.approx(total, rel=0.05)
    if arch["frontend"] == "learnable":
        assert measured.frontend > 0


@pytest.mark.parametrize(
    ("name", "end"),
    [("ebranchformer-rel-8-rnnt", "blank"), ("transformer-abs-dw6-attention", "eos")],
)
def test_greedy_decoder_macs_for_an_empty_output(name: str, end: str) -> None:
    """With the end symbol forced (no tokens), greedy decoding costs what analytic_macs says
    for tokens=0: RNN-T one prediction step + T' joiner calls, attention one step."""
    arch = arch_of(name)
    model = model_of(name)
    decoder = model.decoder
    out = decoder.joiner.out if end == "blank" else decoder.out
    index = BLANK if end == "blank" else decoder.sos_eos
    feats, lengths = utterance(arch)
    saved = out.bias.detach().clone()
    try:
        with torch.no_grad():
            out.bias[index] = 1e4
        assert model.decode(feats, lengths) == [[]]
        measured = measured_breakdown(model, feats, lengths, decode=True)
    finally:
        with torch.no_grad():
            out.bias.copy_(saved)
    assert measured.decoder == analytic_macs(arch, vocab_size=VOCAB, tokens=0).decoder > 0


def test_autoregressive_decoders_grow_with_tokens() -> None:
    for name in ("ebranchformer-rel-8-rnnt", "transformer-abs-dw6-attention"):
        arch = arch_of(name)
        costs = [analytic_macs(arch, vocab_size=VOCAB, tokens=u).decoder for u in (0, 10, 20)]
        default = analytic_macs(arch, seconds=SECONDS, vocab_size=VOCAB).decoder  # 15 tokens
        assert costs[0] < costs[1] < default < costs[2]
    ctc = arch_of("conformer-rel-ctc")
    assert analytic_macs(ctc, vocab_size=VOCAB, tokens=0) == analytic_macs(
        ctc, vocab_size=VOCAB, tokens=50
    )


def test_depthwise_subsampling_share_is_much_smaller() -> None:
    """12-layer, 256-wide Conformer, 5 s: share of the subsampling in the encoder-side MACs."""
    n = 12
    arch = {"frontend": "fbank80", "subsampling_factor": 4, "d_model": 256, "layers": n,
            "encoder": "conformer", "heads": 4, "attention": "rel", "streaming": False,
            "ffn_dim": (1024,) * n, "ffn_lowrank": (0,) * n, "macaron": True,
            "conv_kernel": (15,) * n, "module_order": ("mhsa_first",) * n,
            "decoder": "ctc"}  # fmt: skip
    space = load_space("speech-all")
    vanilla = space.validate(Arch({**arch, "subsampling": "conv2d"}))
    depthwise = space.validate(Arch({**arch, "subsampling": "dwconv2d"}))
    shares = {
        (sub, ch): subsampling_share(with_channels(a, ch), vocab_size=VOCAB)
        for sub, a in (("conv2d", vanilla), ("dwconv2d", depthwise))
        for ch in (32, 256)
    }
    # 256 channels (as in the on-device Conformer paper): 37.3% → 11.3%. What remains with
    # depthwise convs is mostly the linear map of the 256 · 19 features per frame to d_model.
    assert shares["conv2d", 256] == pytest.approx(0.3733, abs=5e-4)
    assert shares["dwconv2d", 256] == pytest.approx(0.1135, abs=5e-4)
    assert shares["dwconv2d", 256] < shares["conv2d", 256] / 3
    # the builder's default 32 channels: 1.64% → 0.95%
    assert shares["conv2d", 32] == pytest.approx(0.0164, abs=5e-4)
    assert shares["dwconv2d", 32] == pytest.approx(0.0095, abs=5e-4)
    assert shares["dwconv2d", 32] < shares["conv2d", 32]


@pytest.mark.parametrize("space_name", ["conformer-ctc", "speech-all", "streaming"])
def test_count_parameters_with_shared_layers_equals_building_every_layer(space_name: str) -> None:
    """The memo of layers built once per configuration changes no count: random architectures
    of each built-in speech space (their layers partly in the memo from earlier ones, some with
    repeated layers) counted shared and built afresh, at two vocabularies."""
    import random

    space = load_space(space_name)
    rng = random.Random(3)
    archs = [space.sample(rng) for _ in range(30)]
    archs += archs[:5]  # counted again: every part now from the memo
    for i, arch in enumerate(archs):
        vocab = VOCAB if i % 2 else 500
        assert count_parameters(arch, vocab_size=vocab) == count_parameters(
            arch, vocab_size=vocab, shared=False
        ), arch


def test_shared_layers_are_handed_out_once_per_configuration_and_counted_per_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch import nn

    from speechnas.nn.blocks import _shared
    from speechnas.nn.blocks._shared import make_layer, parameter_count, shared_layers

    memo: dict[str, nn.Module] = {}
    with shared_layers(memo) as uses:
        a = make_layer(nn.Linear, 4, 3)
        b = make_layer(nn.Linear, 4, 3)
        c = make_layer(nn.Linear, 4, 3, bias=False)
        model = nn.Sequential(a, b, c, nn.LayerNorm(3))
    assert a is b and a is not c and len(memo) == 2 and len(uses) == 3
    assert parameter_count(model, uses) == 15 + 15 + 12 + 6
    assert make_layer(nn.Linear, 4, 3) is not a  # outside: a fresh layer every time
    monkeypatch.setattr(_shared, "LIMIT", 2)  # full: the least recently used part goes
    with shared_layers(memo):
        assert make_layer(nn.Linear, 4, 3) is a  # now the most recent; c the least
        d = make_layer(nn.Linear, 5, 3)
        assert make_layer(nn.Linear, 4, 3) is a and make_layer(nn.Linear, 5, 3) is d
        assert make_layer(nn.Linear, 4, 3, bias=False) is not c and len(memo) == 2
        # an argument whose repr is an address is never a key: built afresh, not remembered
        assert make_layer(nn.Sequential, a) is not make_layer(nn.Sequential, a)
    assert len(memo) == 2
