"""Streaming models as ONNX graphs with their states as inputs and outputs.

``stream.onnx`` computes one chunk: inputs ``window`` (B, W, F) — the chunk's feature frames
with its look-ahead and the subsampling's context (``stream_window`` frames; consecutive windows
start ``stream_hop`` frames apart) — ``valid`` (B,) int64, how many of the chunk's encoder frames
and look-ahead frames exist (fewer only at the end of a stream), and one input per state; outputs
``log_probs`` (B, C, V) (through the CTC head; a hybrid model's), ``out_lengths`` (B,) and one
``<state>_out`` per state, fed back as the next chunk's input. The initial states are zeros of
the shapes in the ``stream_states`` metadata (JSON: name → shape with batch 1; the ``offset``
state is int64, the others float32). The graph is checked chunk by chunk against PyTorch, and
the stream of chunks against the full-utterance forward.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from speechnas.data.tokenizer import Tokenizer
from speechnas.export.graph import export_module
from speechnas.export.metadata import model_metadata
from speechnas.export.transcribe import session_options
from speechnas.nn.build import SpeechModel
from speechnas.nn.decoders import CTCDecoder
from speechnas.nn.streaming import stream_encode

__all__ = [
    "StreamExport",
    "StreamingCTC",
    "batch_axis",
    "cpu_session",
    "ctc_head",
    "export_streaming",
    "stream_metadata",
]


class StreamingCTC(nn.Module):
    def __init__(self, model: SpeechModel, ctc: CTCDecoder) -> None:
        super().__init__()
        self.model = model
        self.ctc = ctc

    def forward(
        self, window: torch.Tensor, valid: torch.Tensor, *states: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        enc, lengths, new = self.model.streaming_forward(window, valid, list(states))
        return (self.ctc(enc), lengths, *new)


def ctc_head(model: SpeechModel) -> CTCDecoder:
    dec = model.decoder
    head = dec if isinstance(dec, CTCDecoder) else getattr(dec, "ctc", None)
    if not isinstance(head, CTCDecoder):
        raise ValueError(
            f"export --streaming: a {type(dec).__name__} streams through a CTC head, which this "
            "model lacks; stream a CTC or hybrid CTC/attention model"
        )
    return head


def stream_metadata(model: SpeechModel, tokenizer: Tokenizer | None) -> dict[str, str]:
    """The full model's metadata plus the stream's geometry and state shapes."""
    geo = model.stream_geometry()
    states = model.init_states(1)
    return {
        **model_metadata(model, tokenizer=tokenizer),
        "decoding": "ctc",
        "streaming": "1",
        "stream_chunk": str(geo.chunk),
        "stream_lookahead": str(geo.lookahead),
        "stream_window": str(geo.window),
        "stream_hop": str(geo.hop),
        "stream_chunk_ms": f"{geo.chunk_ms:g}",
        "algorithmic_latency_ms": f"{geo.algorithmic_latency_ms:g}",
        "stream_states": json.dumps(
            {n: list(s.shape) for n, s in zip(model.state_names(), states, strict=True)}
        ),
    }


@dataclass
class StreamExport:
    path: Path
    parity: dict[str, float]  # chunk outputs vs PyTorch; the stream vs the full forward
    metadata: dict[str, str]
    int8_path: Path | None = None


def cpu_session(path: Path) -> ort.InferenceSession:
    """A one-thread CPU session of ONNX Runtime with the package's session options."""
    return ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])


def export_streaming(
    model: SpeechModel,
    out_dir: str | Path,
    *,
    tokenizer: Tokenizer | None = None,
    check: bool = True,
    int8: bool = False,
    name: str = "stream",
) -> StreamExport:
    """Writes ``out_dir/<name>.onnx`` (and ``<name>.int8.onnx``) for a streaming model at its
    current chunk size and look-ahead (:meth:`SpeechModel.configure_streaming`)."""
    from speechnas.export.quantize import quantize_int8

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        geo = model.stream_geometry()
        module = StreamingCTC(model, ctc_head(model)).eval()
        meta = stream_metadata(model, tokenizer)
        states = model.init_states(1)
        names = model.state_names()
        gen = torch.Generator().manual_seed(0)
        window = model.cmvn_mean + model.cmvn_std * torch.randn(
            1, geo.window, model.features.dim, generator=gen
        )
        valid = torch.tensor([geo.chunk + geo.lookahead])
        # Trace after one chunk so that no state is all zeros (a traced constant path).
        with torch.no_grad():
            _, _, *states = module(window, valid, *states)
        path = export_module(
            module, (window, valid, *states), out / f"{name}.onnx",
            input_names=["window", "valid", *names],
            output_names=["log_probs", "out_lengths", *(f"{n}_out" for n in names)],
            dynamic_axes={"window": {0: "batch"}, "valid": {0: "batch"},
                          **{n: {batch_axis(n): "batch"} for n in names}},
            metadata={**meta, "graph": "stream"},
        )  # fmt: skip
        parity = _parity(model, module, path, gen) if check else {}
    finally:
        model.train(was_training)
    result = StreamExport(path=path, parity=parity, metadata=meta)
    if int8:
        result.int8_path = quantize_int8(path, path.with_suffix(".int8.onnx")).path
    return result


def batch_axis(state: str) -> int:
    """LSTM states are (layers, B, H); every other state has the batch first."""
    return 1 if state in ("h", "c") else 0


def _parity(
    model: SpeechModel, module: StreamingCTC, path: Path, gen: torch.Generator
) -> dict[str, float]:
    """An utterance of a few chunks, streamed through ONNX Runtime and PyTorch chunk by chunk,
    and through the full forward: the largest differences of the log-probabilities."""
    geo = model.stream_geometry()
    frames = geo.hop * 3 + geo.window + 5  # ends inside a chunk
    x = model.cmvn_mean + model.cmvn_std * torch.randn(1, frames, model.features.dim, generator=gen)
    lengths = torch.tensor([frames])
    session = cpu_session(path)
    states = model.init_states(1)
    names = model.state_names()
    streamed = stream_encode(model, x, lengths)
    with torch.no_grad():
        full_enc, n = model.encode(x, lengths)
        want = module.ctc(streamed.enc)[0].numpy()
        full = module.ctc(full_enc)[0, : int(n)].numpy()
    got: list[np.ndarray] = []
    feeds = {k: v.numpy() for k, v in zip(names, states, strict=True)}
    n_enc = int(streamed.lengths[0])
    for i in range(-(-n_enc // geo.chunk)):
        w = x[:, i * geo.hop : i * geo.hop + geo.window]
        w = torch.nn.functional.pad(w, (0, 0, 0, geo.window - w.shape[1]))
        valid = np.array([min(n_enc - i * geo.chunk, geo.chunk + geo.lookahead)], dtype=np.int64)
        outs = session.run(None, {"window": w.numpy(), "valid": valid, **feeds})
        got.append(outs[0][0, : int(outs[1][0])])
        feeds = dict(zip(names, outs[2:], strict=True))
    onnx_lp = np.concatenate(got)
    return {
        "stream/log_probs": float(np.abs(onnx_lp - want).max()),
        "stream_vs_full/log_probs": float(np.abs(want - full).max()),
    }
