"""Core ML export: the CTC graph as an ML program (``.mlpackage``) with a flexible time axis.

The graph is the one :mod:`speechnas.export.onnx` writes for CTC (and attention/hybrid models,
through their CTC head): features (1, T, F) float32 and their length (1,) int32 in, CTC
log-probabilities (1, T', V) and the output length out; CMVN is inside. T may be anything from
the fewest frames that give one output frame up to ``max_frames``
(``coremltools.RangeDim``). Batch is 1: one utterance at a time, as on a phone or a watch. The
features are not part of the program; the app computes them as the ``features`` metadata says
(``knf80``: kaldi-native-fbank, which builds for iOS; speechnas's own ``fbank``: see
:mod:`speechnas.data.filters`). The package's user-defined metadata are those of the ONNX files
(vocabulary, features, subsampling, blank id, architecture, version).

coremltools converts on Linux but its runtime (``MLModel.predict``) exists only on macOS. What
this module checks here instead (:func:`check_program`): the saved package's inputs, outputs,
flexible shapes and metadata, and the converted MIL program run op by op in numpy with
coremltools' own reference implementation of each op (``value_inference``; the three op types
without one, ``conv``, ``silu`` and ``scatter``, are written here), compared with eager PyTorch.
That checks the conversion (which ops, which constants, which shapes), not Apple's kernels.

Three shims make coremltools 9.0 convert with the NumPy and PyTorch the CPU install pins, and
keep fp16 programs finite; each is registered only for this conversion's process: ``int`` and
``bool`` casts of a one-element constant (NumPy 2.4 no longer converts a (1,) array to a Python
scalar, which coremltools' cast relies on), PyTorch's ``__or__`` on booleans (the padding and
chunk masks), which its TorchScript frontend has no converter for, and ``log_softmax`` in the
shifted form (coremltools' log of a softmax gives -inf in fp16 once a trained model is sure of
its token).

Not expressible: the RNN transducer (three graphs and a greedy loop around them; run it with
``speechnas transcribe``), and streaming state (the full-utterance forward of a streaming model
is exported).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speechnas.data.filters import FeatureConfig
from speechnas.data.tokenizer import Tokenizer
from speechnas.export.metadata import model_features, model_metadata
from speechnas.export.onnx import _CTC, _example

__all__ = [
    "CoreMLExport",
    "check_package",
    "check_program",
    "export_coreml",
    "export_coreml_model",
]

PRECISIONS = ("fp16", "fp32")
INPUTS = ("features", "lengths")
OUTPUTS = ("log_probs", "out_lengths")


@dataclass
class CoreMLExport:
    """What :func:`export_coreml_model` wrote and checked.

    ``checks`` names each check that passed (inputs, outputs, flexible time axis, metadata);
    ``program_parity`` is the largest |MIL program - PyTorch| of the log-probabilities over the
    valid frames of each checked length (empty when not run); ``program`` is the converted MIL
    program (for :func:`check_program`).
    """

    path: Path
    precision: str
    min_frames: int
    max_frames: int
    metadata: dict[str, str]
    checks: list[str] = field(default_factory=list)
    program_parity: dict[int, float] = field(default_factory=dict)
    program: Any = None


def _coremltools() -> Any:
    try:
        import coremltools as ct
    except ImportError as e:
        raise ValueError(
            "Core ML export needs coremltools: pip install 'speechnas[deploy]' "
            f"(or pip install coremltools); importing it failed: {e}"
        ) from None
    _register_shims()
    return ct


_SHIMS = False


def _register_shims() -> None:
    """See the module docstring: casts of (1,) constants, boolean ``__or__``, and a
    log-softmax that stays finite in fp16."""
    global _SHIMS
    if _SHIMS:
        return
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import (
        _TORCH_OPS_REGISTRY as registry,
    )
    from coremltools.converters.mil.mil import types

    def cast(dtype: type, name: str) -> Any:
        def convert(context: Any, node: Any) -> None:
            (x,) = ops._get_inputs(context, node, expected=1)
            if x.can_be_folded_to_const() and np.size(x.val) == 1:
                value = dtype(np.asarray(x.val).reshape(()).item())
                context.add(mb.const(val=value, name=node.name), node.name)
            else:
                ops._cast(context, node, dtype, name)

        return convert

    def logical_or(context: Any, node: Any) -> None:
        x, y = ops._get_inputs(context, node, expected=2)
        if not (types.is_bool(x.dtype) and types.is_bool(y.dtype)):
            raise ValueError(f"__or__ on {x.dtype}/{y.dtype}: only booleans are converted")
        context.add(mb.logical_or(x=x, y=y, name=node.name))

    def log_softmax(context: Any, node: Any) -> None:
        # coremltools lowers log_softmax to log(softmax(x)): in fp16 a confident model's
        # unlikely tokens underflow to probability 0 and their log-probabilities to -inf. The
        # shifted form x - max - log(sum(exp(x - max))) stays finite down to fp16's range.
        inputs = ops._get_inputs(context, node, min_expected=2)
        x, axis = inputs[0], int(inputs[1].val)
        shifted = mb.sub(x=x, y=mb.reduce_max(x=x, axes=[axis], keep_dims=True))
        total = mb.reduce_sum(x=mb.exp(x=shifted), axes=[axis], keep_dims=True)
        context.add(mb.sub(x=shifted, y=mb.log(x=total), name=node.name))

    registry.set_func_by_name(cast(int, "int32"), "int")
    registry.set_func_by_name(cast(bool, "bool"), "bool")
    for name in ("log_softmax", "_log_softmax"):
        registry.set_func_by_name(log_softmax, name)
    if registry.get_func("__or__") is None:
        registry.set_func_by_name(logical_or, "or")
    _SHIMS = True


class _Holder(nn.Module):
    """Traces ``module`` without registering it as a submodule, so the tracer does not probe
    every attribute of every block (``torch.jit.trace`` of a module does, and a property that
    raises anything but AttributeError stops it); its weights become constants of the trace."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._inner = [module]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._inner[0](x, lengths)


