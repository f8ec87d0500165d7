"""Streaming export for sherpa-onnx: a streaming Conformer CTC model in the WeNet online format.

sherpa-onnx's online recognisers take a fixed state layout per model family; the WeNet CTC one
(``sherpa_onnx.OnlineRecognizer.from_wenet_ctc``) matches speechnas's streaming Conformer most
closely, so the chunk graph is wrapped into it rather than into the zipformer layouts:

* inputs, in this order: ``x`` (1, W, 80) feature frames (of samples in 16-bit range, as
  sherpa-onnx computes them for this format; the graph shifts them back; W = ``(chunk - 1) ·
  subsampling + right_context + 1``, windows ``chunk · subsampling`` frames apart, as
  :meth:`~speechnas.nn.build.SpeechModel.streaming_forward` takes them), ``offset`` (1,) int64
  (encoder frames streamed so far plus the cache size; sherpa-onnx starts it at the cache
  size), ``required_cache_size`` (1,) int64, ``att_cache`` (layers, heads, cache, 2 · head
  dim) with each layer's cached keys and values side by side, ``cnn_cache`` (layers, 1,
  d_model, kernel - 1) with each layer's causal-convolution inputs, and ``attn_mask`` (1, 1,
  cache + chunk) bool over the cached and the chunk's keys;
* outputs: ``log_probs`` (1, chunk, vocabulary) and the two new caches;
* metadata sherpa-onnx reads: ``head``, ``num_blocks``, ``output_size``, ``cnn_module_kernel``,
  ``right_context``, ``subsampling_factor``, ``vocab_size``; and, for the user,
  ``chunk_size`` and ``num_left_chunks``, which must be passed to the recogniser as they are
  (sherpa-onnx sizes the attention cache from them).

Layers with smaller kernels (or narrower convolution modules) use the trailing columns (and
leading channels) of the shared convolution cache; a look-ahead lengthens the window through
``right_context``. sherpa-onnx decodes whole chunks only: append silence of one window to the
audio before ending a stream, as its streaming examples do.

Not expressible in this format, and refused with the reason: encoders other than the
Conformer (the Transformer has no convolution cache, the E-Branchformer a differently shaped
one, the RNN and CNN encoders no attention cache), layers with different numbers of heads,
features other than ``knf80`` and decoders without a CTC head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from speechnas.data.features import KALDI_FLOOR
from speechnas.data.tokenizer import Tokenizer
from speechnas.export.graph import export_module
from speechnas.export.sherpa import check_sherpa, sherpa_tokens
from speechnas.export.streaming import cpu_session, ctc_head
from speechnas.nn.blocks.conformer import ConformerStack
from speechnas.nn.build import SpeechModel
from speechnas.nn.decoders import CTCDecoder

__all__ = [
    "SherpaStreamExport",
    "check_sherpa_streaming",
    "export_sherpa_streaming",
    "sherpa_online_recognizer",
]

#: sherpa-onnx feeds WeNet models samples in 16-bit range (``normalize_samples`` false).
WENET_LOG_SCALE = 2 * math.log(32768.0)
KALDI_LOG_FLOOR = math.log(KALDI_FLOOR)
INPUTS = ("x", "offset", "required_cache_size", "att_cache", "cnn_cache", "attn_mask")
OUTPUTS = ("log_probs", "new_att_cache", "new_cnn_cache")


@dataclass(frozen=True, slots=True)
class SherpaStreamExport:
    """What :func:`export_sherpa_streaming` wrote and how to load it."""

    model: Path
    tokens: Path
    int8_model: Path | None
    chunk_size: int
    num_left_chunks: int
    feature_dim: int
    sample_rate: int
    metadata: dict[str, str]
    parity: dict[str, float]

    def recognizer_kwargs(self, *, int8: bool = False) -> dict[str, Any]:
        """Keyword arguments of ``sherpa_onnx.OnlineRecognizer.from_wenet_ctc``."""
        model = self.int8_model if int8 else self.model
        if model is None:
            raise ValueError("int8: this export has no int8 model; export with int8=True")
        return {"model": str(model), "tokens": str(self.tokens), "chunk_size": self.chunk_size,
                "num_left_chunks": self.num_left_chunks, "feature_dim": self.feature_dim,
                "sample_rate": self.sample_rate}  # fmt: skip


def check_sherpa_streaming(model: SpeechModel) -> None:
    """Raises a ValueError saying why ``model`` cannot stream in sherpa-onnx, if it cannot."""
    check_sherpa(model)
    model.stream_geometry()  # raises for a model that does not stream
    stack = model.encoder.stages[-1]
    problems = []
    if not isinstance(stack, ConformerStack):
        problems.append(
            f"encoder: {model.spec.encoder!r}; sherpa-onnx's WeNet streaming format holds a "
            "Conformer's attention and convolution caches, so stream a Conformer, or use "
            "`speechnas export --streaming` and `speechnas transcribe --streaming`"
        )
    else:
        heads = {layer.attn.heads for layer in stack.layers}
        if len(heads) > 1:
            problems.append(
                f"layer_heads: {sorted(heads)}; the format's attention cache has one number "
                "of heads for every layer"
            )
        wide = [i for i, layer in enumerate(stack.layers) if _conv_channels(layer) > _width(model)]
        if wide:
            problems.append(
                f"conv_dim: layers {wide} have convolution modules wider than d_model, which "
                "the format's convolution cache (d_model channels) cannot hold"
            )
    ctc_head(model)
    if problems:
        raise ValueError("cannot export for sherpa-onnx streaming:\n  " + "\n  ".join(problems))


def _width(model: SpeechModel) -> int:
    return int(model.spec.d_model)


def _conv_channels(layer: nn.Module) -> int:
    return int(layer.conv.dw.conv.in_channels)


def _conv_left(layer: nn.Module) -> int:
    return int(layer.conv.dw.left)


class _WenetCTC(nn.Module):
    """speechnas's chunk step behind the WeNet online-CTC inputs and outputs (batch 1)."""

    def __init__(self, model: SpeechModel, ctc: CTCDecoder) -> None:
        super().__init__()
        self.model = model
        self.ctc = ctc
        stack = model.encoder.stages[-1]
        self.layers = list(stack.layers)
        self.cache = stack.cache_frames()
        self.head_dim = self.layers[0].attn.head_dim
        self.conv_width = max(_conv_left(layer) for layer in self.layers)
        self.d_model = _width(model)
        geo = model.stream_geometry()
        self.valid = geo.chunk + geo.lookahead

    def forward(
        self,
        x: torch.Tensor,
        offset: torch.Tensor,
        required_cache_size: torch.Tensor,
        att_cache: torch.Tensor,
        cnn_cache: torch.Tensor,
        attn_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # sherpa-onnx computes a WeNet model's filterbank from samples scaled to 16-bit range:
        # each log energy is 2 ln 32768 higher, down to the same floor
        x = torch.clamp(x - WENET_LOG_SCALE, min=KALDI_LOG_FLOOR)
        streamed = offset - required_cache_size  # encoder frames of this stream so far
        states = [streamed]
        for i, layer in enumerate(self.layers):
            kv = att_cache[i][None]  # (1, H, L, 2 Dh)
            left, ch = _conv_left(layer), _conv_channels(layer)
            conv = cnn_cache[i, :, :ch, self.conv_width - left :].transpose(1, 2)
            states += [kv[..., : self.head_dim], kv[..., self.head_dim :], conv]
        valid = torch.full_like(streamed, self.valid)
        # sherpa-onnx's mask of the cache and the one the stream's own count gives agree; a
        # cached key is used only where both allow it
        enc, _, new = self.model.streaming_forward(
            x, valid, states, cache_valid=attn_mask[:, 0, : self.cache]
        )
        caches, convs = [], []
        for i, layer in enumerate(self.layers):
            k, v, conv = new[1 + 3 * i : 4 + 3 * i]
            caches.append(torch.cat([k, v], dim=-1)[0])
            pad = (self.conv_width - _conv_left(layer), 0, 0, self.d_model - _conv_channels(layer))
            convs.append(F.pad(conv.transpose(1, 2), pad))
        return self.ctc(enc), torch.stack(caches), torch.stack(convs)


def sherpa_stream_metadata(model: SpeechModel) -> dict[str, str]:
    """The metadata keys sherpa-onnx's WeNet online-CTC model reads, and the recogniser's."""
    geo = model.stream_geometry()
    stack = model.encoder.stages[-1]
    layers = list(stack.layers)
    right_context = geo.window - 1 - (geo.chunk - 1) * geo.factor
    return {
        "model_type": "wenet_ctc",
        "head": str(layers[0].attn.heads),
        "num_blocks": str(len(layers)),
        "output_size": str(_width(model)),
        "cnn_module_kernel": str(max(_conv_left(layer) for layer in layers) + 1),
        "right_context": str(right_context),
        "subsampling_factor": str(geo.factor),
        "vocab_size": str(model.vocab_size),
        "feature_dim": str(model.features.n_mels),
        "sample_rate": str(model.features.sample_rate),
        "chunk_size": str(geo.chunk),
        "num_left_chunks": str(stack.cache_frames() // geo.chunk),
        "stream_chunk_ms": f"{geo.chunk_ms:g}",
        "algorithmic_latency_ms": f"{geo.algorithmic_latency_ms:g}",
    }


def _example(module: _WenetCTC, gen: torch.Generator) -> list[torch.Tensor]:
    """Inputs of the first chunk of a stream, as sherpa-onnx builds them."""
    model = module.model
    geo = model.stream_geometry()
    n, cache = len(module.layers), module.cache
    heads = module.layers[0].attn.heads
    x = model.cmvn_mean + model.cmvn_std * torch.randn(
        1, geo.window, model.features.dim, generator=gen
    )
    mask = torch.ones(1, 1, cache + geo.chunk, dtype=torch.bool)
    mask[..., :cache] = False
    return [
        x, torch.tensor([cache]), torch.tensor([cache]),
        torch.zeros(n, heads, cache, 2 * module.head_dim),
        torch.zeros(n, 1, module.d_model, module.conv_width), mask,
    ]  # fmt: skip


def _advance(inputs: list[torch.Tensor], out: tuple[torch.Tensor, ...], chunk: int, cache: int,
             x: torch.Tensor) -> list[torch.Tensor]:  # fmt: skip
    """The next chunk's inputs as sherpa-onnx makes them from this chunk's outputs."""
    offset = inputs[1] + chunk
    idx = int(offset[0]) // chunk - cache // chunk
    mask = torch.ones_like(inputs[5])
    if idx < cache // chunk:
        mask[..., : cache - idx * chunk] = False
    return [x, offset, inputs[2], out[1], out[2], mask]


def export_sherpa_streaming(
    model: SpeechModel,
    out_dir: str | Path,
    *,
    tokenizer: Tokenizer,
    int8: bool = True,
    check: bool = True,
) -> SherpaStreamExport:
    """Writes ``model.onnx`` (and ``model.int8.onnx``) and ``tokens.txt`` under ``out_dir`` for
    ``sherpa_onnx.OnlineRecognizer.from_wenet_ctc``, at the model's current chunk size and
    look-ahead (:meth:`SpeechModel.configure_streaming`). ``check``: six chunks of a stream
    through ONNX Runtime against PyTorch's own chunk step (``parity``)."""
    from speechnas.export.quantize import quantize_int8

    check_sherpa_streaming(model)
    symbols = sherpa_tokens(tokenizer)
    if len(symbols) != model.vocab_size:
        raise ValueError(f"tokenizer: {len(symbols)} tokens for a model of {model.vocab_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        module = _WenetCTC(model, ctc_head(model)).eval()
        meta = sherpa_stream_metadata(model)
        gen = torch.Generator().manual_seed(0)
        inputs = _example(module, gen)
        path = export_module(
            module, tuple(inputs), out / "model.onnx", input_names=list(INPUTS),
            output_names=list(OUTPUTS), dynamic_axes={}, metadata=meta,
        )  # fmt: skip
        parity = _parity(module, path, inputs, gen) if check else {}
    finally:
        model.train(was_training)
    int8_path = quantize_int8(path, path.with_suffix(".int8.onnx")).path if int8 else None
    tokens = out / "tokens.txt"
    tokens.write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)), encoding="utf-8")
    feats = model.features
    return SherpaStreamExport(
        model=path, tokens=tokens, int8_model=int8_path, chunk_size=int(meta["chunk_size"]),
        num_left_chunks=int(meta["num_left_chunks"]), feature_dim=feats.n_mels,
        sample_rate=feats.sample_rate, metadata=meta, parity=parity,
    )  # fmt: skip


