"""int8 quantisation of exported graphs with ONNX Runtime: dynamic, and static QDQ.

:func:`quantize_int8` (dynamic) is described first; :func:`quantize_qdq` (static) at the end.

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

Static QDQ (:func:`quantize_qdq`): activations get fixed int8 scales from calibration runs, and
the graph holds QuantizeLinear/DequantizeLinear pairs around every quantised op, which ONNX
Runtime fuses into QLinearMatMul/QLinearConv (u8 activations × s8 weights, the VNNI kernels).
Convolutions are quantised too here (QLinearConv was ~1.8x faster than the float Conv of the
subsampling, where dynamic ConvInteger was slower), weights per channel, no ``reduce_range``
(the target's CPU must have VNNI, see ``speechnas.hardware.cpu``). Measured on the ``base``
preset at 5 s, one thread (AVX-512 VNNI, no AMX): static QDQ 0.70-0.76x the float graph's
latency, dynamic 0.66x; the QDQ graph pays for the Quantize/DequantizeLinear nodes between
the ops that stay float. It is kept as a target because it is the format other int8 runtimes
and accelerators take, and it is the one that quantises the convolutions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

__all__ = [
    "OP_TYPES",
    "QDQ_OP_TYPES",
    "QuantizeResult",
    "quantize_int8",
    "quantize_qdq",
    "random_calibration",
]

OP_TYPES: tuple[str, ...] = ("MatMul", "LSTM")
#: The op types static QDQ quantises: every Linear (MatMul) and the convolutions.
QDQ_OP_TYPES: tuple[str, ...] = ("MatMul", "Conv")


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
    return _finish(src, dst, "int8-dynamic")


def _finish(src: Path, dst: Path, kind: str) -> QuantizeResult:
    """Copies ``src``'s metadata_props onto ``dst`` with ``quantization=kind``."""
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    meta["quantization"] = kind
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(dst))
    return QuantizeResult(path=dst, fp32_bytes=src.stat().st_size, int8_bytes=dst.stat().st_size)


Feeds = Mapping[str, np.ndarray]


def random_calibration(
    path: str | Path, lengths: Iterable[int] = (100, 300, 500), seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Feeds for a graph with inputs (signal (1, T[, F]), lengths (1,)): standard-normal
    signals of ``lengths`` steps. Good enough for latency (int8 kernels do not depend on
    the values); for accuracy calibrate on real features instead."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in inits]
    if len(inputs) != 2:
        raise ValueError(
            f"calibration: {path} has inputs {[v.name for v in inputs]}; random calibration "
            "knows only (signal, lengths) graphs, pass calibration feeds"
        )
    signal, length = inputs
    dims = signal.type.tensor_type.shape.dim
    width = [d.dim_value for d in dims[2:]]
    rng = np.random.default_rng(seed)
    return [
        {
            signal.name: rng.standard_normal((1, n, *width)).astype(np.float32),
            length.name: np.array([n], np.int64),
        }
        for n in lengths
    ]


def quantize_qdq(
    src: str | Path,
    dst: str | Path,
    calibration: Iterable[Feeds] | None = None,
    *,
    op_types: Iterable[str] = QDQ_OP_TYPES,
    per_channel: bool = True,
) -> QuantizeResult:
    """Writes ``src`` statically int8-quantised in QDQ form at ``dst`` (metadata as
    ``src``'s plus ``quantization=int8-static``); returns the two file sizes.

    ``calibration``: feeds (input name → array) whose activation ranges (min/max) set the
    activation scales; real features of the deployment domain give the accurate model,
    :func:`random_calibration` (the default) one that is only good for timing.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ValueError(f"src: {src} is not a file")
    feeds = list(calibration) if calibration is not None else random_calibration(src)
    if not feeds:
        raise ValueError("calibration: expected at least one feed, got none")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[Feeds] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            nxt = next(self._it, None)
            return None if nxt is None else dict(nxt)

    dst.parent.mkdir(parents=True, exist_ok=True)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(dst),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(op_types),
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )
    finally:
        logging.getLogger().setLevel(quiet)
    return _finish(src, dst, "int8-static")
