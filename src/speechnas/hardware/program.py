"""A model in any of its forms, as the parts that run for one utterance and their inputs.

A :class:`Program` is what the profiler times: ``model`` (CTC, and attention/hybrid models
through their CTC head) or ``encoder`` + ``predictor`` + ``joiner`` (RNN-T), each an ONNX file
for ONNX Runtime or an ``nn.Module`` for PyTorch, plus the feature config that turns seconds
of audio into input frames (or samples, for the learnable front end).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speechnas.data.features import FeatureConfig
from speechnas.hardware.target import Target

__all__ = [
    "TOKENS_PER_SECOND",
    "Program",
    "chunk_windows",
    "decoding_calls",
    "load_program",
    "utterance_length",
]

#: Output tokens per second of audio that the RNN-T greedy search is charged for.
TOKENS_PER_SECOND = 3.0

RNNT_PARTS = ("encoder", "predictor", "joiner")
_QUANTISED_OPS = {
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM",
    "ConvInteger",
    "QLinearMatMul",
}


@dataclass
class Program:
    """The runnable parts of one model.

    ``parts`` maps "model" (or "encoder", "predictor", "joiner") to a file or module;
    ``input_names`` are the first part's (input, lengths) names; ``step_feeds`` holds one
    decoding step's inputs of each RNN-T step part; ``sizes`` maps each part to its bytes.
    """

    decoding: str
    parts: dict[str, Any]
    features: FeatureConfig
    input_names: tuple[str, str]
    step_feeds: dict[str, dict[str, np.ndarray]]
    sizes: dict[str, int]
    description: str
    min_input: int | None = None

    @property
    def first(self) -> str:
        return "model" if self.decoding == "ctc" else "encoder"

    def feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Input (1, T, F) or waveform (1, N) → the first part's named inputs."""
        return {self.input_names[0]: x, self.input_names[1]: np.array([x.shape[1]], np.int64)}


def utterance_length(features: FeatureConfig, seconds: float) -> int:
    """Input frames (samples for the learnable front end) of an utterance of ``seconds``."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds: expected a positive duration, got {seconds!r}")
    n = round(seconds * features.sample_rate)
    return n if features.kind == "waveform" else features.num_frames(n)


def random_input(features: FeatureConfig, length: int, rng: np.random.Generator) -> np.ndarray:
    """(1, length, F) standard-normal features, or a (1, length) waveform at a speech level."""
    if features.kind == "waveform":
        return (0.1 * rng.standard_normal((1, length))).astype(np.float32)
    return rng.standard_normal((1, length, features.dim)).astype(np.float32)


def chunk_windows(
    features: FeatureConfig, target: Target, seconds: float
) -> tuple[int, list[tuple[int, int, int]]]:
    """A streaming utterance as windows: (total input length, [(lo, start, hi), ...]).

    Chunk i covers input [start, start + chunk) and is run on [lo, hi): up to
    ``left_context_ms`` before it, and for a waveform the window's extra samples the last
    frame needs. The utterance is padded to a whole number of chunks.
    """
    assert target.chunk_ms is not None
    if features.kind == "waveform":
        per_ms = features.sample_rate / 1000.0
        extra = round((features.win_ms - features.hop_ms) * per_ms)
    else:
        per_ms, extra = 1.0 / features.hop_ms, 0
    chunk = round(target.chunk_ms * per_ms)
    left = round(target.left_context_ms * per_ms)
    if chunk < 1:
        raise ValueError(f"target chunk_ms: {target.chunk_ms} ms is shorter than one frame")
    n = target.chunks(seconds)
    windows = [(max(0, i * chunk - left), i * chunk, (i + 1) * chunk + extra) for i in range(n)]
    return n * chunk + extra, windows


def decoding_calls(
    seconds: float, frames: np.ndarray, shares: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """RNN-T greedy-search calls per chunk (one chunk for a whole utterance).

    ``frames`` are the encoder frames of each chunk's window and ``shares`` the fraction of the
    window that is new (not left context). Tokens: the chunk's part of round(3 N). Returns
    (prediction steps, joiner calls): tokens (+1 for the start symbol, in the first chunk)
    and new frames + tokens.
    """
    n = len(frames)
    ends = np.arange(1, n + 1) * (seconds / n)
    tokens = np.diff(np.round(TOKENS_PER_SECOND * np.concatenate([[0.0], ends])))
    start = np.zeros(n)
    start[0] = 1.0
    return tokens + start, np.round(np.asarray(frames) * np.asarray(shares)) + tokens


# ------------------------------------------------------------------------------------------
# ONNX files
# ------------------------------------------------------------------------------------------


def _onnx_inputs(path: Path) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    """(name, dtype, shape with every symbolic dim as 1) of a graph's inputs."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    out = []
    for value in graph.input:
        if value.name in inits:
            continue
        t = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim)
        out.append((value.name, tensor_dtype_to_np_dtype(t.elem_type), shape))
    return out


