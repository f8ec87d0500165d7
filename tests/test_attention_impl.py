"""Attention implementations (``attention_impl``, ``qkv``): one set of parameters, the same
outputs under every implementation (full forward, chunk by chunk, exported), clear errors, and
latency blocks that keep the default's keys."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from speechnas.hardware.block_modules import block_module
from speechnas.hardware.blocks import decompose
from speechnas.nn.blocks import ConformerLayerConfig, MultiHeadSelfAttention
from speechnas.nn.blocks.attention import attention_mask
from speechnas.nn.blocks.attention_impl import ATTENTION_IMPLS, QKV_LAYOUTS, additive_mask
from speechnas.nn.build import SpeechModel, build
from speechnas.nn.presets import preset
from speechnas.nn.spec import decode
from speechnas.nn.streaming import stream_encode
from speechnas.space import Arch

VARIANTS = [
    (impl, qkv)
    for impl, qkv in itertools.product(ATTENTION_IMPLS, QKV_LAYOUTS)
    if (impl, qkv) != ("sdpa", "packed")
]
BASE = {"d_model": 32, "layers": 2, "frontend": "fbank40", "ffn_dim": 48, "conv_kernel": 5}
ARCHS: dict[str, dict[str, object]] = {
    "conformer-abs": {"encoder": "conformer", "heads": 4, "attention": "abs"},
    "conformer-rel": {"encoder": "conformer", "heads": 4, "attention": "rel"},
    "conformer-local": {"encoder": "conformer", "heads": 2, "attention": "local",
                        "attention_window": 3},
    "transformer-abs": {"encoder": "transformer", "heads": 4, "attention": "abs"},
    "ebranchformer-rel": {"encoder": "ebranchformer", "heads": 2, "attention": "rel"},
    "conformer-heads": {"encoder": "conformer", "heads": 4, "attention": "rel",
                        "layer_heads": [2, 8]},  # heads narrower and wider than d_model / heads
}  # fmt: skip
STREAM = {"streaming": True, "chunk_size": 4, "left_chunks": 2}


def _arch(name: str, **change: object) -> Arch:
    return Arch({**BASE, **ARCHS[name], **change})


def _pair(arch: Arch, impl: str, qkv: str) -> tuple[SpeechModel, SpeechModel]:
    """The default model with random weights, and the same weights under ``impl``/``qkv``."""
    torch.manual_seed(0)
    ref = build(arch, vocab_size=9).eval()
    other = build(Arch({**arch, "attention_impl": impl, "qkv": qkv}), vocab_size=9).eval()
    other.load_state_dict(ref.state_dict(), strict=True)  # same keys, same shapes
    return ref, other


def _feats(lengths: list[int], dim: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(len(lengths), max(lengths), dim, generator=gen)
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x, torch.tensor(lengths)


@pytest.mark.parametrize(("impl", "qkv"), VARIANTS)
@pytest.mark.parametrize("name", list(ARCHS))
def test_every_implementation_gives_the_default_output(name: str, impl: str, qkv: str) -> None:
    ref, other = _pair(_arch(name), impl, qkv)
    x, n = _feats([131, 77])  # unequal rows: padding in the mask
    with torch.no_grad():
        want, want_lens = ref.encode(x, n)
        got, got_lens = other.encode(x, n)
    assert torch.equal(got_lens, want_lens)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(("impl", "qkv"), VARIANTS)
@pytest.mark.parametrize("name", ["conformer-rel", "conformer-local", "transformer-abs",
                                  "ebranchformer-rel"])  # fmt: skip
def test_chunk_by_chunk_every_implementation_gives_the_default(
    name: str, impl: str, qkv: str
) -> None:
    ref, other = _pair(_arch(name, **STREAM), impl, qkv)
    x, n = _feats([150, 97])
    with torch.no_grad():
        full, lens = ref.encode(x, n)
    want = stream_encode(ref, x, n).enc
    got = stream_encode(other, x, n).enc
    for b, t in enumerate(lens.tolist()):
        torch.testing.assert_close(got[b, :t], want[b, :t], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(got[b, :t], full[b, :t], atol=2e-5, rtol=1e-4)


def test_the_default_keeps_a_boolean_mask_and_the_others_build_one_additive_mask() -> None:
    default = build(_arch("conformer-abs"), vocab_size=9)
    einsum = build(_arch("conformer-abs", attention_impl="einsum"), vocab_size=9)
    assert default.encoder.stages[-1].additive is False
    assert einsum.encoder.stages[-1].additive is True
    mask = attention_mask(torch.tensor([3, 1]), 3)
    bias = additive_mask(mask)
    assert bias.dtype == torch.float32
    assert torch.equal(bias == 0, mask) and bool(torch.isinf(bias[~mask]).all())


@pytest.mark.parametrize("impl", ATTENTION_IMPLS)
def test_sdpa_and_every_other_implementation_take_either_mask(impl: str) -> None:
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(16, 2, pos="rel", impl=impl).eval()
    x = torch.randn(2, 7, 16)
    mask = attention_mask(torch.tensor([7, 4]), 7)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, additive_mask(mask)), attn(x, mask))


@pytest.mark.parametrize(("impl", "qkv"), [(i, "packed") for i in ATTENTION_IMPLS[1:]]
                         + [("sdpa", "split")])  # fmt: skip
def test_each_implementation_exports_to_onnx_with_parity(
    impl: str, qkv: str, tmp_path: Path
) -> None:
    from speechnas.export.onnx import export_model

    _, model = _pair(_arch("conformer-rel"), impl, qkv)
    result = export_model(model, tmp_path, example_seconds=1.5)
    assert result.max_parity < 1e-4, result.parity


def test_the_small_preset_exports_under_einsum_with_parity(tmp_path: Path) -> None:
    from speechnas.export.onnx import export_model

    _, model = _pair(preset("small"), "einsum", "split")
    assert export_model(model, tmp_path, example_seconds=1.5).max_parity < 1e-4


def test_a_wrong_implementation_is_named() -> None:
    with pytest.raises(ValueError, match=r"attention_impl: 'flash' is not one of \['sdpa'"):
        decode(_arch("conformer-abs", attention_impl="flash"))
    with pytest.raises(ValueError, match=r"qkv: 'fused' is not one of \['packed', 'split'\]"):
        decode(_arch("conformer-abs", qkv="fused"))
    with pytest.raises(ValueError, match="attention_impl: only an attention encoder"):
        decode({"encoder": "lstm", "d_model": 32, "layers": 1, "lstm_hidden": 16,
                "attention_impl": "einsum"})  # fmt: skip
    with pytest.raises(ValueError, match=r"ConformerLayerConfig.attention_impl: 'x'"):
        ConformerLayerConfig(attention_impl="x")
    with pytest.raises(ValueError, match=r"MultiHeadSelfAttention.qkv: 'x'"):
        MultiHeadSelfAttention(16, 2, qkv="x")


def test_the_default_is_what_an_architecture_without_the_fields_means() -> None:
    small = decode(preset("small"))
    assert (small.attention_impl, small.qkv) == ("sdpa", "packed")
    explicit = Arch({**preset("small"), "attention_impl": "sdpa", "qkv": "packed"})
    torch.manual_seed(0)
    a = build(preset("small"), vocab_size=9).eval()
    b = build(explicit, vocab_size=9).eval()
    b.load_state_dict(a.state_dict())
    x, n = _feats([90], dim=80)
    with torch.no_grad():
        assert torch.equal(a.encode(x, n)[0], b.encode(x, n)[0])


def test_latency_blocks_keep_the_default_keys_and_name_other_implementations() -> None:
    keys = {u.block.key for u in decompose(preset("small"), vocab_size=9)}
    assert not any("impl=" in k or "qkv=" in k or "additive" in k for k in keys)
    arch = Arch({**preset("small"), "attention_impl": "split_heads", "qkv": "split"})
    other = {u.block.key for u in decompose(arch, vocab_size=9)}
    mhsa = [k for k in other if k.startswith("mhsa(")]
    assert mhsa == ["mhsa(d=96,heads=4,pos=abs,window=None,impl=split_heads,qkv=split)"]
    assert any(k.startswith("stack(") and "additive=True" in k for k in other)
    for use in decompose(arch, vocab_size=9):
        if use.block.kind in ("mhsa", "stack"):
            module, inputs = block_module(use.block)
            feeds = inputs(12, torch.Generator().manual_seed(0))
            with torch.no_grad():
                out = module(*feeds.values())
            first = out[0] if isinstance(out, tuple) else out
            assert first.shape == (1, 12, 96) and bool(torch.isfinite(first).all())


@pytest.mark.parametrize(("length", "dim"), [(1, 2), (125, 96), (499, 144)])
def test_positions_interleaved_by_stack_equal_the_strided_writes(length: int, dim: int) -> None:
    import math

    from speechnas.nn.blocks.masks import sinusoidal_positions

    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    want = torch.zeros(length, dim)
    want[:, 0::2] = torch.sin(pos * div)
    want[:, 1::2] = torch.cos(pos * div)
    assert torch.equal(sinusoidal_positions(length, dim), want)


def test_with_attention_impl_keeps_weights_and_outputs() -> None:
    from speechnas.nn.build import with_attention_impl

    torch.manual_seed(0)
    ref = build(preset("small", d_model=48, layers=2, heads=2, ffn_dim=96), vocab_size=12).eval()
    other = with_attention_impl(ref, "matmul")
    assert other.arch["attention_impl"] == "matmul" and "attention_impl" not in ref.arch
    x, lengths = torch.randn(2, 120, 80), torch.tensor([120, 77])
    with torch.no_grad():
        a, la = ref.encode(x, lengths)
        b, lb = other.encode(x, lengths)
    assert torch.equal(la, lb)
    valid = torch.arange(a.shape[1])[None, :] < la[:, None]
    assert (a - b)[valid].abs().max() < 1e-4
    with pytest.raises(ValueError, match="attention_impl"):
        with_attention_impl(
            build(Arch(encoder="lstm", d_model=32, layers=2, lstm_hidden=16), vocab_size=12),
            "matmul",
        )
