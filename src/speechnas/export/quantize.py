"""Dynamic int8 quantisation of exported graphs with ONNX Runtime.

Weights become int8 ahead of time and activations are quantised per batch at run time, so no
calibration data is needed. The choices:

* op types ``MatMul`` and ``LSTM``: every ``nn.Linear`` exports as a MatMul (the pre-processing
  pass turns the 2-D Gemms of the transducer joiner into MatMuls too), and these hold nearly all
  parameters of the attention, feed-forward, pointwise-convolution and LSTM layers. Only
  MatMuls with a constant weight are quantised (ONNX Runtime's dynamic default, set explicitly),
  so attention scores (Q·Kᵀ, softmax·V) stay float. ``Conv`` is left out: the subsampling and
  depthwise kernels are a small share of the weights, and ONNX Runtime's ConvInteger made the
  baseline about 2.4 times slower than with float convolutions on one CPU thread.
* per-channel scales (one per output column): trained weight matrices differ in range from one
  output unit to the next, and one scale per matrix spends the 8 bits on the widest columns.
  It costs about 3 % more bytes than per-tensor scales.
* ``reduce_range`` (7-bit weights): on x86 CPUs without VNNI the u8×s8 kernels add pairs of
  products in 16 bits, which can saturate with full 8-bit weights (ONNX Runtime's advice).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

__all__ = ["OP_TYPES", "QuantizeResult", "quantize_int8"]

OP_TYPES: tuple[str, ...] = ("MatMul", "LSTM")


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    """The int8 file and the sizes in bytes of the float and the int8 file."""

    path: Path
    fp32_bytes: int
    int8_bytes: int

    @property
    def ratio(self) -> float:
        """int8 size / float size."""
        return self.int8_bytes / self.fp32_bytes


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    *,
    per_channel: bool = True,
    reduce_range: bool = True,
) -> QuantizeResult:
    """Writes the dynamically int8-quantised ``src`` at ``dst`` with ``src``'s metadata_props
    (plus ``quantization=int8-dynamic``); returns the two file sizes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ValueError(f"src: {src} is not a file")
    dst.parent.mkdir(parents=True, exist_ok=True)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser logs advice at WARNING
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            # Shape inference and graph clean-up first, as ONNX Runtime recommends: the
            # quantiser then sees which MatMul inputs are constant weights.
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_dynamic(
                pre,
                dst,
                op_types_to_quantize=list(OP_TYPES),
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )
    finally:
        logging.getLogger().setLevel(quiet)
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    meta["quantization"] = "int8-dynamic"
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(dst))
    return QuantizeResult(path=dst, fp32_bytes=src.stat().st_size, int8_bytes=dst.stat().st_size)