def _onnx_metadata(path: Path) -> tuple[dict[str, str], set[str]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}, {n.op_type for n in model.graph.node}


def _ort_program(files: Mapping[str, Path], description: str) -> Program:
    if "model" in files:
        decoding = "ctc"
    elif all(p in files for p in RNNT_PARTS):
        decoding = "rnnt"
    else:
        raise ValueError(
            f"model files: {sorted(files)} are neither ['model'] nor {sorted(RNNT_PARTS)}"
        )
    names = ("model",) if decoding == "ctc" else RNNT_PARTS
    paths = {n: Path(files[n]) for n in names}
    meta, _ = _onnx_metadata(paths[names[0]])
    inputs = _onnx_inputs(paths[names[0]])
    if len(inputs) != 2:
        raise ValueError(f"{paths[names[0]]}: expected 2 inputs (signal, lengths), got {inputs}")
    if "features" in meta:
        features = FeatureConfig(**json.loads(meta["features"]))
    elif inputs[0][0] == "waveform" or len(inputs[0][2]) == 2:
        features = FeatureConfig(kind="waveform")
    else:
        features = FeatureConfig(kind="fbank", n_mels=inputs[0][2][-1])
    steps = {
        n: {name: np.zeros(shape, dtype) for name, dtype, shape in _onnx_inputs(paths[n])}
        for n in names[1:]
    }
    min_input = meta.get("min_input_length")
    return Program(
        decoding=decoding,
        parts=paths,
        features=features,
        input_names=(inputs[0][0], inputs[1][0]),
        step_feeds=steps,
        sizes={n: p.stat().st_size for n, p in paths.items()},
        description=description,
        min_input=int(min_input) if min_input else None,
    )


def _is_quantised(path: Path) -> bool:
    meta, ops = _onnx_metadata(path)
    return meta.get("quantization", "").startswith("int8") or bool(ops & _QUANTISED_OPS)


def _quantised(files: Mapping[str, Path], work_dir: Path) -> dict[str, Path]:
    from speechnas.export.quantize import quantize_int8

    out = {}
    for name, path in files.items():
        path = Path(path)
        if _is_quantised(path):
            out[name] = path
        else:
            out[name] = quantize_int8(path, work_dir / "int8" / f"{name}.int8.onnx").path
    return out


def _files_in(folder: Path, int8: bool) -> dict[str, Path]:
    found = {}
    for name in ("model", *RNNT_PARTS):
        plain, quant = folder / f"{name}.onnx", folder / f"{name}.int8.onnx"
        if int8 and quant.is_file():
            found[name] = quant
        elif plain.is_file():
            found[name] = plain
    if not found:
        raise ValueError(f"model: {folder} holds no model.onnx nor encoder.onnx")
    return found


# ------------------------------------------------------------------------------------------
# PyTorch modules
# ------------------------------------------------------------------------------------------


class _TorchCTC(nn.Module):
    """features (1, T, F) or waveform (1, N), lengths (1,) → CTC log-probs (or the encoder
    output), lengths."""

    def __init__(self, model: nn.Module, *, waveform: bool, encoder_only: bool) -> None:
        super().__init__()
        self.model = model
        self.waveform = waveform
        decoder = getattr(model, "decoder", None)
        # Hybrid CTC/attention models decode through their CTC head (``decoder.ctc``).
        self.head = None if encoder_only else getattr(decoder, "ctc", decoder)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc, lengths = self.model.encode(x[..., None] if self.waveform else x, lengths)
        return (enc if self.head is None else self.head(enc)), lengths


class _TorchPredictor(nn.Module):
    """token (1,), h, c (L, 1, H) → prediction (1, H), h, c: one greedy-search step."""

    def __init__(self, predictor: nn.Module) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Any:
        out, (h, c) = self.predictor.step(token, (h, c))
        return out, h, c


def _min_input(model: nn.Module) -> int | None:
    """Fewest input frames (samples) that give one encoder frame, where the stages say."""
    stages = getattr(getattr(model, "encoder", None), "stages", None)
    if stages is None:
        return None
    lengths = torch.arange(4 * 16000 + 1)
    for stage in stages:
        if hasattr(stage, "output_lengths"):
            lengths = stage.output_lengths(lengths)
    hits = (lengths >= 1).nonzero()
    return int(hits[0, 0]) if len(hits) else None


