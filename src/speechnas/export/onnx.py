"""Whole speech models as ONNX graphs that describe themselves, checked against PyTorch.

A CTC model (and an attention/hybrid one, through its CTC head) becomes one graph
``model.onnx``; an RNN transducer becomes three (``encoder.onnx``, ``predictor.onnx``,
``joiner.onnx``) so that greedy transducer search can run in numpy around them. CMVN is inside
every encoder graph, the batch and time axes are symbolic, and every file carries the metadata
the standalone transcriber needs (vocabulary, feature config, subsampling, decoder, blank id,
architecture, speechnas version) in its ``metadata_props``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from speechnas.data.filters import FeatureConfig
from speechnas.data.tokenizer import BLANK, Tokenizer
from speechnas.export.graph import export_module
from speechnas.export.metadata import model_features, model_metadata
from speechnas.nn.build import SpeechModel
from speechnas.nn.decoders import AttentionDecoder, RNNTDecoder

__all__ = ["ExportResult", "export_checkpoint", "export_model"]


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    ``files`` maps a graph name ("model", or "encoder"/"predictor"/"joiner") to its path;
    ``parity`` maps "graph/output" to the largest absolute difference between ONNX Runtime and
    eager PyTorch on valid frames (empty without the check); ``sizes`` maps file names (fp32 and
    int8) to bytes; ``metadata`` is what every file carries besides its own "graph" entry.
    """

    files: dict[str, Path]
    parity: dict[str, float]
    sizes: dict[str, int]
    metadata: dict[str, str]
    int8_files: dict[str, Path] = field(default_factory=dict)

    @property
    def max_parity(self) -> float:
        return max(self.parity.values(), default=0.0)


# --------------------------------------------------------------------------------------------
# Graph wrappers: plain tensors in, plain tensors out.
# --------------------------------------------------------------------------------------------


class _Encoder(nn.Module):
    """features (B, T, F) or waveform (B, N), lengths (B,) → encoder output (B, T', D), (B,)."""

    def __init__(self, model: nn.Module, *, waveform: bool) -> None:
        super().__init__()
        self.model = model
        self.waveform = waveform

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.waveform:
            x = x[..., None]  # the learnable frontend takes (B, N, 1)
        return self.model.encode(x, lengths)


