"""Model size and compute of an architecture, without training it.

* :func:`count_parameters` — exact parameter count from a build on the ``meta`` device (no
  weights are allocated or initialised).
* :func:`analytic_macs` — multiply-accumulates of one utterance from closed-form formulas over
  the architecture's shapes, split into front end, subsampling, encoder and decoder.
* :func:`measured_macs` / :func:`measured_breakdown` — the same quantity counted by running a
  built model under :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2).
* :func:`subsampling_share` — the fraction of the encoder-side MACs spent in the convolutional
  subsampling.

Conventions shared by the analytic and the measured counts:

* One multiply-accumulate is 1 MAC (FlopCounterMode counts it as 2 FLOPs).
* Only products with weights and the attention products are counted: matrix products
  (linear layers, QKᵀ, AV), convolutions and the LSTM gate products. Normalisation,
  activations, softmax, residual additions, bias additions, masking and the element-wise
  gating of GLU / cgMLP / LSTM cells are ignored (all O(T·d), next to O(T·d²)).
* Dense work: attention masks (padding, local windows, streaming chunks) and causal padding
  do not reduce the count, since the blocks compute the full T×T scores and mask them.
* Fixed fbank / MFCC features are computed in the data pipeline, outside the model, so they
  count 0 in ``frontend``; only the learnable (waveform) front end contributes there.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from speechnas.nn.blocks import LearnableFrontend
from speechnas.nn.blocks._shared import parameter_count, shared_layers
from speechnas.nn.blocks.cnn import SeparableConvLayerConfig
from speechnas.nn.blocks.ebranchformer import EBranchformerLayerConfig
from speechnas.nn.blocks.subsampling import Conv2dSubsampling, conv_length, conv_plan
from speechnas.nn.build import SpeechModel
from speechnas.nn.decoders import CTCDecoder, RNNTDecoder
from speechnas.nn.spec import FRONTENDS, LEARNABLE_FILTERS, ArchSpec, decode
from speechnas.space.arch import Arch

__all__ = [
    "MacBreakdown",
    "analytic_macs",
    "count_parameters",
    "measured_breakdown",
    "measured_macs",
    "subsampling_share",
]


@dataclass(frozen=True, slots=True)
class MacBreakdown:
    """Multiply-accumulates of one utterance, by stage of the model."""

    frontend: int
    subsampling: int
    encoder: int
    decoder: int

    @property
    def total(self) -> int:
        return self.frontend + self.subsampling + self.encoder + self.decoder

    @property
    def encoder_side(self) -> int:
        """Everything before the decoder: front end + subsampling + encoder."""
        return self.frontend + self.subsampling + self.encoder


# --------------------------------------------------------------------------------------------
# Parameters


@cache
def _learnable_frontend() -> LearnableFrontend:
    """The learnable front end the builder prepends (a small CPU build, made once)."""
    return LearnableFrontend(LEARNABLE_FILTERS, sample_rate=FRONTENDS["learnable"].sample_rate)


#: layers, subsamplings and decoders built on meta for counting, by configuration (see below)
_LAYERS: dict[str, torch.nn.Module] = {}


def _fixed_frontend_of_width(width: int) -> str:
    for name, cfg in FRONTENDS.items():
        if cfg.kind != "waveform" and cfg.dim == width:
            return name
    raise LookupError(f"no fixed front end of width {width}")  # pragma: no cover


def count_parameters(arch: Mapping[str, Any], *, vocab_size: int, shared: bool = True) -> int:
    """Exact number of parameters of ``SpeechModel(arch, ...)``, in milliseconds.

    (The first call in a process that builds an ``nn.Embedding`` — RNN-T and attention
    decoders — pays a one-time import of PyTorch's Python meta kernels, about a second.)

    The model is built on the ``meta`` device, which records shapes but allocates and
    initialises nothing. Its layers, subsampling and decoder come from a memo of those already
    built for the same configuration (:mod:`speechnas.nn.blocks._shared`), which matters where a
    search counts thousands of candidates. On one core, 300 random architectures of
    ``conformer-ctc`` took 2.3 ms each (0.8 ms counted again) against 21 ms built afresh; of
    ``speech-all``, whose layers are mostly new to the memo, 54 ms at first (0.9 ms again)
    against 52 ms. ``shared=False`` builds every part afresh (what the memo is tested against).

    Every block builds on meta except :class:`LearnableFrontend`, whose constructor computes
    its Gabor filter initialisation with ``.item()`` (impossible on meta tensors). For that
    front end only, the rest of the model is built with the fixed front end of the same width
    in its place (the subsampling then sees the same input width, and fixed front ends have no
    parameters), and the learnable front end's own parameters come from one small CPU build,
    cached.
    """
    extra = 0
    spec = decode(arch)
    if spec.waveform_input:
        frontend = _learnable_frontend()
        extra = sum(p.numel() for p in frontend.parameters())
        spec = decode(Arch({**spec.arch, "frontend": _fixed_frontend_of_width(frontend.out_dim)}))
    if not shared:
        with torch.device("meta"):
            model = SpeechModel(spec.arch, vocab_size=vocab_size)
        return extra + sum(p.numel() for p in model.parameters())
    with torch.device("meta"), shared_layers(_LAYERS) as uses:
        model = SpeechModel(spec.arch, vocab_size=vocab_size)
    return extra + parameter_count(model, uses)


# --------------------------------------------------------------------------------------------
# Analytic MACs


def _linear(rows: int, d_in: int, d_out: int) -> int:
    return rows * d_in * d_out


def _feed_forward(t: int, d: int, hidden: int, rank: int) -> int:
    """FeedForward: d → hidden → d, each map factorised through ``rank`` when rank > 0."""
    if rank == 0:
        return 2 * _linear(t, d, hidden)
    return (
        _linear(t, d, rank)
        + _linear(t, rank, hidden)
        + _linear(t, hidden, rank)
        + _linear(t, rank, d)
    )


def _self_attention(t: int, d: int, attention: str, inner: int | None = None) -> int:
    """MultiHeadSelfAttention on T frames, all heads together (H · Dh = ``inner``, default d).

    QKV and output projections, QKᵀ and AV over the dense T×T grid; with relative positions
    also the projection of the 2T-1 position embeddings (d → inner) and the (q + v)·pᵀ score
    product over T × (2T-1) offsets (``rel_shift`` only moves data).
    """
    i = d if inner is None else inner
    macs = _linear(t, d, 3 * i) + _linear(t, i, d) + 2 * t * t * i
    if attention == "rel":
        macs += _linear(2 * t - 1, d, i) + t * (2 * t - 1) * i
    return macs


def _depthwise(t: int, channels: int, kernel: int) -> int:
    """DepthwiseConv1d: padded to keep T outputs; dilation does not change the count."""
    return t * channels * kernel


def _conformer_layer(t: int, d: int, *, ffn: int, rank: int, kernel: int, macaron: bool,
                     attention: str, inner: int, conv_dim: int) -> int:  # fmt: skip
    ffns = (2 if macaron else 1) * _feed_forward(t, d, ffn, rank)
    c = conv_dim
    conv = _linear(t, d, 2 * c) + _depthwise(t, c, kernel) + _linear(t, c, d)
    return ffns + _self_attention(t, d, attention, inner) + conv


def _transformer_layer(t: int, d: int, *, ffn: int, rank: int, attention: str) -> int:
    return _self_attention(t, d, attention) + _feed_forward(t, d, ffn, rank)


def _ebranchformer_layer(t: int, d: int, *, ffn: int, rank: int, kernel: int, merge_kernel: int,
                         attention: str, inner: int, cgmlp_dim: int) -> int:  # fmt: skip
    """Macaron FFNs, MHSA branch, cgMLP branch (up d → c, gating depthwise conv on c/2,
    down c/2 → d; c = cgmlp_dim, ffn_dim unless set), merge (depthwise conv over the 2d
    concatenation, projection 2d → d)."""
    c = cgmlp_dim
    cgmlp = _linear(t, d, c) + _depthwise(t, c // 2, kernel) + _linear(t, c // 2, d)
    merge = _depthwise(t, 2 * d, merge_kernel) + _linear(t, 2 * d, d)
    attn = _self_attention(t, d, attention, inner)
    return 2 * _feed_forward(t, d, ffn, rank) + attn + cgmlp + merge


def _lstm(steps: int, d_in: int, hidden: int, layers: int, directions: int) -> int:
    """A plain ``nn.LSTM`` stack: gate products 4·(in + h)·h per step and direction; layer
    l > 0 reads all directions."""
    macs = 0
    for layer in range(layers):
        width = d_in if layer == 0 else directions * hidden
        macs += directions * steps * 4 * (width + hidden) * hidden
    return macs


def _lstm_encoder(steps: int, d: int, hidden: int, layers: int, directions: int) -> int:
    """Residual LSTM layers on a d-wide stream: each one an LSTM reading d, then the projection
    of its directions' outputs back to d."""
    per_layer = _lstm(steps, d, hidden, 1, directions) + _linear(steps, directions * hidden, d)
    return layers * per_layer


def _cnn_layer(t: int, d: int, *, kernel: int, se: bool, reduction: int, causal: bool) -> int:
    """Depthwise conv, pointwise d → d, and SE (d → d/r → d) on the utterance mean, or on the
    running mean of every frame when causal (streaming)."""
    macs = _depthwise(t, d, kernel) + _linear(t, d, d)
    if se:
        hidden = max(1, d // reduction)
        macs += (t if causal else 1) * 2 * d * hidden
    return macs


def _encoder(spec: ArchSpec, t: int) -> int:
    kind = spec.encoder
    d = spec.d_model
    if kind in ("lstm", "blstm"):
        hidden = spec.lstm_hidden
        directions = 2 if kind == "blstm" else 1
        return _lstm_encoder(t, d, hidden, spec.layers, directions)
    if kind == "cnn":
        reduction = SeparableConvLayerConfig().se_reduction
        return sum(
            _cnn_layer(t, d, kernel=ly.kernel, se=spec.cnn_se, reduction=reduction,
                       causal=spec.causal)
            for ly in spec.layer
        )  # fmt: skip
    attention = spec.attention
    if kind == "conformer":
        return sum(
            _conformer_layer(t, d, ffn=ly.ffn_dim, rank=ly.ffn_lowrank, kernel=ly.kernel,
                             macaron=spec.macaron, attention=attention,
                             inner=ly.heads * spec.head_dim, conv_dim=ly.conv_dim)
            for ly in spec.layer
        )  # fmt: skip
    if kind == "transformer":
        return sum(
            _transformer_layer(t, d, ffn=ly.ffn_dim, rank=ly.ffn_lowrank, attention=attention)
            for ly in spec.layer
        )
    merge = EBranchformerLayerConfig().merge_kernel
    return sum(
        _ebranchformer_layer(t, d, ffn=ly.ffn_dim, rank=ly.ffn_lowrank, kernel=ly.kernel,
                             merge_kernel=merge, attention=attention,
                             inner=ly.heads * spec.head_dim, cgmlp_dim=ly.cgmlp_dim)
        for ly in spec.layer
    )  # fmt: skip


def _lookahead(spec: ArchSpec, t: int) -> int:
    """The streaming look-ahead convolution after the subsampling (none without look-ahead)."""
    return _depthwise(t, spec.d_model, spec.lookahead + 1) if spec.lookahead else 0


def _pred_layers() -> int:
    """The RNN-T prediction network depth the builder gets (RNNTDecoder's default)."""
    return int(inspect.signature(RNNTDecoder).parameters["pred_layers"].default)


def _decoder(spec: ArchSpec, t: int, vocab_size: int, tokens: int) -> int:
    """Inference (greedy) cost of the decoder over T' encoder frames and ``tokens`` outputs.

    CTC: the projection of every frame, T'·d·V.

    RNN-T, greedy: the prediction network runs U + 1 steps (start symbol + every emitted
    token; embedding lookups are free), and the joiner runs once per frame (the blank that
    ends it) plus once per emitted token, T' + U calls — not the T' × (U + 1) lattice of the
    training loss. Each call projects both inputs and maps to the vocabulary, as
    ``RNNTDecoder._greedy`` does (an implementation caching the encoder projection per frame
    and the prediction projection per token would save U·d·J + (T' - 1)·P·J). A frame that
    reaches ``max_symbols`` emissions ends without its blank call, one joiner call fewer.

    Attention, greedy with a key/value cache: U + 1 steps (the tokens and the end symbol).
    Per layer the encoder memory is projected to keys and values once (T'·2d²); per step
    the new position's self-attention projections (4d²) and scores/values over the s
    positions so far (2·s·d), cross-attention query and output projections (2d²) and
    scores/values over T' frames (2·T'·d), the feed-forward (2·d·ffn) and the output layer
    d·(V + 1). ``AttentionDecoder._greedy`` re-runs the whole prefix (and the memory
    projections) at every step instead; its count matches this one only for a single step.
    The hybrid model's CTC side head is not used in attention decoding and is not counted.
    """
    kind = spec.decoder
    d = spec.d_model
    if kind == "ctc":
        return _linear(t, d, vocab_size)
    if kind == "rnnt":
        p = spec.pred_dim
        joint = p  # the builder sets joint_dim = pred_dim; the embedding width is pred_dim too
        predictor = _lstm(tokens + 1, p, p, _pred_layers(), 1)
        joiner = (t + tokens) * (d * joint + p * joint + joint * vocab_size)
        return predictor + joiner
    if kind == "attention":
        layers = spec.decoder_layers
        ffn = 4 * d
        steps = tokens + 1
        memory = _linear(t, d, 2 * d)
        per_step = 6 * d * d + 2 * t * d + 2 * d * ffn  # all but the self-attention products
        self_products = sum(2 * s * d for s in range(1, steps + 1))
        per_layer = memory + steps * per_step + self_products
        return layers * per_layer + _linear(steps, d, vocab_size + 1)
    raise ValueError(f"decoder: {kind!r} is unknown")


def _num_samples(seconds: float, sample_rate: int) -> int:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds: expected a positive duration, got {seconds!r}")
    return round(seconds * sample_rate)


def _frontend(spec: ArchSpec, seconds: float) -> tuple[int, int, int]:
    """(MACs, frames, feature width) of the input to the subsampling."""
    cfg = spec.features
    n = _num_samples(seconds, cfg.sample_rate)
    if cfg.kind != "waveform":
        return 0, cfg.num_frames(n), cfg.dim
    fe = _learnable_frontend()  # Conv1d(1, 2F, win, stride=hop) without padding
    frames = max(0, 1 + (n - fe.win) // fe.hop) if n >= fe.win else 0
    return frames * 2 * fe.out_dim * fe.win, frames, fe.out_dim


def _subsampling(
    frames: int, width: int, d: int, factor: int, channels: int, depthwise: bool
) -> tuple[int, int]:
    """(MACs, output frames) of Conv2dSubsampling: valid 2-D convs over (time, frequency),
    the first one from a single input channel, later ones full C → C or depthwise + pointwise,
    then the linear map of the C · F' features of every frame to d."""
    t, f = frames, width
    macs = 0
    for i, (kernel, stride) in enumerate(conv_plan(factor)):
        t, f = int(conv_length(t, kernel, stride)), int(conv_length(f, kernel, stride))
        out = t * f
        if i == 0:
            macs += out * channels * kernel * kernel
        elif depthwise:
            macs += out * channels * kernel * kernel + out * channels * channels
        else:
            macs += out * channels * channels * kernel * kernel
    return macs + _linear(t, channels * f, d), t


def analytic_macs(
    arch: Mapping[str, Any],
    *,
    seconds: float = 5.0,
    vocab_size: int,
    tokens: int | None = None,
) -> MacBreakdown:
    """MACs of one ``seconds``-long utterance (batch 1) through ``SpeechModel(arch)``.

    Computed from the shapes alone (no model is built or run); see the module docstring for
    what counts. ``tokens`` is the number of output tokens the autoregressive decoders emit
    (default ``round(3 * seconds)``, about 3 tokens per second); it does not affect CTC.
    """
    if tokens is None:
        tokens = round(3 * seconds)
    if tokens < 0:
        raise ValueError(f"tokens: expected an integer >= 0, got {tokens!r}")
    spec = decode(arch)
    frontend, frames, width = _frontend(spec, seconds)
    subsampling, t = _subsampling(
        frames,
        width,
        spec.d_model,
        spec.subsampling_factor,
        spec.subsampling_channels,
        spec.depthwise_subsampling,
    )
    return MacBreakdown(
        frontend=frontend,
        subsampling=subsampling,
        encoder=_encoder(spec, t) + _lookahead(spec, t),
        decoder=_decoder(spec, t, vocab_size, tokens),
    )


def subsampling_share(
    arch: Mapping[str, Any],
    *,
    seconds: float = 5.0,
    vocab_size: int,
) -> float:
    """Subsampling MACs / (front end + subsampling + encoder) MACs; the decoder is left out."""
    macs = analytic_macs(arch, seconds=seconds, vocab_size=vocab_size)
    return macs.subsampling / macs.encoder_side if macs.encoder_side else 0.0


# --------------------------------------------------------------------------------------------
# Measured MACs
#
# What FlopCounterMode (torch 2.13, CPU) misses, found by running each block under it:
#
# * Attention through F.scaled_dot_product_attention. On CPU every variant (with a boolean
#   mask, without, is_causal) dispatches to aten._scaled_dot_product_flash_attention_for_cpu,
#   an op with no formula in the registry and no decomposition, so it counts 0. Its formula
#   below is the registry's own for the GPU kernels: QKᵀ plus AV, dense.
# * LSTMs. On CPU in float32 nn.LSTM (plain or packed) runs aten.mkldnn_rnn_layer (oneDNN),
#   once per layer and direction, also uncounted. Formula below: 2 FLOPs per weight per step
#   for the input and recurrent weight matrices (4·(in + h)·h MACs per step). Without oneDNN
#   (torch.backends.mkldnn disabled, or float64) the LSTM decomposes into aten.mm / addmm and
#   is counted, to the same number. The GPU's aten._cudnn_rnn is not registered here
#   (untested on this CPU-only build), so LSTMs measured on CUDA would count 0 in the
#   recurrence.
# Covered correctly without help: linear layers (aten.addmm / mm, the bias add not counted),
# batched matmuls (the relative-position scores), and convolutions including grouped /
# depthwise ones (aten.convolution counts from the weight shape, which is C_in / groups wide).


def _prod(shape: Any) -> int:
    return math.prod(int(s) for s in shape)


def _sdpa_cpu_flop(
    query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
    **kwargs: Any,
) -> int:  # fmt: skip
    """aten._scaled_dot_product_flash_attention_for_cpu: q (..., L, E), k (..., S, E),
    v (..., S, Ev) → 2·L·S·E + 2·L·S·Ev FLOPs per batch × head."""
    *lead, length, e = query_shape
    s = key_shape[-2]
    ev = value_shape[-1]
    return 2 * _prod(lead) * length * s * (e + ev)


def _mkldnn_rnn_layer_flop(
    input_shape: Any, w_ih_shape: Any, w_hh_shape: Any, *args: Any, out_shape: Any = None,
    **kwargs: Any,
) -> int:  # fmt: skip
    """aten.mkldnn_rnn_layer: input (T, B, in) (or packed (N, in)), w_ih (G·h, in),
    w_hh (G·h, h) → 2 FLOPs per weight per step."""
    steps = _prod(input_shape[:-1])
    return 2 * steps * (_prod(w_ih_shape) + _prod(w_hh_shape))


_EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
    torch.ops.aten.mkldnn_rnn_layer: _mkldnn_rnn_layer_flop,
}


def _count(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(MACs, result) of running ``fn`` under FlopCounterMode with the formulas above."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as mode:
        result = fn()
    return mode.get_total_flops() // 2, result


def measured_breakdown(
    model: SpeechModel, feats: torch.Tensor, lengths: torch.Tensor, *, decode: bool = False
) -> MacBreakdown:
    """MACs of ``model`` on ``feats`` (B, T, D) counted by FlopCounterMode, per stage.

    The stages of ``model.encode`` run one at a time (front end, subsampling, encoder), as
    ``EncoderChain`` does. The decoder: the CTC projection for a CTC model; for RNN-T and
    attention decoders nothing by default, since their inference cost depends on the tokens
    they emit. ``decode=True`` counts the decoder's greedy ``decode`` instead, for any
    decoder (see :func:`analytic_macs` for how that relates to the analytic count). Counts
    are for the whole batch.
    """
    parts = {"frontend": 0, "subsampling": 0, "encoder": 0}
    x = (feats - model.cmvn_mean) / model.cmvn_std
    lens = lengths
    for stage in model.encoder.stages:
        macs, (x, lens) = _count(lambda stage=stage, x=x, lens=lens: stage(x, lens))
        if isinstance(stage, LearnableFrontend):
            parts["frontend"] += macs
        elif isinstance(stage, Conv2dSubsampling):
            parts["subsampling"] += macs
        else:
            parts["encoder"] += macs
    decoder = model.decoder
    if decode:
        dec, _ = _count(lambda: decoder.decode(x, lens, beam=1))
    elif isinstance(decoder, CTCDecoder):
        dec, _ = _count(lambda: decoder(x))
    else:
        dec = 0
    return MacBreakdown(decoder=dec, **parts)


def measured_macs(
    model: SpeechModel, feats: torch.Tensor, lengths: torch.Tensor, *, decode: bool = False
) -> int:
    """Total of :func:`measured_breakdown`: ``model.encode`` plus the CTC head (or, with
    ``decode=True``, the decoder's greedy decoding), FLOPs / 2."""
    return measured_breakdown(model, feats, lengths, decode=decode).total
