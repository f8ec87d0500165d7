"""Exports that sherpa-onnx loads as they are: an offline CTC model and its ``tokens.txt``.

sherpa-onnx's offline CTC type for icefall's CTC models (``OfflineRecognizer.from_zipformer_ctc``,
whose loader is not specific to the Zipformer) takes exactly the graph
:func:`speechnas.export.onnx.export_model` writes for a CTC model: inputs features (N, T, C)
float32 and their lengths (N,) int64, outputs log-probabilities (N, T', V) and output lengths
(N,), in that order. It needs no metadata (the vocabulary size is read from the output shape)
and does not normalise the features, which suits speechnas's graphs: CMVN is inside them
(``SpeechModel.cmvn_mean``/``cmvn_std``), so they take raw log-mel frames.

What must agree is the feature definition. sherpa-onnx computes Kaldi filterbanks with
kaldi-native-fbank (Povey window, pre-emphasis, DC removal, no dither, frames not snipped at the
edges, 25/10 ms, 20 Hz to Nyquist - 400 Hz) on samples in [-1, 1]; only the number of bins and
the sample rate are settable. The ``knf80`` frontend computes exactly these features, with
kaldi-native-fbank itself, in training and in the transcriber, so a model trained with it runs
unchanged in sherpa-onnx.

``tokens.txt`` has one ``symbol id`` line per token: ``<blk>`` for the blank (id 0), the space
of a character vocabulary written as ``▁`` (sherpa-onnx turns a leading ``▁`` back into a
space), and SentencePiece pieces as they are. sherpa-onnx joins the symbols of the best path;
speechnas's tokenizers decode to the same text up to leading and trailing spaces (and for BPE,
the unknown piece, which SentencePiece renders as ``⁇``).

What cannot be expressed, and raises a ValueError naming it:

* features other than ``knf80``-style Kaldi filterbanks: speechnas's own ``fbank*``/``mfcc*``
  (Hann window, HTK mel, no pre-emphasis) differ from what sherpa-onnx computes, and the
  learnable frontend reads samples, which sherpa-onnx's CTC models never receive;
* the RNN transducer: sherpa-onnx's transducer formats want icefall's stateless predictor (an
  embedding over the last ``context_size`` tokens) or NeMo's with its own state names and
  metadata; speechnas's predictor is an LSTM with ``h``/``c`` state graphs of its own.

An attention/hybrid model is exported through its CTC head, as ``speechnas export`` does; its
attention decoder is not used. sherpa-onnx writes timestamps assuming a subsampling factor of 4
(text is unaffected). Streaming (``OnlineRecognizer``) exports are not written yet.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from speechnas.data.filters import FeatureConfig
from speechnas.data.tokenizer import BLANK, BPETokenizer, CharTokenizer, Tokenizer
from speechnas.export.metadata import decoder_kind, model_features
from speechnas.export.onnx import export_model
from speechnas.export.quantize import quantize_int8

__all__ = [
    "SHERPA_FEATURES",
    "SherpaExport",
    "check_sherpa",
    "export_sherpa",
    "export_sherpa_model",
    "read_export",
    "sherpa_recognizer",
    "sherpa_tokens",
]

#: The filterbank sherpa-onnx computes for an offline CTC model (``n_mels`` and ``sample_rate``
#: are passed to it as ``feature_dim`` and ``sample_rate``; everything else is fixed).
SHERPA_FEATURES = FeatureConfig(kind="knf", n_mels=80, f_min=20.0, f_max=-400.0)
_FIXED = ("win_ms", "hop_ms", "f_min", "f_max")
#: The symbol sherpa-onnx's CTC decoder takes for the blank.
BLANK_SYMBOL = "<blk>"
_SPACE = "\u2581"  # "▁", which sherpa-onnx reads back as a space


@dataclass(frozen=True, slots=True)
class SherpaExport:
    """What :func:`export_sherpa` wrote: ``model.onnx`` (and ``model.int8.onnx``), ``tokens.txt``,
    the recogniser's settings, and the ONNX export's parity against PyTorch."""

    model: Path
    tokens: Path
    int8_model: Path | None
    feature_dim: int
    sample_rate: int
    parity: dict[str, float]
    sizes: dict[str, int]

    def recognizer_kwargs(self, *, int8: bool = False) -> dict[str, Any]:
        """Keyword arguments of ``sherpa_onnx.OfflineRecognizer.from_zipformer_ctc``."""
        model = self.int8_model if int8 else self.model
        if model is None:
            raise ValueError("int8: this export has no int8 model; export with int8=True")
        return {"model": str(model), "tokens": str(self.tokens),
                "feature_dim": self.feature_dim, "sample_rate": self.sample_rate}  # fmt: skip


def check_sherpa(model: nn.Module, features: FeatureConfig | None = None) -> None:
    """Raises a ValueError saying why ``model`` cannot run in sherpa-onnx, if it cannot."""
    feats = model_features(model, features)
    problems: list[str] = []
    if feats.kind == "waveform":
        problems.append(
            "frontend: the learnable frontend reads waveform samples, and sherpa-onnx's CTC "
            "models are given filterbank frames; train with `frontend: knf80`"
        )
    elif feats.kind != "knf":
        problems.append(
            f"frontend: the model reads speechnas {feats.kind!r} features (Hann window, HTK mel), "
            "not the Kaldi filterbanks sherpa-onnx computes; train with `frontend: knf80`"
        )
    else:
        for name in _FIXED:
            got, want = getattr(feats, name), getattr(SHERPA_FEATURES, name)
            if got != want:
                problems.append(
                    f"features.{name}: {got} differs from sherpa-onnx's fixed {want}; "
                    "use `frontend: knf80`"
                )
    if decoder_kind(model) == "rnnt":
        problems.append(
            "decoder: 'rnnt' has an LSTM predictor with state, and sherpa-onnx's offline "
            "transducer formats want icefall's stateless predictor (or NeMo's, with its own "
            "state names); use `decoder: ctc` (or `attention`, exported through its CTC head), "
            "or `speechnas export` and `speechnas transcribe` for this model"
        )
    if problems:
        raise ValueError("cannot export for sherpa-onnx:\n  " + "\n  ".join(problems))


def sherpa_tokens(tokenizer: Tokenizer) -> list[str]:
    """The symbol of every token id, as ``tokens.txt`` lists them (blank first)."""
    if isinstance(tokenizer, CharTokenizer):
        symbols = [BLANK_SYMBOL]
        for s in tokenizer.symbols[1:]:
            if s == _SPACE or (s != " " and (not s.strip() or any(c.isspace() for c in s))):
                raise ValueError(
                    f"tokenizer: the character {s!r} cannot be written to tokens.txt "
                    "(whitespace other than the space, or '▁', which stands for the space)"
                )
            symbols.append(_SPACE if s == " " else s)
    elif isinstance(tokenizer, BPETokenizer):
        import sentencepiece as spm

        proto = base64.b64decode(tokenizer.to_dict()["model"])
        sp = spm.SentencePieceProcessor(model_proto=proto)
        symbols = [BLANK_SYMBOL, *(sp.id_to_piece(i) for i in range(sp.get_piece_size()))]
    else:
        raise ValueError(f"tokenizer: {type(tokenizer).__name__} is not a char or BPE tokenizer")
    assert len(symbols) == tokenizer.vocab_size and BLANK == 0
    return symbols


def export_sherpa_model(
    model: nn.Module,
    out_dir: str | Path,
    *,
    tokenizer: Tokenizer,
    features: FeatureConfig | None = None,
    int8: bool = True,
    check: bool = True,
) -> SherpaExport:
    """Writes ``model`` for sherpa-onnx's offline CTC recogniser under ``out_dir``.

    ``model.onnx`` is :func:`~speechnas.export.onnx.export_model`'s CTC graph (``check``: its
    parity against PyTorch) with a few informational metadata keys added
    (``sherpa_onnx_model_type``, ``feature_dim``, ``sample_rate``; sherpa-onnx reads none); it
    stays a speechnas export, so ``speechnas transcribe`` decodes it too. ``int8``: also
    ``model.int8.onnx`` (dynamic int8). ``tokens.txt``: see :func:`sherpa_tokens`.
    """
    check_sherpa(model, features)
    symbols = sherpa_tokens(tokenizer)
    if len(symbols) != model.vocab_size:
        raise ValueError(f"tokenizer: {len(symbols)} tokens for a model of {model.vocab_size}")
    out = Path(out_dir)
    result = export_model(model, out, tokenizer=tokenizer, features=features, check=check)
    feats = model_features(model, features)
    path = result.files["model"]
    proto = onnx.load(str(path))
    extra = {"sherpa_onnx_model_type": "zipformer_ctc", "feature_dim": str(feats.n_mels),
             "sample_rate": str(feats.sample_rate)}  # fmt: skip
    for key, value in extra.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    sizes = {path.name: path.stat().st_size}
    int8_path = None
    if int8:
        q = quantize_int8(path, path.with_suffix(".int8.onnx"))
        int8_path, sizes[q.path.name] = q.path, q.int8_bytes
    tokens = out / "tokens.txt"
    tokens.write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)), encoding="utf-8")
    return SherpaExport(
        model=path, tokens=tokens, int8_model=int8_path, feature_dim=feats.n_mels,
        sample_rate=feats.sample_rate, parity=dict(result.parity), sizes=sizes,
    )  # fmt: skip


def export_sherpa(
    checkpoint: str | Path, out_dir: str | Path, *, int8: bool = True, check: bool = True
) -> SherpaExport:
    """Loads a checkpoint folder and exports it for sherpa-onnx (:func:`export_sherpa_model`)."""
    from speechnas.export.metadata import load_float_checkpoint

    loaded = load_float_checkpoint(
        checkpoint,
        "sherpa-onnx cannot read them: export the float checkpoint (the export adds an int8 copy)",
    )
    return export_sherpa_model(
        loaded.model, out_dir, tokenizer=loaded.tokenizer, features=loaded.features,
        int8=int8, check=check,
    )  # fmt: skip


def sherpa_recognizer(
    export: SherpaExport | str | Path, *, threads: int = 1, int8: bool = False
) -> Any:
    """A ``sherpa_onnx.OfflineRecognizer`` (greedy search) over an export, or its folder."""
    import sherpa_onnx

    if not isinstance(export, SherpaExport):
        export = read_export(export)
    return sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
        **export.recognizer_kwargs(int8=int8), num_threads=threads, decoding_method="greedy_search"
    )


def read_export(folder: str | Path) -> SherpaExport:
    """The :class:`SherpaExport` of a folder :func:`export_sherpa` wrote."""
    folder = Path(folder)
    model, tokens = folder / "model.onnx", folder / "tokens.txt"
    for p in (model, tokens):
        if not p.is_file():
            raise ValueError(f"export: {p} is missing; write the folder with export_sherpa")
    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    if meta.get("sherpa_onnx_model_type") != "zipformer_ctc":
        raise ValueError(f"export: {model} was not written by export_sherpa")
    feats = json.loads(meta["features"])
    int8 = folder / "model.int8.onnx"
    return SherpaExport(
        model=model, tokens=tokens, int8_model=int8 if int8.is_file() else None,
        feature_dim=int(meta["feature_dim"]), sample_rate=int(feats["sample_rate"]), parity={},
        sizes={p.name: p.stat().st_size for p in (model, int8) if p.is_file()},
    )  # fmt: skip
