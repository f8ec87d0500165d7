"""Running a streaming model chunk by chunk over whole utterances, as a device would.

:meth:`SpeechModel.streaming_forward` computes one chunk from one window of feature frames and
the states the previous chunk left; :func:`stream_encode` cuts utterances into those windows
(each starting ``geometry.hop`` frames after the last, so consecutive windows overlap by the
subsampling's context) and carries the states, recording when each chunk could have run: the
audio it needs has arrived. Over a whole utterance the result equals :meth:`SpeechModel.encode`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from speechnas.nn.blocks.subsampling import subsampled_lengths
from speechnas.nn.build import SpeechModel

__all__ = ["StreamedEncoding", "chunk_ready_ms", "stream_encode"]


@dataclass(frozen=True, slots=True)
class StreamedEncoding:
    enc: torch.Tensor  # (B, T', d_model), as model.encode gives
    lengths: torch.Tensor  # (B,)
    ready_ms: tuple[tuple[float, ...], ...]  # per utterance, per chunk: audio needed (ms)
    chunk_seconds: tuple[float, ...]  # compute time of each chunk (the whole batch)
    chunk: int  # encoder frames per chunk


def chunk_ready_ms(model: SpeechModel, chunk_index: int, num_frames: int) -> float:
    """Milliseconds of audio that must have arrived before chunk ``chunk_index`` of an
    utterance of ``num_frames`` feature frames can run: its window's last feature frame, capped
    at the utterance's end (the last chunk runs when the audio ends)."""
    geo = model.stream_geometry()
    last = min(chunk_index * geo.hop + geo.window, num_frames)
    return last * geo.frame_ms + (geo.feature_window_ms - geo.frame_ms)


@torch.no_grad()
def stream_encode(
    model: SpeechModel, feats: torch.Tensor, lengths: torch.Tensor
) -> StreamedEncoding:
    """feats (B, T, D) with ``lengths`` (B,) valid frames → the encodings chunk by chunk.

    The rows advance together, one chunk per call; a row that has ended gets empty chunks.
    """
    geo = model.stream_geometry()
    n_enc = subsampled_lengths(lengths, geo.factor)
    total = int(n_enc.max()) if len(n_enc) else 0
    chunks = math.ceil(total / geo.chunk)
    states = model.init_states(feats.shape[0])
    states = [s.to(feats.device) for s in states]
    outs: list[torch.Tensor] = []
    seconds: list[float] = []
    for i in range(chunks):
        window = feats[:, i * geo.hop : i * geo.hop + geo.window]
        window = F.pad(window, (0, 0, 0, geo.window - window.shape[1]))
        valid = (n_enc - i * geo.chunk).clamp(0, geo.chunk + geo.lookahead)
        start = time.perf_counter()
        y, _, states = model.streaming_forward(window, valid, states)
        seconds.append(time.perf_counter() - start)
        outs.append(y)
    if outs:
        enc = torch.cat(outs, dim=1)[:, :total]
    else:
        enc = feats.new_zeros(feats.shape[0], 0, model.spec.d_model)
    ready = tuple(
        tuple(chunk_ready_ms(model, i, int(n)) for i in range(math.ceil(int(e) / geo.chunk)))
        for n, e in zip(lengths.tolist(), n_enc.tolist(), strict=True)
    )
    return StreamedEncoding(
        enc=enc, lengths=n_enc, ready_ms=ready, chunk_seconds=tuple(seconds), chunk=geo.chunk
    )
