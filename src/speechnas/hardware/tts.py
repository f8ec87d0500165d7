"""Latency of TTS acoustic models, measured with ONNX Runtime on one thread.

A TTS model's cost depends on how many frames it generates, which a trained model's duration
predictor decides; to compare architectures before (and regardless of) training, the latency is
that of the exported fixed-duration graph (``acoustic_fixed.onnx``) on one reference sentence:
``phonemes`` phonemes of ``frames_per_phoneme`` frames each. The clock is the CPU time of the
thread that runs the graph (ONNX Runtime with one intra-op thread computes on the calling
thread), so other processes on the machine inflate it less than wall time; the median of the
timed runs is reported.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from speechnas.export.transcribe import session_options
from speechnas.export.tts import export_fixed_graph
from speechnas.export.tts_runtime import ACOUSTIC_FIXED, graph_path
from speechnas.hardware.backends import time_calls
from speechnas.hardware.target import Target
from speechnas.nn.tts import FastSpeech

WARMUP = 3
REPEATS = 15


def _feeds(n_phonemes: int, phonemes: int, frames_per_phoneme: int) -> dict[str, np.ndarray]:
    ids = 1 + np.arange(phonemes, dtype=np.int64) % max(1, n_phonemes - 1)
    return {
        "phonemes": ids[None],
        "phoneme_lengths": np.array([phonemes], dtype=np.int64),
        "durations": np.full((1, phonemes), frames_per_phoneme, dtype=np.int64),
    }


def time_fixed_graph(
    path: str | Path,
    n_phonemes: int,
    phonemes: int,
    frames_per_phoneme: int,
    *,
    threads: int = 1,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
) -> float:
    """Median milliseconds of one run of a fixed-duration graph on the reference sentence."""
    import onnxruntime as ort

    sess = ort.InferenceSession(
        str(path), session_options(threads), providers=["CPUExecutionProvider"]
    )
    feeds = _feeds(n_phonemes, phonemes, frames_per_phoneme)
    clock = "cpu" if threads == 1 else "wall"
    times = time_calls(
        lambda f: sess.run(None, dict(f)), [feeds], warmup=warmup, repeats=repeats, clock=clock
    )
    return 1000.0 * float(np.median(times))


def tts_latency(
    model: FastSpeech,
    phonemes: int,
    frames_per_phoneme: int,
    *,
    threads: int = 1,
    int8: bool = False,
) -> float:
    """Milliseconds for ``model`` (any weights) to generate the reference sentence's mel
    (``int8``: its dynamically quantized graph)."""
    from speechnas.export.quantize import quantize_int8

    with tempfile.TemporaryDirectory() as tmp:
        path = export_fixed_graph(model, Path(tmp) / f"{ACOUSTIC_FIXED}.onnx")
        if int8:
            path = quantize_int8(path, path.with_suffix(".int8.onnx")).path
        return time_fixed_graph(
            path, model.n_phonemes, phonemes, frames_per_phoneme, threads=threads
        )


def check_tts_target(target: Target) -> None:
    """A TTS search measures on ONNX Runtime, whole sentences, fp32 or int8; a ValueError
    naming what else was asked for."""
    if target.runtime != "onnxruntime" or target.precision not in ("fp32", "int8"):
        raise ValueError(
            f"target: {target.name!r} runs {target.runtime} at {target.precision}; a TTS search "
            "measures on ONNX Runtime at fp32 or int8 (cpu-ort-1t, cpu-ort-int8-1t) or uses "
            "target: proxy"
        )
    if target.chunk_ms is not None:
        raise ValueError(f"target: {target.name!r} is a streaming target; TTS models speak "
                         "whole sentences (cpu-ort-1t, cpu-ort-int8-1t)")  # fmt: skip


def time_onnx_fixed(
    model_dir: str | Path,
    phonemes: int,
    frames_per_phoneme: int,
    *,
    int8: bool = False,
    threads: int = 1,
) -> float:
    """:func:`time_fixed_graph` on an export folder's fixed graph (``int8``: its int8 copy)."""
    import json

    meta = json.loads((Path(model_dir) / "metadata.json").read_text())
    path = graph_path(model_dir, ACOUSTIC_FIXED, int8=int8)
    return time_fixed_graph(
        path, int(meta["n_phonemes"]), phonemes, frames_per_phoneme, threads=threads
    )


__all__ = ["check_tts_target", "time_fixed_graph", "time_onnx_fixed", "tts_latency"]