@torch.no_grad()
def _parity(
    module: _WenetCTC, path: Path, inputs: list[torch.Tensor], gen: torch.Generator
) -> dict[str, float]:
    """Max |ORT - torch| of log-probs and caches over six chunks of one stream."""
    session = cpu_session(path)
    model = module.model
    geo = model.stream_geometry()
    worst = dict.fromkeys(OUTPUTS, 0.0)
    for _ in range(6):
        want = module(*inputs)
        got = session.run(None, {n: t.numpy() for n, t in zip(INPUTS, inputs, strict=True)})
        for name, w, g in zip(OUTPUTS, want, got, strict=True):
            worst[name] = max(worst[name], float(np.abs(w.numpy() - g).max()))
        x = model.cmvn_mean + model.cmvn_std * torch.randn(
            1, geo.window, model.features.dim, generator=gen
        )
        inputs = _advance(inputs, want, geo.chunk, module.cache, x)
    return {f"sherpa_stream/{k}": v for k, v in worst.items()}


def sherpa_online_recognizer(
    export: SherpaStreamExport | str | Path, *, threads: int = 1, int8: bool = False
) -> Any:
    """A ``sherpa_onnx.OnlineRecognizer`` (greedy search) over an export, or its folder."""
    import sherpa_onnx

    if not isinstance(export, SherpaStreamExport):
        export = read_stream_export(export)
    return sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
        **export.recognizer_kwargs(int8=int8), num_threads=threads, decoding_method="greedy_search"
    )


def read_stream_export(folder: str | Path) -> SherpaStreamExport:
    """The :class:`SherpaStreamExport` of a folder :func:`export_sherpa_streaming` wrote."""
    folder = Path(folder)
    model, tokens = folder / "model.onnx", folder / "tokens.txt"
    for p in (model, tokens):
        if not p.is_file():
            raise ValueError(
                f"export: {p} is missing; write the folder with "
                "`speechnas export --format sherpa --streaming`"
            )
    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    if meta.get("model_type") != "wenet_ctc":
        raise ValueError(f"export: {model} is not a sherpa-onnx streaming export")
    int8 = folder / "model.int8.onnx"
    return SherpaStreamExport(
        model=model, tokens=tokens, int8_model=int8 if int8.is_file() else None,
        chunk_size=int(meta["chunk_size"]), num_left_chunks=int(meta["num_left_chunks"]),
        feature_dim=int(meta["feature_dim"]), sample_rate=int(meta["sample_rate"]), metadata=meta,
        parity={},
    )  # fmt: skip
