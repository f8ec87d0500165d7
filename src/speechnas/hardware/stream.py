"""Per-chunk latency of a streaming model, timed with real state tensors.

The model is exported as its streaming ONNX graph (``speechnas.export.streaming``). A stream of
``seconds`` of input at the model's input scale is run once chunk by chunk to record every
chunk's inputs — its window and the states the previous chunk returned — and then each chunk's
call is timed on the target's runtime (its warm-up, repeats and clock), so every chunk is timed
with the states it meets in a real stream (caches filling up over the first chunks, then full).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from speechnas.export.streaming import export_streaming
from speechnas.hardware.backends import OrtBackend
from speechnas.hardware.target import Target, load_target
from speechnas.nn.build import SpeechModel

__all__ = ["ChunkLatency", "chunk_latency", "chunk_latency_of_file"]


@dataclass(frozen=True, slots=True)
class ChunkLatency:
    p50_ms: float  # over the chunks of the stream, each chunk's median over repeats
    p90_ms: float
    mean_ms: float
    chunks: int
    rtf: float  # summed chunk times / audio of the stream
    chunk_ms: float  # audio per chunk
    target: str

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def chunk_latency_of_file(
    path: str | Path, target: Target | str = "cpu-ort-stream-1t", *, seconds: float = 5.0
) -> ChunkLatency:
    """Per-chunk latency of an exported ``stream.onnx`` on an ONNX Runtime target."""
    import json

    t = load_target(target)
    if t.runtime != "onnxruntime":
        raise ValueError(f"target {t.name}: streaming graphs are timed on onnxruntime targets")
    backend = OrtBackend(threads=t.threads, precision=t.precision)
    session = backend.session(path)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get("streaming") != "1":
        raise ValueError(f"{path}: not a streaming export (no `streaming` metadata)")
    window, hop = int(meta["stream_window"]), int(meta["stream_hop"])
    chunk, lookahead = int(meta["stream_chunk"]), int(meta["stream_lookahead"])
    feats = json.loads(meta["features"])
    frame_ms = float(feats.get("hop_ms", 10.0))
    frames = max(window, round(1000 * seconds / frame_ms))
    dim = session.get_inputs()[0].shape[2]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, frames + window, dim)).astype(np.float32)
    names = [i.name for i in session.get_inputs()][2:]
    shapes = json.loads(meta["stream_states"])
    states = {
        n: np.zeros(shapes[n], dtype=np.int64 if n == "offset" else np.float32) for n in names
    }
    n_chunks = max(1, -(-frames // hop))
    feeds = []
    for i in range(n_chunks):
        feed = {
            "window": x[:, i * hop : i * hop + window],
            "valid": np.array([chunk + lookahead], dtype=np.int64),
            **states,
        }
        feeds.append(feed)
        states = dict(zip(names, backend.run(path, feed)[2:], strict=True))
    times = backend.time(path, feeds, warmup=t.warmup, repeats=t.repeats, clock=t.clock)
    per_chunk = 1000 * np.median(times, axis=0)
    audio_ms = n_chunks * hop * frame_ms
    return ChunkLatency(
        p50_ms=float(np.percentile(per_chunk, 50)),
        p90_ms=float(np.percentile(per_chunk, 90)),
        mean_ms=float(per_chunk.mean()),
        chunks=n_chunks,
        rtf=float(per_chunk.sum() / audio_ms),
        chunk_ms=hop * frame_ms,
        target=t.name,
    )


def chunk_latency(
    model: SpeechModel,
    target: Target | str = "cpu-ort-stream-1t",
    *,
    seconds: float = 5.0,
    int8: bool = False,
) -> ChunkLatency:
    """Per-chunk latency of ``model`` at its current chunk size and look-ahead: exported to a
    temporary folder (fp32, or dynamically quantised int8) and timed by
    :func:`chunk_latency_of_file`."""
    with tempfile.TemporaryDirectory(prefix="speechnas-stream-") as tmp, torch.no_grad():
        res = export_streaming(model, tmp, check=False, int8=int8)
        path = res.int8_path if int8 else res.path
        assert path is not None
        return chunk_latency_of_file(path, target, seconds=seconds)