def export_coreml_model(
    model: nn.Module,
    path: str | Path,
    *,
    tokenizer: Tokenizer | None = None,
    features: FeatureConfig | None = None,
    max_seconds: float = 30.0,
    precision: str = "fp16",
    check: bool = True,
) -> CoreMLExport:
    """Converts ``model`` (a CTC or attention ``SpeechModel``) to ``path`` (``.mlpackage``).

    ``max_seconds`` bounds the time axis; ``precision`` is the ML program's compute precision
    (``fp16``, Core ML's default and what the Neural Engine runs, or ``fp32``). ``check``: the
    package's interface and metadata (:func:`check_package`, raising if one fails), and the
    converted program run in numpy (:func:`check_program`) against PyTorch at two lengths.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {list(PRECISIONS)}")
    ct = _coremltools()
    feats = model_features(model, features)
    meta = model_metadata(model, tokenizer=tokenizer, features=feats)
    if meta["decoding"] != "ctc":
        raise ValueError(
            "decoder: Core ML export covers CTC (and attention models through their CTC head); "
            "an RNN transducer is three graphs and a search loop, run it with `speechnas "
            "export` and `speechnas transcribe`"
        )
    if feats.kind == "waveform":
        raise ValueError(
            "frontend: the learnable frontend is not exported to Core ML (its input is samples, "
            "the Core ML program takes feature frames); train with a filterbank frontend"
        )
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"path: {path} must end in .mlpackage (an ML program package)")
    min_frames = int(meta["min_input_length"])
    max_frames = feats.num_frames(round(max_seconds * feats.sample_rate))
    if max_frames <= min_frames:
        raise ValueError(f"max_seconds: {max_seconds} s is shorter than one output frame")
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        gen = torch.Generator().manual_seed(0)
        t_trace = min(max_frames, max(2 * min_frames, feats.num_frames(4 * feats.sample_rate)))
        x, lengths = _example(model, feats, [t_trace], gen)
        module = _CTC(model, waveform=False).eval()
        with torch.no_grad():
            traced = torch.jit.trace(_Holder(module).eval(), (x, lengths), check_trace=False)
        time = ct.RangeDim(min_frames, max_frames, t_trace)
        quiet = logging.getLogger("coremltools")
        level, quiet.level = quiet.level, logging.ERROR  # its notes on tuples and int64 inputs
        mlmodel = ct.convert(
            traced,
            inputs=[
                ct.TensorType(name=INPUTS[0], dtype=np.float32, shape=(1, time, feats.dim)),
                ct.TensorType(name=INPUTS[1], dtype=np.int32, shape=(1,)),
            ],
            outputs=[ct.TensorType(name=n) for n in OUTPUTS],
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS16,
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        )
        quiet.setLevel(level)
        _describe(mlmodel, meta, feats)
        path.parent.mkdir(parents=True, exist_ok=True)
        mlmodel.save(str(path))
        result = CoreMLExport(path=path, precision=precision, min_frames=min_frames,
                              max_frames=max_frames, metadata=meta,
                              program=mlmodel._mil_program)  # fmt: skip
        if check:
            result.checks = check_package(path, meta, feats, min_frames, max_frames)
            checks = [t_trace * 3 // 5 + 7, max(min_frames, 2 * min_frames + 3)]
            for t in checks:
                x, lengths = _example(model, feats, [t], gen)
                with torch.no_grad():
                    log_probs, out_len = module(x, lengths)
                ref = log_probs[0, : int(out_len[0])].numpy()
                got = check_program(result.program, x[0].numpy(), int(lengths[0]))
                same = got.shape == ref.shape
                result.program_parity[t] = float(np.abs(got - ref).max()) if same else math.inf
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    return result


def _describe(mlmodel: Any, meta: dict[str, str], feats: FeatureConfig) -> None:
    mlmodel.author = "speechnas"
    mlmodel.version = meta["speechnas_version"]
    mlmodel.short_description = (
        f"CTC speech recogniser ({meta['decoder']} model, subsampling x"
        f"{meta['subsampling_factor']}): greedy decoding of log_probs with blank id "
        f"{meta['blank_id']} and the vocabulary in the metadata"
    )
    mlmodel.input_description[INPUTS[0]] = (
        f"(1, T, {feats.dim}) {feats.kind} features as the 'features' metadata defines them"
    )
    mlmodel.input_description[INPUTS[1]] = "(1,) valid frames of features"
    mlmodel.output_description[OUTPUTS[0]] = "(1, T', V) CTC log-probabilities"
    mlmodel.output_description[OUTPUTS[1]] = "(1,) valid output frames"
    mlmodel.user_defined_metadata.update(meta)


def check_package(
    path: Path, meta: dict[str, str], feats: FeatureConfig, min_frames: int, max_frames: int
) -> list[str]:
    """Reads the saved package back (no runtime needed) and checks its interface; returns the
    names of the checks, raising a ValueError on the first that fails."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    desc = spec.description

    def need(ok: bool, what: str) -> str:
        if not ok:
            raise ValueError(f"Core ML package {path}: {what} check failed")
        return what

    names_in = [i.name for i in desc.input]
    names_out = [o.name for o in desc.output]
    time = desc.input[0].type.multiArrayType.shapeRange.sizeRanges
    stored = dict(desc.metadata.userDefined)
    return [
        need(spec.WhichOneof("Type") == "mlProgram", "ML program"),
        need(names_in == list(INPUTS) and names_out == list(OUTPUTS), "input/output names"),
        need(
            [(r.lowerBound, r.upperBound) for r in time]
            == [(1, 1), (min_frames, max_frames), (feats.dim, feats.dim)],
            "flexible time axis",
        ),
        need(all(stored.get(k) == v for k, v in meta.items()), "metadata"),
        need(json.loads(stored["features"]) == feats.to_dict(), "feature definition"),
    ]