class _CTC(_Encoder):
    """features/waveform, lengths → CTC log-probabilities (B, T', V), lengths (B,)."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc, lengths = super().forward(x, lengths)
        decoder = self.model.decoder
        head = decoder.ctc if isinstance(decoder, AttentionDecoder) else decoder
        return head(enc), lengths


class _Predictor(nn.Module):
    """previous token (B,), LSTM state h, c (L, B, H) → prediction (B, H), new h, new c."""

    def __init__(self, decoder: RNNTDecoder) -> None:
        super().__init__()
        self.predictor = decoder.predictor

    def forward(
        self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (h, c) = self.predictor.step(token, (h, c))
        return out, h, c


class _Joiner(nn.Module):
    """encoder frame (B, D), prediction (B, H) → logits (B, V)."""

    def __init__(self, decoder: RNNTDecoder) -> None:
        super().__init__()
        self.joiner = decoder.joiner

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return self.joiner(enc, pred)


# --------------------------------------------------------------------------------------------
# Export and parity
# --------------------------------------------------------------------------------------------


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))


def _sequence_parity(
    module: nn.Module, path: Path, inputs: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[float, float]:
    """Max |ORT - torch| of the (B, T', ·) output over valid frames, and of the lengths."""
    session = _session(path)
    names = [i.name for i in session.get_inputs()]
    worst_out = worst_len = 0.0
    for x, lengths in inputs:
        with torch.no_grad():
            y, y_len = module(x, lengths)
        o, o_len = session.run(None, {names[0]: x.numpy(), names[1]: lengths.numpy()})
        worst_len = max(worst_len, _max_diff(o_len, y_len.numpy()))
        if o.shape != tuple(y.shape):
            return float("inf"), worst_len
        for b, n in enumerate(y_len.tolist()):
            worst_out = max(worst_out, _max_diff(o[b, :n], y[b, :n].numpy()))
    return worst_out, worst_len


def _example(
    model: nn.Module, feats: FeatureConfig, lengths: list[int], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random inputs at the model's input scale, zero beyond each length."""
    t = max(lengths)
    if feats.kind == "waveform":
        x = 0.1 * torch.randn(len(lengths), t, generator=gen)
    else:
        x = torch.randn(len(lengths), t, feats.dim, generator=gen)
        x = model.cmvn_mean + model.cmvn_std * x
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x, torch.tensor(lengths, dtype=torch.long)


def _write(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    names: tuple[list[str], list[str]],
    axes: dict[str, dict[int, str]],
    metadata: dict[str, str],
) -> Path:
    return export_module(
        module, inputs, path, input_names=names[0], output_names=names[1], dynamic_axes=axes,
        metadata=metadata,
    )  # fmt: skip


def export_model(
    model: nn.Module,
    out_dir: str | Path,
    *,
    tokenizer: Tokenizer | None = None,
    example_seconds: float = 4.0,
    check: bool = True,
    int8: bool = False,
    features: FeatureConfig | None = None,
) -> ExportResult:
    """Writes ``model`` (a ``SpeechModel`` of any architecture) as ONNX graphs under ``out_dir``.

    CTC and attention/hybrid models: ``model.onnx`` with inputs ``features`` (B, T, F) float32
    (``waveform`` (B, N) for the learnable frontend) and ``lengths`` (B,) int64, outputs
    ``log_probs`` (B, T', V) and ``out_lengths`` (B,). An attention/hybrid model is exported
    through its CTC head, for greedy CTC decoding; its attention decoder is not exported.
    Streaming models export their full-utterance forward with chunk masks.

    RNN-T models: ``encoder.onnx`` (features/waveform, lengths → ``encodings`` (B, T', D),
    ``out_lengths``), ``predictor.onnx`` (``token`` (B,) int64, ``h``, ``c`` (L, B, H) →
    ``pred`` (B, H), ``h_out``, ``c_out``; zeros are the start state, blank the start token)
    and ``joiner.onnx`` (``enc`` (B, D), ``pred`` (B, H) → ``logits`` (B, V)).

    The graphs are traced at ``example_seconds`` of input (batch 2, unequal lengths). With
    ``check``, ONNX Runtime and eager PyTorch are compared on inputs of other lengths (batch 2
    with unequal lengths, and batch 1); with ``int8``, each graph is also written quantised
    as ``<name>.int8.onnx``. ``features``, when given, must be the model's own (a check).
    """
    from speechnas.export.quantize import quantize_int8

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feats = model_features(model, features)
    meta = model_metadata(model, tokenizer=tokenizer, features=feats)
    waveform = feats.kind == "waveform"
    in_name = "waveform" if waveform else "features"
    in_axes = {0: "batch", 1: "samples" if waveform else "time"}
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(0)
    n = feats.sample_rate * example_seconds
    t_trace = int(n) if waveform else feats.num_frames(int(n))
    t_trace = max(t_trace, 2 * int(meta["min_input_length"]))
    trace = _example(model, feats, [t_trace, t_trace - t_trace // 5], gen)
    t_check = t_trace * 3 // 5 + 7  # any length but the traced one
    t_check += t_check == t_trace
    checks = [
        _example(model, feats, [t_check, t_check * 2 // 3], gen),
        _example(model, feats, [t_check + 13], gen),
    ]
    files: dict[str, Path] = {}
    parity: dict[str, float] = {}
    try:
        if meta["decoding"] == "ctc":
            module = _CTC(model, waveform=waveform).eval()
            files["model"] = _write(
                module, trace, out / "model.onnx",
                ([in_name, "lengths"], ["log_probs", "out_lengths"]),
                {in_name: in_axes, "lengths": {0: "batch"},
                 "log_probs": {0: "batch", 1: "frames"}, "out_lengths": {0: "batch"}},
                {**meta, "graph": "model"},
            )  # fmt: skip
            if check:
                lp, ln = _sequence_parity(module, files["model"], checks)
                parity.update({"model/log_probs": lp, "model/out_lengths": ln})
        else:
            files.update(_export_rnnt(model, out, meta, trace, in_name, in_axes, waveform))
            if check:
                parity.update(_rnnt_parity(model, files, checks, waveform, gen))
    finally:
        model.train(was_training)
    sizes = {p.name: p.stat().st_size for p in files.values()}
    int8_files: dict[str, Path] = {}
    if int8:
        for name, path in files.items():
            q = quantize_int8(path, path.with_suffix(".int8.onnx"))
            int8_files[name] = q.path
            sizes[q.path.name] = q.int8_bytes
    return ExportResult(
        files=files, parity=parity, sizes=sizes, metadata=meta, int8_files=int8_files
    )


def _export_rnnt(
    model: SpeechModel,
    out: Path,
    meta: dict[str, str],
    trace: tuple[torch.Tensor, torch.Tensor],
    in_name: str,
    in_axes: dict[int, str],
    waveform: bool,
) -> dict[str, Path]:
    decoder: RNNTDecoder = model.decoder
    layers, hidden = int(meta["pred_layers"]), int(meta["pred_hidden"])
    d = model.encoder.out_dim
    files = {
        "encoder": _write(
            _Encoder(model, waveform=waveform).eval(), trace, out / "encoder.onnx",
            ([in_name, "lengths"], ["encodings", "out_lengths"]),
            {in_name: in_axes, "lengths": {0: "batch"},
             "encodings": {0: "batch", 1: "frames"}, "out_lengths": {0: "batch"}},
            {**meta, "graph": "encoder"},
        ),
        "predictor": _write(
            _Predictor(decoder).eval(),
            (torch.tensor([BLANK, 1]), *[torch.zeros(layers, 2, hidden)] * 2),
            out / "predictor.onnx",
            (["token", "h", "c"], ["pred", "h_out", "c_out"]),
            {"token": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"}, "pred": {0: "batch"},
             "h_out": {1: "batch"}, "c_out": {1: "batch"}},
            {**meta, "graph": "predictor"},
        ),
        "joiner": _write(
            _Joiner(decoder).eval(), (torch.zeros(2, d), torch.zeros(2, hidden)),
            out / "joiner.onnx",
            (["enc", "pred"], ["logits"]),
            {"enc": {0: "batch"}, "pred": {0: "batch"}, "logits": {0: "batch"}},
            {**meta, "graph": "joiner"},
        ),
    }  # fmt: skip
    return files


def _rnnt_parity(
    model: SpeechModel,
    files: dict[str, Path],
    checks: list[tuple[torch.Tensor, torch.Tensor]],
    waveform: bool,
    gen: torch.Generator,
) -> dict[str, float]:
    decoder: RNNTDecoder = model.decoder
    enc_diff, len_diff = _sequence_parity(
        _Encoder(model, waveform=waveform).eval(), files["encoder"], checks
    )
    lstm = decoder.predictor.lstm
    b = 3  # a batch size other than the traced one
    token = torch.randint(0, model.vocab_size, (b,), generator=gen)
    h = torch.randn(lstm.num_layers, b, lstm.hidden_size, generator=gen)
    c = torch.randn(lstm.num_layers, b, lstm.hidden_size, generator=gen)
    with torch.no_grad():
        expected = _Predictor(decoder).eval()(token, h, c)
    got = _session(files["predictor"]).run(
        None, {"token": token.numpy(), "h": h.numpy(), "c": c.numpy()}
    )
    pred_diff = max(_max_diff(g, e.numpy()) for g, e in zip(got, expected, strict=True))
    enc = torch.randn(b, model.encoder.out_dim, generator=gen)
    with torch.no_grad():
        logits = _Joiner(decoder).eval()(enc, expected[0])
    (got_logits,) = _session(files["joiner"]).run(
        None, {"enc": enc.numpy(), "pred": expected[0].numpy()}
    )
    return {
        "encoder/encodings": enc_diff,
        "encoder/out_lengths": len_diff,
        "predictor/pred_state": pred_diff,
        "joiner/logits": _max_diff(got_logits, logits.numpy()),
    }


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    int8: bool = False,
    check: bool = True,
    example_seconds: float = 4.0,
    attention_impl: str | None = None,
) -> ExportResult:
    """Loads a checkpoint folder (``speechnas.train.checkpoint``) and exports its model with
    its tokenizer and feature config; with ``attention_impl``, under that attention
    implementation (the same weights and outputs, another graph)."""
    from speechnas.nn.build import with_attention_impl
    from speechnas.train.checkpoint import load_model

    loaded = load_model(checkpoint)
    model = loaded.model
    if attention_impl is not None:
        model = with_attention_impl(model, attention_impl)
    return export_model(
        model, out_dir, tokenizer=loaded.tokenizer, features=loaded.features,
        example_seconds=example_seconds, check=check, int8=int8,
    )  # fmt: skip
