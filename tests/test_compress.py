"""Fake quantization, KL sensitivity, bit allocation and quantization-aware training."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from speechnas.compress.allocate import (
    allocate,
    module_bytes,
    pareto_allocations,
    uniform_allocation,
)
from speechnas.compress.qat import qat
from speechnas.compress.sensitivity import Sensitivity, kl_sensitivity
from speechnas.data.dataset import Batch, SpeechDataset
from speechnas.data.loading import load_utterances
from speechnas.data.synth.corpus import CorpusInfo
from speechnas.nn.build import build
from speechnas.nn.presets import preset
from speechnas.nn.quant import (
    allocation_of,
    apply_bits,
    bake,
    quantizable,
    quantize_weight,
    weight_bytes,
)
from speechnas.space import Arch
from speechnas.train.checkpoint import load_model
from speechnas.train.trainer import Trainer
from tests.conftest import TINY_ARCH, tiny_config


def test_32_bits_is_the_identity_and_n_bits_give_at_most_2n_minus_1_levels() -> None:
    w = torch.randn(6, 10)
    assert quantize_weight(w, 32) is w
    for bits in (2, 3, 4, 8):
        q = quantize_weight(w, bits)
        levels = 2 ** (bits - 1) - 1
        scale = w.abs().amax(1, keepdim=True) / levels
        k = q / scale
        assert torch.allclose(k, k.round(), atol=1e-4)  # on the grid of each channel
        assert k.abs().max() <= levels + 1e-4 and (q - w).abs().max() <= scale.max() / 2 + 1e-6
        assert torch.equal(quantize_weight(q, bits), q) or torch.allclose(
            quantize_weight(q, bits), q, atol=1e-7
        )  # quantizing twice is exact
    with pytest.raises(ValueError, match="not one of"):
        quantize_weight(w, 5)


def test_the_straight_through_estimator_passes_gradients_unchanged() -> None:
    w = torch.randn(4, 8, requires_grad=True)
    g = torch.randn(4, 8)
    (quantize_weight(w, 2) * g).sum().backward()
    assert w.grad is not None and torch.equal(w.grad, g)


def test_apply_bake_and_bytes_on_a_real_model() -> None:
    model = build(TINY_ARCH, vocab_size=12).eval()
    names = list(quantizable(model))
    fp32 = weight_bytes(model)
    assert fp32 == 4 * sum(p.numel() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers()
    )
    alloc = {names[0]: 8, names[1]: 4, names[2]: 32}
    apply_bits(model, alloc)
    assert allocation_of(model) == {names[0]: 8, names[1]: 4}
    w1 = quantizable(model)[names[1]]
    expected = fp32 - 4 * w1.weight.numel() + module_bytes(w1.weight.numel(), w1.weight.shape[0], 4)
    w0 = quantizable(model)[names[0]]
    expected += module_bytes(w0.weight.numel(), w0.weight.shape[0], 8) - 4 * w0.weight.numel()
    assert weight_bytes(model, alloc) == expected
    x = torch.randn(1, 60, 80)
    out = model.encode(x, torch.tensor([60]))[0]
    assert bake(model)[names[1]] == 4 and not allocation_of(model)
    assert torch.allclose(model.encode(x, torch.tensor([60]))[0], out)
    with pytest.raises(ValueError, match="not quantizable"):
        apply_bits(model, {"encoder.nothing": 4})


def _sens(kl: dict[str, dict[int, float]], numel: dict[str, int]) -> Sensitivity:
    return Sensitivity(kl=kl, numel=numel, channels=dict.fromkeys(numel, 2), frames=1)


def test_dynamic_programming_equals_brute_force_on_a_small_case() -> None:
    g = torch.Generator().manual_seed(0)
    names = ["a", "b", "c", "d"]
    numel = {"a": 100, "b": 40, "c": 300, "d": 64}
    widths = (2, 4, 8)
    kl = {n: {b: float(torch.rand(1, generator=g)) * 2.0 ** (-b) for b in widths} for n in names}
    s = _sens(kl, numel)
    front = pareto_allocations(s, fixed_bytes=10)
    sizes = [a.bytes for a in front]
    assert sizes == sorted(sizes) and all(
        x.sensitivity > y.sensitivity for x, y in itertools.pairwise(front)
    )
    for budget in range(0, 900, 7):
        best = None
        for combo in itertools.product(widths, repeat=len(names)):
            size = 10 + sum(module_bytes(numel[n], 2, b) for n, b in zip(names, combo, strict=True))
            sens = sum(kl[n][b] for n, b in zip(names, combo, strict=True))
            if size <= budget and (best is None or sens < best[0] - 1e-12):
                best = (sens, size)
        if best is None:
            with pytest.raises(ValueError, match="smallest achievable model, 168 bytes"):
                allocate(s, budget, fixed_bytes=10)
            continue
        got = allocate(s, budget, fixed_bytes=10)
        assert got.sensitivity == pytest.approx(best[0]) and got.bytes <= budget
    uni = uniform_allocation(s, 4, fixed_bytes=10)
    assert uni.bytes == 10 + sum(module_bytes(numel[n], 2, 4) for n in names)
    assert allocate(s, uni.bytes, fixed_bytes=10).sensitivity <= uni.sensitivity
    assert uni.average_bits(numel) == 4


def _trained(tiny_corpus: CorpusInfo, out: Path) -> Path:
    Trainer.from_config(tiny_config(tiny_corpus, out, max_steps=12), show_progress=False).fit()
    return out / "best"


def test_sensitivity_qat_and_quantized_checkpoints(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    ckpt = _trained(tiny_corpus, tmp_path / "fp32")
    loaded = load_model(ckpt)
    ds = SpeechDataset(
        load_utterances(tiny_corpus.manifests["dev"], skip_invalid=False),
        loaded.tokenizer,
        loaded.features,
    )
    batches = [ds.batch(list(range(6))), ds.batch(list(range(6, 12)))]
    s = kl_sensitivity(loaded.model, batches, bits=(2, 8))
    assert s.modules == list(quantizable(loaded.model)) and s.frames > 0
    # fewer bits never hurt less, for every sub-module whose weights matter at all
    assert all(row[2] >= row[8] >= 0 for row in s.kl.values())
    assert sum(row[2] for row in s.kl.values()) > 10 * sum(row[8] for row in s.kl.values())
    assert not allocation_of(loaded.model)  # left float
    alloc = allocate(s, uniform_allocation(s, 8).bytes, bits=(2, 8))
    result = qat(ckpt, alloc.bits, tmp_path / "qat", steps=4, threads=1, show_progress=False)
    assert result.steps == 4
    q = load_model(tmp_path / "qat" / "best")
    assert allocation_of(q.model) == {k: v for k, v in alloc.bits.items() if v != 32}
    meta = json.loads((tmp_path / "qat" / "best" / "meta.json").read_text())
    assert meta["bits"] == allocation_of(q.model)
    # the stored weights are on their grid: every 2-bit weight has at most 3 values per row
    two = [n for n, b in alloc.bits.items() if b == 2]
    for name in two:
        w = (
            quantizable(q.model)[name]
            .weight.detach()
            .reshape(quantizable(q.model)[name].weight.shape[0], -1)
        )
        assert all(len(torch.unique(row)) <= 3 for row in w)
    # resuming a finished QAT run changes nothing
    again = qat(ckpt, alloc.bits, tmp_path / "qat", steps=4, threads=1, show_progress=False)
    assert again.steps == 4


def test_compress_quantize_command(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from speechnas.cli import app

    ckpt = _trained(tiny_corpus, tmp_path / "fp32")
    runner = CliRunner()
    common = ["compress", "quantize", "--checkpoint", str(ckpt), "--steps", "2",
              "--utterances", "6"]  # fmt: skip
    out = runner.invoke(app, [*common, "--output-dir", str(tmp_path / "q"), "--average-bits", "3"])
    assert out.exit_code == 0, out.output
    rec = json.loads((tmp_path / "q" / "allocation.json").read_text())
    assert rec["bytes"] < rec["fp32_bytes"] / 5 and 2.0 <= rec["average_bits"] <= 3.0
    assert (tmp_path / "q" / "allocation.png").is_file() and "ratio" in out.output
    assert allocation_of(load_model(rec["checkpoint"]).model) == rec["bits"]
    # the quantized checkpoint exports with low-bit storage; the torch-free transcriber
    # reproduces the PyTorch model's test WER
    exp = runner.invoke(app, ["export", "--checkpoint", rec["checkpoint"], "--output",
                              str(tmp_path / "onnx")])  # fmt: skip
    assert exp.exit_code == 0, exp.output
    from speechnas.export.transcribe import Transcriber, read_metadata, score_manifest

    onnx_file = tmp_path / "onnx" / "model.onnx"
    assert read_metadata(onnx_file)["quantization"] == "lowbit-exact"
    scored = score_manifest(Transcriber(onnx_file), tiny_corpus.manifests["test"])
    assert scored["wer"] == pytest.approx(rec["test"]["test"]["wer"])
    # a budget below the smallest model says what the smallest is, before any training
    small = runner.invoke(app, [*common, "--output-dir", str(tmp_path / "s"), "--budget-kib", "1"])
    assert small.exit_code == 2 and "smallest achievable model" in small.output
    assert not (tmp_path / "s" / "best").exists()


@pytest.mark.parametrize(
    "arch",
    [
        preset("small", d_model=48, layers=3, heads=2, ffn_dim=96, conv_kernel=7),
        Arch(encoder="lstm", d_model=48, layers=2, lstm_hidden=32, frontend="fbank80"),
    ],
    ids=["conformer", "lstm"],
)
def test_sensitivity_replaying_earlier_layers_equals_full_passes(arch: Arch) -> None:
    """The float pass's outputs of the parts before a sub-module, replayed, give the KL that
    full forward passes give, for every sub-module (subsampling, layers, output layer)."""
    from speechnas.compress.sensitivity import _kl, frame_posteriors

    torch.manual_seed(0)
    model = build(arch, vocab_size=12).eval()
    g = torch.Generator().manual_seed(1)
    batches = [
        Batch(
            torch.randn(2, 90, 80, generator=g),
            torch.tensor([90, 61]),
            torch.zeros(2, 1),
            torch.ones(2),
            ["", ""],
            ["a", "b"],
            1.0,
        )
        for _ in range(2)
    ]
    s = kl_sensitivity(model, batches, bits=(2,))
    with torch.no_grad():
        refs = [frame_posteriors(model, b) for b in batches]
        for name in quantizable(model):
            apply_bits(model, {name: 2})
            total = sum(_kl(r, frame_posteriors(model, b)[0], m)[0]
                        for b, (r, m) in zip(batches, refs, strict=True))  # fmt: skip
            apply_bits(model, {name: 32})
            assert s.kl[name][2] == pytest.approx(max(total / s.frames, 0), rel=1e-5, abs=1e-9)
    assert all(not m.__dict__.get("forward") for m in model.modules())  # nothing left replaced