# --------------------------------------------------------------------------------------------
# The converted program, op by op, in numpy
# --------------------------------------------------------------------------------------------


def _conv(op: Any, v: dict[str, np.ndarray]) -> np.ndarray:
    x, w = v["x"], v["weight"]  # (1, C_in, *S), (C_out, C_in/groups, *K)
    k = w.shape[2:]
    nd = len(k)
    strides = v.get("strides", np.ones(nd, int))
    dil = v.get("dilations", np.ones(nd, int))
    pad_type = op.pad_type.val
    if pad_type == "custom":
        pads = v["pad"].reshape(nd, 2)
    elif pad_type == "valid":
        pads = np.zeros((nd, 2), int)
    else:
        raise NotImplementedError(f"conv pad_type {pad_type!r}")
    x = np.pad(x, [(0, 0), (0, 0), *[tuple(p) for p in pads]])
    groups = int(v.get("groups", 1))
    c_out, c_in = w.shape[0], w.shape[1]
    out_size = [(x.shape[2 + i] - dil[i] * (k[i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    y = np.zeros((x.shape[0], c_out, *out_size), dtype=np.float64)
    for g in range(groups):
        xg = x[:, g * c_in : (g + 1) * c_in].astype(np.float64)
        wg = w[g * (c_out // groups) : (g + 1) * (c_out // groups)].astype(np.float64)
        for offset in np.ndindex(*k):
            sl = tuple(
                slice(offset[i] * dil[i], offset[i] * dil[i] + strides[i] * (out_size[i] - 1) + 1,
                      strides[i])
                for i in range(nd)
            )  # fmt: skip
            patch = xg[(slice(None), slice(None), *sl)]  # (1, c_in, *out)
            y[:, g * (c_out // groups) : (g + 1) * (c_out // groups)] += np.einsum(
                "bc...,oc->bo...", patch, wg[(slice(None), slice(None), *offset)]
            )
    if "bias" in v:
        y += v["bias"].reshape(1, -1, *([1] * nd))
    return y.astype(x.dtype)


def _scatter(op: Any, v: dict[str, np.ndarray]) -> np.ndarray:
    data, idx, upd = v["data"].copy(), v["indices"], v["updates"]
    axis = int(v.get("axis", 0)) % data.ndim
    mode = op.mode.val if op.mode is not None else "add"
    moved, upd = np.moveaxis(data, axis, 0), np.moveaxis(upd, axis, 0)
    for i, j in enumerate(idx.reshape(-1)):
        if mode == "update":
            moved[j] = upd[i]
        elif mode == "add":
            moved[j] += upd[i]
        else:
            raise NotImplementedError(f"scatter mode {mode!r}")
    return np.moveaxis(moved, 0, axis)


_NUMPY_OPS = {
    "conv": _conv,
    "silu": lambda op, v: v["x"] / (1.0 + np.exp(-v["x"].astype(np.float64))).astype(v["x"].dtype),
    "scatter": _scatter,
}


def check_program(program: Any, features: np.ndarray, length: int) -> np.ndarray:
    """Runs the converted MIL ``program`` on one utterance, features (T, F), in numpy: every op
    by coremltools' reference ``value_inference`` (or :data:`_NUMPY_OPS`). Returns the
    log-probabilities (T', V) of the valid output frames, as float32."""

    fn = program.functions["main"]
    values: dict[str, Any] = {
        INPUTS[0]: features[None].astype(np.float32),
        INPUTS[1]: np.array([length], dtype=np.int32),
    }
    if sorted(fn.inputs) != sorted(values):
        raise ValueError(f"program inputs {sorted(fn.inputs)} are not {sorted(values)}")
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # masked scores may overflow
        warnings.simplefilter("ignore")
        _run_ops(fn.operations, values)
    log_probs, out_len = (values[o.name] for o in fn.outputs)
    n = int(np.asarray(out_len).reshape(-1)[0])
    if not math.isfinite(float(np.abs(log_probs).max(initial=0.0))):
        raise ValueError("the converted program produced non-finite log-probabilities")
    return np.asarray(log_probs, dtype=np.float32)[0, :n]


def _run_ops(operations: Any, values: dict[str, Any]) -> None:
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.operation import Operation

    for op in operations:
        if op.op_type == "const":
            values[op.outputs[0].name] = op.outputs[0].val
            continue
        saved = {}
        for var in _flat(op.inputs.values()):  # the op reads its inputs' values and shapes here
            if var.op is not None and var.op.op_type == "const":
                continue
            saved[var] = (var._sym_val, var._sym_type)
            var._sym_val, var._sym_type = types.numpy_val_to_builtin_val(
                np.asarray(values[var.name])
            )
        try:
            if op.op_type in _NUMPY_OPS:
                named = {k: values[var.name] for k, var in op.inputs.items()
                         if not isinstance(var, tuple | list)}  # fmt: skip
                out: Any = (_NUMPY_OPS[op.op_type](op, named),)
            elif type(op).value_inference is Operation.value_inference:
                raise NotImplementedError(f"no reference for MIL op {op.op_type!r}")
            else:
                out = op.value_inference()
                out = out if isinstance(out, tuple) else (out,)
        finally:
            for var, (val, sym_type) in saved.items():
                var._sym_val, var._sym_type = val, sym_type
        for var, val in zip(op.outputs, out, strict=True):  # in the dtype the program declares
            values[var.name] = np.asarray(val).astype(types.nptype_from_builtin(var.dtype))


def _flat(items: Any) -> list[Any]:
    out = []
    for it in items:
        out.extend(it if isinstance(it, tuple | list) else [it])
    return out


def export_coreml(
    checkpoint: str | Path,
    path: str | Path,
    *,
    max_seconds: float = 30.0,
    precision: str = "fp16",
    check: bool = True,
) -> CoreMLExport:
    """Loads a checkpoint folder and converts it (:func:`export_coreml_model`)."""
    from speechnas.export.metadata import load_float_checkpoint

    loaded = load_float_checkpoint(
        checkpoint,
        "convert the float checkpoint (Core ML compresses weights with coremltools.optimize)",
    )
    return export_coreml_model(
        loaded.model, path, tokenizer=loaded.tokenizer, features=loaded.features,
        max_seconds=max_seconds, precision=precision, check=check,
    )  # fmt: skip
