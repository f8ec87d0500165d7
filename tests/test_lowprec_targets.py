"""Low-precision targets: static QDQ int8 (ONNX Runtime) and bf16 (PyTorch), CPU features."""

from __future__ import annotations

import onnx
import pytest
import torch

from speechnas.hardware import profile
from speechnas.hardware.backends import OrtBackend, TorchBackend, backend_for_target
from speechnas.hardware.cpu import (
    PRECISION_FEATURES,
    check_precision,
    cpu_features,
    missing_features,
)
from speechnas.hardware.target import load_target, target_from_dict
from speechnas.nn.build import build
from speechnas.nn.presets import preset

ARCH = preset("small", d_model=48, layers=1, heads=2, ffn_dim=96, conv_kernel=7)
CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build(ARCH, vocab_size=12).eval()


def test_targets_load_and_validate() -> None:
    qdq, bf16 = load_target("cpu-ort-qdq-1t"), load_target("cpu-torch-bf16-1t")
    assert (qdq.runtime, qdq.precision) == ("onnxruntime", "int8-static")
    assert (bf16.runtime, bf16.precision) == ("torch", "bf16")
    with pytest.raises(ValueError, match=r"precision: 'bf16' needs runtime 'torch'"):
        target_from_dict({"name": "x", "runtime": "onnxruntime", "precision": "bf16"})
    with pytest.raises(ValueError, match=r"int8-static.*onnxruntime"):
        target_from_dict({"name": "x", "runtime": "torch", "precision": "int8-static"})


def test_cpu_feature_detection_and_errors() -> None:
    assert cpu_features(CPUINFO) == frozenset({"avx2", "avx512f", "avx512_vnni"})
    have = cpu_features(CPUINFO)
    assert missing_features("int8-static", have) == ()
    assert missing_features("bf16", have) == PRECISION_FEATURES["bf16"]
    assert missing_features("fp32", set()) == ()
    with pytest.raises(ValueError, match=r"'bf16' needs one of the CPU features.*avx512_bf16"):
        check_precision("bf16", have)
    with pytest.raises(ValueError, match="precision: 'fp16' is not one of"):
        TorchBackend(1, "fp16")


needs_vnni = pytest.mark.skipif(
    bool(missing_features("int8-static")), reason="CPU lacks VNNI / AMX-INT8"
)
needs_bf16 = pytest.mark.skipif(bool(missing_features("bf16")), reason="CPU lacks bf16 units")


@needs_vnni
def test_profile_static_int8_runs_a_qdq_graph(tmp_path) -> None:
    target = load_target("cpu-ort-qdq-1t")
    backend = backend_for_target(target)
    assert isinstance(backend, OrtBackend) and backend.precision == "int8-static"
    prof = profile(_model(), target, backend=backend, seconds=(1.0,), warmup=1, repeats=2,
                   memory=False, work_dir=tmp_path)  # fmt: skip
    assert prof.lengths[0].median_ms > 0
    assert "avx512_vnni" in prof.cpu["cpu_features"] or "amx_int8" in prof.cpu["cpu_features"]
    ran = backend.prepared(tmp_path / "export" / "model.onnx")
    graph = onnx.load(str(ran))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["quantization"] == "int8-static" and "features" in meta
    # Sizes are those of the int8 file, not the float one.
    assert prof.files["model"] == ran.stat().st_size


@needs_bf16
def test_torch_bf16_backend_close_to_fp32() -> None:
    model = _model()
    feeds = {"x": torch.randn(1, 120, 80).numpy(), "n": torch.tensor([120]).numpy()}

    class _Wrap(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            enc, _ = self.m.encode(x, n)
            return self.m.decoder(enc)

    wrapped = _Wrap(model).eval()
    ref = TorchBackend(1).run(wrapped, feeds)[0]
    backend = TorchBackend(1, "bf16")
    got = backend.run(wrapped, feeds)[0]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert 0 < abs(got - ref).max() < 0.5  # bf16 rounding, not a different model
    assert next(backend.prepared(wrapped).parameters()).dtype == torch.bfloat16
    assert next(wrapped.parameters()).dtype == torch.float32  # the original is untouched
    prof = profile(model, "cpu-torch-bf16-1t", seconds=(1.0,), warmup=1, repeats=2, memory=True)
    assert prof.lengths[0].median_ms > 0 and prof.peak_memory_bytes is not None
    fp32_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert prof.files["model"] < 0.6 * fp32_bytes