def _torch_program(
    model: nn.Module, features: FeatureConfig, sizes: dict[str, int], description: str
) -> Program:
    from speechnas.nn.decoders import RNNTDecoder

    model.eval()
    waveform = features.kind == "waveform"
    decoder = getattr(model, "decoder", None)
    names = ("waveform" if waveform else "features", "lengths")
    if isinstance(decoder, RNNTDecoder):
        lstm = decoder.predictor.lstm
        d = decoder.joiner.enc_proj.in_features
        state = np.zeros((lstm.num_layers, 1, lstm.hidden_size), np.float32)
        parts: dict[str, Any] = {
            "encoder": _TorchCTC(model, waveform=waveform, encoder_only=True),
            "predictor": _TorchPredictor(decoder.predictor),
            "joiner": decoder.joiner,
        }
        steps = {
            "predictor": {"token": np.zeros(1, np.int64), "h": state, "c": state.copy()},
            "joiner": {
                "enc": np.zeros((1, d), np.float32),
                "pred": np.zeros((1, lstm.hidden_size), np.float32),
            },
        }
        decoding = "rnnt"
    else:
        parts = {"model": _TorchCTC(model, waveform=waveform, encoder_only=False)}
        steps, decoding = {}, "ctc"
    return Program(decoding, parts, features, names, steps, sizes, description, _min_input(model))


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _model_features(model: nn.Module) -> FeatureConfig:
    if isinstance(getattr(model, "features", None), FeatureConfig):
        return model.features
    if hasattr(model, "feat_dim"):
        return FeatureConfig(kind="fbank", n_mels=int(model.feat_dim))
    raise ValueError(f"model: cannot tell the input features of a {type(model).__name__}")


def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "meta.json").is_file()


def load_program(model: Any, target: Target, work_dir: Path) -> Program:
    """``model`` as a :class:`Program` for ``target``.

    Accepted: an ``nn.Module`` (a ``SpeechModel``), a checkpoint
    folder, and for ONNX Runtime also an ``.onnx`` file, a folder of exported files, a
    mapping of part name to file or the result of ``speechnas.export.onnx.export_model``.
    Modules and checkpoints are exported (under ``work_dir``) for ONNX Runtime, and float
    files are quantised there for an int8 target.
    """
    int8 = target.precision == "int8"
    if target.runtime == "torch":
        if isinstance(model, nn.Module):
            sizes = {"model": _state_bytes(model)}
            return _torch_program(model, _model_features(model), sizes, type(model).__name__)
        path = Path(model) if isinstance(model, str | Path) else None
        if path is None or not _is_checkpoint(path):
            raise ValueError(
                f"model: the torch runtime takes an nn.Module or a checkpoint folder, got {model!r}"
            )
        from speechnas.train.checkpoint import load_model

        loaded = load_model(path)
        sizes = {"model": (path / "model.safetensors").stat().st_size}
        return _torch_program(loaded.model, loaded.features, sizes, str(path))
    description = type(model).__name__
    if isinstance(model, nn.Module):
        from speechnas.export.onnx import export_model

        result = export_model(model, work_dir / "export", check=False, int8=int8)
        files = dict(result.int8_files) if int8 else dict(result.files)
    elif isinstance(model, str | Path) and _is_checkpoint(Path(model)):
        from speechnas.export.onnx import export_checkpoint

        result = export_checkpoint(model, work_dir / "export", check=False, int8=int8)
        files, description = (dict(result.int8_files) if int8 else dict(result.files)), str(model)
    elif hasattr(model, "files"):
        chosen = getattr(model, "int8_files", None) if int8 else None
        files = dict(chosen or model.files)
    elif isinstance(model, Mapping):
        files, description = {k: Path(v) for k, v in model.items()}, "files"
    elif isinstance(model, str | Path) and Path(model).is_dir():
        files, description = _files_in(Path(model), int8), str(model)
    elif isinstance(model, str | Path) and Path(model).is_file():
        files, description = {"model": Path(model)}, str(model)
    else:
        raise ValueError(
            f"model: {model!r} is not an nn.Module, a checkpoint folder, an .onnx file, a "
            "folder of exported files, a mapping of part names to files nor an export result"
        )
    if int8:
        files = _quantised(files, work_dir)
    return _ort_program(files, description)
