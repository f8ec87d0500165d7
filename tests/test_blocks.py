"""One table over every encoder block: build, forward/backward, lengths, padding-invariance,
no look-ahead when streaming; plus masks, subsampling lengths, relative positions, front end."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from speechnas.nn.blocks import (
    ENCODERS,
    Conv2dSubsampling,
    EncoderChain,
    FeedForward,
    LearnableFrontend,
    MultiHeadSelfAttention,
    attention_mask,
    chunk_mask,
    make_encoder,
    subsampled_lengths,
)
from speechnas.nn.blocks.attention import rel_shift, relative_positions
from speechnas.nn.blocks.conformer import ConformerLayerConfig
from speechnas.nn.blocks.rnn import reverse_within

D = 16  # d_model
FEAT = 16  # feature dim
FEAT_LENS = [70, 55, 31]
WAVE = {"sample_rate": 8000, "hop": 40, "win": 100}
WAVE_LENS = [1660, 1300, 900]
CHUNK, LEFT = 4, 1


def _conformer(**kw: object) -> dict[str, object]:
    return {"heads": 2, "ffn_dim": 24, "kernel": 5, "dropout": 0.1, **kw}


def _transformer(**kw: object) -> dict[str, object]:
    return {"heads": 2, "ffn_dim": 24, "dropout": 0.1, **kw}


def _ebranch(**kw: object) -> dict[str, object]:
    return {"heads": 2, "ffn_dim": 24, "cgmlp_dim": 24, "kernel": 5, "dropout": 0.1, **kw}


def _cnn(**kw: object) -> dict[str, object]:
    return {"kernel": 5, "se_reduction": 4, "dropout": 0.1, **kw}


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    encoder: dict[str, object]  # kwargs of make_encoder(kind, ...)
    factor: int = 4
    depthwise: bool = False
    waveform: bool = False
    streaming: bool = False

    def build(self) -> EncoderChain:
        stages: list[nn.Module] = []
        if self.waveform:
            stages.append(LearnableFrontend(FEAT, **WAVE))
        stages.append(
            Conv2dSubsampling(FEAT, D, factor=self.factor, channels=4, depthwise=self.depthwise)
        )
        stages.append(make_encoder(self.kind, **self.encoder))
        return EncoderChain(*stages)

    def inputs(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        lens = WAVE_LENS if self.waveform else FEAT_LENS
        shape = (3, max(lens), 1) if self.waveform else (3, max(lens), FEAT)
        return torch.randn(shape, generator=gen), torch.tensor(lens)

    def expected_lengths(self) -> list[int]:
        if self.waveform:
            frames = torch.tensor([1 + (n - WAVE["win"]) // WAVE["hop"] for n in WAVE_LENS])
        else:
            frames = torch.tensor(FEAT_LENS)
        return subsampled_lengths(frames, self.factor).tolist()


def _stack(*layers: object, **kw: object) -> dict[str, object]:
    return {"d_model": D, "layer_cfgs": list(layers), **kw}


STREAM = {"chunk": CHUNK, "left_chunks": LEFT}
CASES = [
    Case("conformer-abs", "conformer", _stack(_conformer(attention="abs"))),
    Case("conformer-rel-dw6", "conformer", _stack(_conformer(), _conformer()), 6, True),
    Case("conformer-local", "conformer", _stack(_conformer(attention="local", window=2))),
    Case(
        "conformer-stream",
        "conformer",
        _stack(_conformer(), _conformer(), **STREAM),
        streaming=True,
    ),
    Case(
        "conformer-nomacaron-convfirst-lowrank-dw8",
        "conformer",
        _stack(_conformer(macaron=False, module_order="conv_first", ffn_lowrank=4)),
        8,
        True,
    ),
    Case(
        "conformer-heterogeneous-stream",
        "conformer",
        _stack(
            _conformer(attention="abs", kernel=3, ffn_dim=16),
            ConformerLayerConfig(
                heads=4,
                ffn_dim=32,
                ffn_lowrank=4,
                kernel=7,
                macaron=False,
                module_order="conv_first",
                attention="local",
                window=3,
            ),
            chunk=CHUNK,
            left_chunks=None,
        ),
        streaming=True,
    ),
    Case("transformer-abs", "transformer", _stack(_transformer(), _transformer())),
    Case(
        "transformer-rel-lowrank-dw4",
        "transformer",
        _stack(_transformer(attention="rel", ffn_lowrank=4)),
        depthwise=True,
    ),
    Case(
        "transformer-local-stream",
        "transformer",
        _stack(*[_transformer(attention="local", window=3)] * 2, **STREAM),
        streaming=True,
    ),
    Case("ebranchformer-rel", "ebranchformer", _stack(_ebranch())),
    Case("ebranchformer-abs-conv6", "ebranchformer", _stack(_ebranch(attention="abs")), 6),
    Case(
        "ebranchformer-local-lowrank-stream",
        "ebranchformer",
        _stack(*[_ebranch(attention="local", window=2, ffn_lowrank=4)] * 2, **STREAM),
        streaming=True,
    ),
    Case("lstm", "lstm", {"in_dim": D, "hidden": 12, "layers": 2}, streaming=True),
    Case("blstm-proj-conv8", "blstm", {"in_dim": D, "hidden": 8, "layers": 1, "d_model": D}, 8),
    Case("cnn-se", "cnn", _stack(_cnn(se=True), _cnn(kernel=3))),
    Case("cnn-dilated", "cnn", _stack(_cnn(dilation=2), _cnn(dilation=2))),
    Case(
        "cnn-causal-se",
        "cnn",
        _stack(*[_cnn(se=True, dilation=2)] * 2, causal=True),
        streaming=True,
    ),
    Case("frontend-conformer-rel", "conformer", _stack(_conformer()), waveform=True),
    Case("frontend-cnn-se-dw8", "cnn", _stack(_cnn(se=True)), 8, True, waveform=True),
]
IDS = [c.name for c in CASES]


def test_table_covers_every_registered_encoder() -> None:
    assert {c.kind for c in CASES} == set(ENCODERS)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_backward_shapes_and_grads(case: Case) -> None:
    torch.manual_seed(0)
    model = case.build().train()
    x, lens = case.inputs(torch.Generator().manual_seed(1))
    y, out = model(x, lens)
    expected = case.expected_lengths()
    assert out.tolist() == expected
    assert y.shape == (3, max(expected), model.out_dim)
    assert model.out_dim == 16  # every encoder keeps the subsampling's width (an LSTM: its stream)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    (y * weights).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_padding_invariance(case: Case) -> None:
    torch.manual_seed(0)
    model = case.build().eval()
    x, lens = case.inputs(torch.Generator().manual_seed(1))
    with torch.no_grad():
        y, out = model(x, lens)
        for i in range(3):
            assert (y[i, out[i] :] == 0).all(), "padded output frames are not zeroed"
            alone, n = model(x[i : i + 1, : lens[i]], lens[i : i + 1])
            assert n.tolist() == [out[i].item()] and alone.shape[1] == n[0]
            torch.testing.assert_close(y[i, : out[i]], alone[0], atol=1e-5, rtol=1e-5)


def test_reverse_within_reverses_each_row_in_its_length_and_undoes_itself() -> None:
    x = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    lens = torch.tensor([3, 5])
    r = reverse_within(x, lens)
    assert r[..., 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]  # padding stays last
    assert torch.equal(reverse_within(r, lens), x)
    assert torch.equal(reverse_within(x, None), x.flip(1))


def _perturbed_after(x: torch.Tensor, frame: int) -> torch.Tensor:
    x2 = x.clone()
    x2[:, frame:] = torch.randn(x2[:, frame:].shape, generator=torch.Generator().manual_seed(9))
    return x2


@pytest.mark.parametrize("case", [c for c in CASES if c.streaming], ids=lambda c: c.name)
def test_streaming_encoder_does_not_look_ahead(case: Case) -> None:
    """Changing frames from a chunk boundary on leaves every earlier output unchanged."""
    torch.manual_seed(0)
    encoder = case.build().stages[-1].eval()
    x = torch.randn(2, 20, D, generator=torch.Generator().manual_seed(3))
    lens = torch.tensor([20, 17])
    boundary = 2 * CHUNK
    with torch.no_grad():
        y, _ = encoder(x, lens)
        y2, _ = encoder(_perturbed_after(x, boundary), lens)
    torch.testing.assert_close(y[:, :boundary], y2[:, :boundary], atol=1e-6, rtol=0)
    assert not torch.allclose(y[:, boundary:], y2[:, boundary:])


def test_full_context_encoder_does_look_ahead() -> None:
    """The look-ahead check has power: without `chunk` the same stack sees future frames."""
    torch.manual_seed(0)
    encoder = make_encoder("conformer", d_model=D, layer_cfgs=[_conformer()]).eval()
    x = torch.randn(1, 20, D, generator=torch.Generator().manual_seed(3))
    lens = torch.tensor([20])
    with torch.no_grad():
        y, _ = encoder(x, lens)
        y2, _ = encoder(_perturbed_after(x, 2 * CHUNK), lens)
    assert not torch.allclose(y[:, : 2 * CHUNK], y2[:, : 2 * CHUNK])


def test_chunk_mask_sees_own_chunk_and_left_chunks_only() -> None:
    m = chunk_mask(6, 2, 1).int().tolist()
    assert m == [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1],
    ]
    assert torch.equal(chunk_mask(5, 2, None), torch.tensor([[j // 2 <= i // 2 for j in range(5)]
                                                            for i in range(5)]))  # fmt: skip
    # Combined with key padding (length 3 of 6): padded keys dropped, the diagonal always kept.
    both = attention_mask(torch.tensor([3]), 6, chunk=2, left_chunks=1)[0]
    expect = chunk_mask(6, 2, 1) & (torch.arange(6) < 3)[None, :] | torch.eye(6, dtype=torch.bool)
    assert torch.equal(both, expect)


def test_zero_length_utterance_stays_finite() -> None:
    torch.manual_seed(0)
    encoder = make_encoder(
        "conformer", d_model=D, layer_cfgs=[_conformer(attention="local", window=1)], **STREAM
    ).eval()
    y, _ = encoder(torch.randn(2, 9, D), torch.tensor([9, 0]))
    assert torch.isfinite(y).all() and (y[1] == 0).all()


@pytest.mark.parametrize("factor", [4, 6, 8])
@pytest.mark.parametrize("depthwise", [False, True])
def test_subsampling_length_formula_is_exact(factor: int, depthwise: bool) -> None:
    torch.manual_seed(0)
    sub = Conv2dSubsampling(FEAT, 8, factor=factor, channels=2, depthwise=depthwise).eval()
    shortest = {4: 7, 6: 11, 8: 15}[factor]
    lengths = torch.arange(shortest, 64)
    with torch.no_grad():
        real = [sub(torch.zeros(1, int(n), FEAT), n[None])[0].shape[1] for n in lengths]
    assert sub.output_lengths(lengths).tolist() == real
    assert min(real) == 1 and sub.output_lengths(torch.arange(shortest)).tolist() == [0] * shortest
    with pytest.raises(RuntimeError):
        sub(torch.zeros(1, shortest - 1, FEAT), torch.tensor([shortest - 1]))


def test_subsampling_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"factor: 5 is not one of \[4, 6, 8\]"):
        Conv2dSubsampling(FEAT, 8, factor=5, channels=2, depthwise=False)
    with pytest.raises(ValueError, match="in_dim: 8 is too small"):
        Conv2dSubsampling(8, 8, factor=8, channels=2, depthwise=False)


def test_rel_shift_matches_explicit_gather_and_offsets() -> None:
    for t in (1, 2, 5):
        x = torch.randn(2, 3, t, 2 * t - 1)
        i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
        assert torch.equal(rel_shift(x), x[..., i, t - 1 - i + j])
    t, d = 4, 8
    div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    offsets = torch.arange(t - 1, -t, -1, dtype=torch.float32)[:, None]
    expect = torch.stack([torch.sin(offsets * div), torch.cos(offsets * div)], -1).flatten(1)
    torch.testing.assert_close(relative_positions(t, d), expect)


def test_relative_attention_is_independent_of_padded_length() -> None:
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(D, 2, pos="rel").eval()
    x = torch.randn(1, 7, D)
    lens = torch.tensor([7])
    with torch.no_grad():
        y = attn(x, attention_mask(lens, 7))
        for extra in (1, 6, 13):
            padded = torch.cat([x, 100 * torch.randn(1, extra, D)], dim=1)
            y_pad = attn(padded, attention_mask(lens, 7 + extra))
            torch.testing.assert_close(y_pad[:, :7], y, atol=1e-5, rtol=1e-5)


def test_frontend_frames_and_mel_bandpass_init() -> None:
    fe = LearnableFrontend(16, **WAVE)
    assert fe.output_lengths(torch.tensor([99, 100, 139, 140, 1660])).tolist() == [0, 1, 1, 2, 40]
    t = torch.arange(800) / WAVE["sample_rate"]
    peaks = []
    with torch.no_grad():
        for freq in (200.0, 600.0, 1500.0, 3000.0):
            y, _ = fe(torch.sin(2 * math.pi * freq * t)[None, :, None], torch.tensor([800]))
            peaks.append(int(y[0].mean(0).argmax()))
            assert y[0].std(0).max() < 0.5  # steady tone → steady energies (phase-independent)
    assert peaks == sorted(peaks) and len(set(peaks)) == 4


def test_lowrank_feedforward_factorises_both_maps() -> None:
    full = FeedForward(32, 64)
    low = FeedForward(32, 64, lowrank=4)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    norm = 2 * 32
    assert count(full) == norm + (32 * 64 + 64) + (64 * 32 + 32)
    assert count(low) == norm + (32 * 4 + 4 * 64 + 64) + (64 * 4 + 4 * 32 + 32)


def test_errors_name_the_field_and_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"choose from \['blstm', 'cnn', 'conformer'"):
        make_encoder("mamba")
    with pytest.raises(ValueError, match=r"attention: 'alibi' is not one of \['abs', 'rel'"):
        make_encoder("conformer", d_model=D, layer_cfgs=[_conformer(attention="alibi")])
    with pytest.raises(ValueError, match="window: 4 is only valid with attention='local'"):
        make_encoder("transformer", d_model=D, layer_cfgs=[_transformer(window=4)])
    with pytest.raises(ValueError, match=r"unknown keys \['kernal'\]"):
        make_encoder("cnn", d_model=D, layer_cfgs=[{"kernal": 3}])
    with pytest.raises(ValueError, match="heads: 3 does not divide d_model=16"):
        make_encoder("ebranchformer", d_model=D, layer_cfgs=[_ebranch(heads=3)])
    with pytest.raises(ValueError, match="out_dim=24 does not match"):
        EncoderChain(make_encoder("blstm", in_dim=D, hidden=12, layers=1, d_model=24),
                     make_encoder("cnn", d_model=D, layer_cfgs=[_cnn()]))  # fmt: skip


@pytest.mark.parametrize(
    ("kernel", "causal", "dilation"), [(15, False, 1), (4, False, 1), (5, True, 2)]
)
def test_depthwise_conv_is_the_1d_convolution_and_exports_as_2d(
    kernel: int, causal: bool, dilation: int, tmp_path
) -> None:
    """The depthwise conv computes F.conv1d over the zero-padded input (its own weights), and
    its ONNX graph holds a 2-D Conv (ONNX Runtime's blocked depthwise kernel) with no Pad when
    the padding is symmetric."""
    import onnx
    import onnxruntime as ort
    import torch.nn.functional as F

    from speechnas.export.graph import export_module
    from speechnas.nn.blocks._common import DepthwiseConv1d

    torch.manual_seed(0)
    dw = DepthwiseConv1d(12, kernel, causal=causal, dilation=dilation).eval()
    x = torch.randn(2, 30, 12)
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[1, 20:] = True
    want = F.conv1d(
        F.pad(x.masked_fill(pad[..., None], 0.0).transpose(1, 2), (dw.left, dw.right)),
        dw.conv.weight, dw.conv.bias, dilation=dilation, groups=12,
    ).transpose(1, 2)  # fmt: skip
    with torch.no_grad():
        assert torch.allclose(dw(x, pad), want, atol=1e-6)
    axes = {"x": {1: "t"}, "pad": {1: "t"}}
    path = export_module(
        dw, (x, pad), tmp_path / "dw.onnx", input_names=["x", "pad"], output_names=["y"],
        dynamic_axes=axes,
    )  # fmt: skip
    graph = onnx.load(str(path)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    kernels = [a.ints for n in convs for a in n.attribute if a.name == "kernel_shape"]
    assert kernels == [[1, kernel]]
    assert any(n.op_type == "Pad" for n in graph.node) == (dw.left != dw.right)
    y = ort.InferenceSession(str(path)).run(
        None, {"x": x[:, :25].numpy(), "pad": pad[:, :25].numpy()}
    )[0]
    assert abs(y - want_at(dw, x[:, :25], pad[:, :25])).max() < 1e-5


def want_at(dw, x, pad):  # the module itself at another length than the traced one
    with torch.no_grad():
        return dw(x, pad).numpy()
