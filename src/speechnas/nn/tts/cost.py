"""Size and compute of a TTS architecture in closed form, without building it.

* :func:`tts_parameters` — the exact parameter count of :class:`~speechnas.nn.tts.model.
  FastSpeech` (tests hold it equal to the built model's).
* :func:`tts_macs` — multiply-accumulates of one utterance of N phonemes and T frames.

The MAC conventions are those of :mod:`speechnas.nn.cost`: products with weights (linear maps,
convolutions, LSTM gates) and the attention products QKᵀ and AV count, one MAC per
multiply-accumulate; normalisation, activations, gating, masking, residual and bias additions,
embedding lookups and the length regulator's gather count 0. Attention is dense over T×T.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from speechnas.nn.tts.blocks import POSTNET_KERNEL, POSTNET_LAYERS, PREDICTOR_KERNEL
from speechnas.nn.tts.spec import TtsLayerSpec, TtsSpec, decode_tts

__all__ = ["tts_macs", "tts_parameters"]


def _spec(spec: TtsSpec | Mapping[str, Any]) -> TtsSpec:
    return spec if isinstance(spec, TtsSpec) else decode_tts(spec)


def _conv(c_in: int, c_out: int, kernel: int, groups: int = 1) -> int:
    """Parameters of a Conv1d (or a Linear: kernel 1) with bias."""
    return c_in // groups * c_out * kernel + c_out


def _lstm_params(d_in: int, hidden: int) -> int:
    """One direction: input and recurrent weights of the 4 gates and their two biases."""
    return 4 * hidden * (d_in + hidden) + 8 * hidden


def _op_params(layer: TtsLayerSpec, d: int) -> int:
    kind, k = layer.kind, layer.kernel
    if kind == "attn":
        return _conv(d, 3 * d, 1) + _conv(d, d, 1)
    if kind == "sep":
        return _conv(d, d, k, groups=d) + _conv(d, d, 1)
    if kind == "glu":
        return _conv(d, 2 * d, k)
    return 2 * _lstm_params(d, d // 2)


def _layer_params(layer: TtsLayerSpec, d: int, ffn_kernel: int) -> int:
    n = 2 * d + _op_params(layer, d)
    if layer.ffn:
        n += 2 * d + _conv(d, layer.ffn, ffn_kernel) + _conv(layer.ffn, d, 1)
    return n


def _predictor_params(d: int, c: int) -> int:
    return _conv(d, c, PREDICTOR_KERNEL) + _conv(c, c, PREDICTOR_KERNEL) + 4 * c + _conv(c, 1, 1)


def _postnet_params(m: int, c: int) -> int:
    convs = _conv(m, c, POSTNET_KERNEL) + _conv(c, m, POSTNET_KERNEL)
    convs += (POSTNET_LAYERS - 2) * _conv(c, c, POSTNET_KERNEL)
    return convs + (POSTNET_LAYERS - 1) * 2 * c


def tts_parameters(spec: TtsSpec | Mapping[str, Any], n_phonemes: int, n_mels: int = 80) -> int:
    """Parameters of ``FastSpeech(spec, n_phonemes=n_phonemes, n_mels=n_mels)``."""
    s = _spec(spec)
    d, c = s.d_model, s.variance_dim
    n = n_phonemes * d  # embedding
    for stack in (s.encoder, s.decoder):
        n += sum(_layer_params(ly, d, s.ffn_kernel) for ly in stack) + 2 * d
    n += _predictor_params(d, c)  # duration
    if s.energy:
        n += _predictor_params(d, c) + _conv(1, d, 1)
    n += _conv(d, n_mels, 1)
    if s.postnet:
        n += _postnet_params(n_mels, d)
    return n


def _op_macs(layer: TtsLayerSpec, d: int, t: int) -> int:
    kind, k = layer.kind, layer.kernel
    if kind == "attn":
        return t * 4 * d * d + 2 * t * t * d
    if kind == "sep":
        return t * (k * d + d * d)
    if kind == "glu":
        return t * 2 * d * d * k
    h = d // 2
    return 2 * t * 4 * h * (d + h)


def _stack_macs(stack: tuple[TtsLayerSpec, ...], d: int, ffn_kernel: int, t: int) -> int:
    return sum(_op_macs(ly, d, t) + t * (ffn_kernel + 1) * d * ly.ffn for ly in stack)


def tts_macs(
    spec: TtsSpec | Mapping[str, Any],
    *,
    phonemes: int,
    frames: int,
    n_phonemes: int,
    n_mels: int = 80,
) -> int:
    """Multiply-accumulates of one utterance of ``phonemes`` phonemes and ``frames`` frames.
    (``n_phonemes`` only sizes the embedding, whose lookups are free; it is kept for a
    signature that matches :func:`tts_parameters`.)"""
    del n_phonemes
    s = _spec(spec)
    d, c, n, t = s.d_model, s.variance_dim, phonemes, frames
    predictor = n * (PREDICTOR_KERNEL * d * c + PREDICTOR_KERNEL * c * c + c)
    macs = _stack_macs(s.encoder, d, s.ffn_kernel, n) + predictor
    if s.energy:
        macs += predictor + n * d
    macs += _stack_macs(s.decoder, d, s.ffn_kernel, t) + t * d * n_mels
    if s.postnet:
        inner = (POSTNET_LAYERS - 2) * d * d
        macs += t * POSTNET_KERNEL * (2 * n_mels * d + inner)
    return macs
