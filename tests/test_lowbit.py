"""Mixed-precision ONNX export: the file runs in ONNX Runtime and equals the fake-quant model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from speechnas.export.lowbit import export_lowbit
from speechnas.export.onnx import _session
from speechnas.hardware.cpu import missing_features
from speechnas.nn.build import build
from speechnas.nn.presets import preset
from speechnas.nn.quant import apply_bits, quantizable, weight_bytes

ARCH = preset("small", d_model=48, layers=2, heads=2, ffn_dim=96, conv_kernel=7)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build(ARCH, vocab_size=12).eval()


def _mixed(model: torch.nn.Module) -> dict[str, int]:
    widths = (8, 4, 32, 6, 3, 2)
    return {n: widths[i % len(widths)] for i, n in enumerate(quantizable(model))}


def test_exact_export_equals_fake_quant_model(model: torch.nn.Module, tmp_path: Path) -> None:
    alloc = _mixed(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = export_lowbit(model, alloc, tmp_path / "m.onnx", kernels="exact")
    assert r.parity is not None and r.parity < 1e-4
    # The caller's model is untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    ops = {n.op_type for n in onnx.load(str(r.path)).graph.node}
    assert {"MatMulNBits", "DequantizeLinear"} <= ops
    # Independent check: ORT against a fake-quant copy built here.
    torch.manual_seed(0)
    ref = apply_bits(build(ARCH, vocab_size=12).eval(), alloc)
    x = torch.randn(1, 160, 80)
    lengths = torch.tensor([160])
    with torch.no_grad():
        enc, _ = ref.encode(x, lengths)
        want = ref.decoder(enc).numpy()
    got = _session(r.path).run(None, {"features": x.numpy(), "lengths": lengths.numpy()})[0]
    assert np.abs(got - want).max() < 1e-4
    # Storage: 4-bit Linear weights in 4 bits, 6 in 8, low-bit convolutions in 8.
    forms = r.forms
    lin4 = [f for n, f in forms.items() if f.bits == 4 and f.op == "MatMulNBits"]
    assert lin4 and all(f.stored_bits == 4 for f in lin4)
    assert all(f.stored_bits == 8 for f in forms.values() if f.bits == 6)
    assert all(f.stored_bits == 32 for f in forms.values() if f.bits == 32)
    assert r.weight_bytes == weight_bytes(ref, alloc)
    assert r.file_bytes == r.path.stat().st_size < r.fp32_file_bytes
    assert r.metadata["quantization"] == "lowbit-exact"


def test_fast_export_runs_int8_kernels_close_to_fake_quant(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    alloc = {n: (8 if i % 2 else 4) for i, n in enumerate(quantizable(model))}
    # Without VNNI, ONNX Runtime's int8 kernels saturate on full 8-bit weights: 7 bits there.
    seven = bool(missing_features("int8-static"))
    r = export_lowbit(model, alloc, tmp_path / "f.onnx", kernels="fast", reduce_range=seven)
    graph = onnx.load(str(r.path)).graph
    assert {"MatMulNBits", "DynamicQuantizeMatMul"} <= {n.op_type for n in graph.node}
    assert r.parity is not None and r.parity < 0.2  # activation rounding only
    assert ("int8_weights" in r.metadata) == seven


def test_reduce_range_halves_8_bit_codes_only(model: torch.nn.Module, tmp_path: Path) -> None:
    alloc = {n: (8 if i % 2 else 4) for i, n in enumerate(quantizable(model))}
    r = export_lowbit(model, alloc, tmp_path / "r.onnx", kernels="int8", reduce_range=True)
    graph = onnx.load(str(r.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weights = [inits[n.input[1]] for n in graph.node if n.op_type == "DynamicQuantizeMatMul"]
    assert weights and all(np.abs(w).max() <= 63 for w in weights)
    assert any(np.abs(w).max() > 31 for w in weights)  # the 8-bit layers, in 7 bits
    assert r.parity is not None and r.parity < 0.2
    assert r.metadata["int8_weights"].startswith("7-bit")
    # The exact form computes in float: the switch does not apply.
    exact = export_lowbit(model, alloc, tmp_path / "e.onnx", kernels="exact", reduce_range=True)
    assert exact.parity is not None and exact.parity < 1e-4 and "int8_weights" not in exact.metadata


def test_transcriber_metadata_kept(model: torch.nn.Module, tmp_path: Path) -> None:
    r = export_lowbit(model, {}, tmp_path / "plain.onnx", check=False)
    meta = {p.key: p.value for p in onnx.load(str(r.path)).metadata_props}
    for key in ("features", "subsampling_factor", "decoding", "arch", "bit_allocation"):
        assert key in meta
    assert all(f.bits == 32 for f in r.forms.values())


def test_bad_arguments(model: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kernels"):
        export_lowbit(model, {}, tmp_path / "x.onnx", kernels="turbo")
    with pytest.raises(ValueError, match="not quantizable"):
        export_lowbit(model, {"nope": 4}, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="bit allocation"):
        export_lowbit(model, {next(iter(quantizable(model))): 5}, tmp_path / "x.onnx")


def test_int8_export_runs_every_linear_on_int8_kernels(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    alloc = _mixed(model)
    r = export_lowbit(model, alloc, tmp_path / "i.onnx", kernels="int8", attention_impl="matmul")
    graph = onnx.load(str(r.path)).graph
    ops = [n.op_type for n in graph.node]
    # Every quantized Linear, 2-bit ones too, on the int8 kernel; no float dequantization left
    # in front of a Conv (it would cost a weight repack per run); the matmul attention graph
    # has no per-layer NaN guard.
    linears = [
        n
        for n, b in alloc.items()
        if b != 32 and isinstance(quantizable(model)[n], torch.nn.Linear)
    ]
    assert ops.count("DynamicQuantizeMatMul") >= len(linears) > 0
    assert "MatMulNBits" not in ops and "DequantizeLinear" not in ops and "IsNaN" not in ops
    assert {f.op for n, f in r.forms.items() if n in linears} == {"DynamicQuantizeMatMul"}
    assert all(f.compute == "float32" for f in r.forms.values() if f.op == "Conv")
    # The int8 codes of a 2-bit weight are the 2-bit code values.
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    two = [n for n, b in alloc.items() if b == 2 and n in linears]
    assert two
    codes = [v for k, v in inits.items() if k.endswith("_q8") and v.dtype == np.int8]
    assert any(set(np.unique(v)) <= {-2, -1, 0, 1} for v in codes)
    assert r.parity is not None and r.parity < 0.2  # activation rounding only
    assert r.metadata["quantization"] == "lowbit-int8"
    # The bias Adds and the macaron ½ are inside the int8 nodes: no Add of a bias vector and
    # no Mul by a constant scalar reads one.
    dq = {n.output[0] for n in graph.node if n.op_type == "DynamicQuantizeMatMul"}
    consts = {i.name: i.dims for i in graph.initializer}
    made = [n for n in graph.node if n.op_type == "Constant"]
    consts.update({n.output[0]: n.attribute[0].t.dims for n in made})
    for n in graph.node:
        if n.op_type in ("Add", "Mul") and any(i in dq for i in n.input):
            other = [i for i in n.input if i not in dq]
            dims = [tuple(consts[i]) for i in other if i in consts]
            assert not dims or (n.op_type == "Add" and len(dims[0]) > 1), (n.name, dims)
    assert sum(len(n.input) == 5 for n in graph.node if n.op_type == "DynamicQuantizeMatMul")
