"""The MAD pre-normaliser: finite in float16 where LayerNorm's squares overflow, the same
function as LayerNorm in float32, and a working architecture choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.nn.blocks.norm import MadLayerNorm, layer_norm_decomposed, use_mad_prenorm
from speechnas.nn.build import build
from speechnas.nn.spec import decode
from speechnas.space.arch import Arch
from tests.conftest import TINY_ARCH, tiny_config


def _norm(dim: int) -> nn.LayerNorm:
    g = torch.Generator().manual_seed(0)
    n = nn.LayerNorm(dim)
    with torch.no_grad():
        n.weight.copy_(1 + 0.1 * torch.randn(dim, generator=g))
        n.bias.copy_(0.1 * torch.randn(dim, generator=g))
    return n


def test_plain_layernorm_overflows_in_float16_and_the_prenormalised_one_does_not() -> None:
    n = _norm(144)
    x = torch.randn(2, 50, 144, generator=torch.Generator().manual_seed(1)) * 600 + 30
    ref = n(x).detach()
    half = x.half()
    centred = half - half.mean(-1, keepdim=True)
    assert torch.isinf(centred * centred).any()  # the squares leave float16's range
    plain = layer_norm_decomposed(half, n).float()
    mad = layer_norm_decomposed(half, n, prenorm=True).float()
    assert (plain - ref).abs().max() > 1.0  # the variance is inf: the output collapses to bias
    assert torch.isfinite(mad).all() and (mad - ref).abs().max() < 0.02
    # with ordinary activations both are fine
    small = torch.randn(2, 50, 144, generator=torch.Generator().manual_seed(2)).half()
    ok = n(small.float()).detach()
    assert (layer_norm_decomposed(small, n).float() - ok).abs().max() < 0.02


def test_mad_layernorm_is_layernorm_in_float32_with_the_same_parameters() -> None:
    n = _norm(32)
    m = MadLayerNorm(32)
    m.load_state_dict(n.state_dict())
    for scale in (0.3, 1.0, 1e3):  # (at 1e-2 LayerNorm's eps itself changes its output)
        x = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(3)) * scale
        assert torch.allclose(m(x), n(x), atol=5e-4)


def test_norm_choice_builds_exports_and_loads_the_same_weights(tmp_path: Path) -> None:
    from speechnas.export.onnx import export_model

    arch = Arch({**TINY_ARCH, "norm": "mad_prenorm"})
    assert decode(arch).norm == "mad_prenorm" and decode(TINY_ARCH).norm == "layernorm"
    torch.manual_seed(0)
    mad = build(arch, vocab_size=12).eval()
    plain = build(TINY_ARCH, vocab_size=12).eval()
    norms = [m for m in mad.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(type(m) is MadLayerNorm for m in norms)
    assert not any(type(m) is MadLayerNorm for m in plain.modules())
    plain.load_state_dict(mad.state_dict())  # same keys and shapes
    x = torch.randn(1, 120, 80)
    lengths = torch.tensor([120])
    assert torch.allclose(mad.encode(x, lengths)[0], plain.encode(x, lengths)[0], atol=1e-4)
    result = export_model(mad, tmp_path / "onnx")
    assert result.max_parity < 1e-3
    with pytest.raises(ValueError, match="norm: 'rms' is not one of"):
        decode({**TINY_ARCH, "norm": "rms"})
    assert use_mad_prenorm(nn.Sequential(nn.LayerNorm(4)))[0].__class__ is MadLayerNorm


def test_a_mad_prenorm_model_trains_and_reloads(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    from speechnas.train.checkpoint import load_model
    from speechnas.train.trainer import Trainer

    cfg = tiny_config(tiny_corpus, tmp_path / "run", max_steps=3).replace(
        arch=Arch({**TINY_ARCH, "norm": "mad_prenorm"}).to_json()
    )
    result = Trainer.from_config(cfg, show_progress=False).fit()
    assert result.steps == 3 and result.history[-1]["loss"] == result.history[-1]["loss"]
    loaded = load_model(tmp_path / "run" / "best")
    assert any(type(m) is MadLayerNorm for m in loaded.model.modules())
