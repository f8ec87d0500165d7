"""Speech to text with an exported model and no PyTorch: numpy, soundfile and ONNX Runtime.

The exported file says what it needs (``speechnas.export.onnx`` writes the metadata): the
features are computed in numpy exactly as in training, the graph runs in ONNX Runtime, and
greedy decoding (CTC best path, or transducer search over the three RNN-T graphs) runs in numpy.
Nothing on this module's import path imports torch; soxr is imported only to resample audio
whose rate differs from the model's.

>>> t = Transcriber("export/model.onnx", threads=1)
>>> t.transcribe_file("hello.flac").text
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import soundfile as sf

from speechnas.data.filters import FeatureConfig
from speechnas.export.features_np import compute_features

__all__ = [
    "Transcriber",
    "Transcript",
    "ctc_greedy",
    "read_metadata",
    "score_manifest",
    "session_options",
]


@dataclass(frozen=True, slots=True)
class Transcript:
    """One utterance: text, token ids, and where the time went (seconds)."""

    text: str
    tokens: tuple[int, ...]
    audio_seconds: float
    feature_seconds: float
    model_seconds: float
    decode_seconds: float

    @property
    def compute_seconds(self) -> float:
        return self.feature_seconds + self.model_seconds + self.decode_seconds

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time / audio duration."""
        return self.compute_seconds / max(self.audio_seconds, 1e-9)


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Single-stream CPU inference: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, all graph optimisations."""
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected a positive integer, got {threads!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (read through ONNX Runtime)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def ctc_greedy(log_probs: np.ndarray, length: int, blank: int = 0) -> list[int]:
    """Best path of one utterance: argmax per frame, merge repeats, drop blanks. (T, V) → ids."""
    best = log_probs[:length].argmax(axis=-1)
    keep = np.ones(best.shape, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(i) for i in best[keep & (best != blank)]]


def _read_audio(
    path: Path, sample_rate: int, offset: float = 0.0, duration: float | None = None
) -> np.ndarray:
    """float32 mono in [-1, 1] at ``sample_rate``, as ``speechnas.data.audio.read_audio``."""
    with sf.SoundFile(path) as f:
        sr_in = int(f.samplerate)
        start = round(offset * sr_in)
        stop = f.frames
        if duration is not None:
            stop = min(stop, start + max(1, round(duration * sr_in)))
        f.seek(start)
        data = f.read(stop - start, dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError(f"{path}: no audio in [{offset}, {offset + (duration or 0)}) s")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if sr_in != sample_rate:
        import soxr  # only here: most audio already has the model's rate

        mono = soxr.resample(mono, sr_in, sample_rate, quality="HQ")
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def _graph_paths(model: Path) -> dict[str, Path]:
    """model.onnx, or the three transducer graphs next to an encoder (or in a folder)."""
    folder = model if model.is_dir() else model.parent
    if model.is_dir():
        model = next(
            (folder / n for n in ("model.onnx", "encoder.onnx") if (folder / n).is_file()),
            folder / "model.onnx",
        )
    if not model.is_file():
        raise ValueError(f"model: {model} is not an ONNX file")
    meta = read_metadata(model)
    if meta.get("decoding") != "rnnt":
        return {"model": model}
    suffix = model.name.removeprefix(meta.get("graph", "encoder"))  # ".onnx" or ".int8.onnx"
    paths = {g: folder / f"{g}{suffix}" for g in ("encoder", "predictor", "joiner")}
    for g, p in paths.items():
        if not p.is_file():
            raise ValueError(f"model: the transducer graph {g!r} is missing: {p}")
    return paths


class Transcriber:
    """Greedy speech recognition with an exported model.

    ``model`` is a ``model.onnx`` (CTC), any of the three transducer graphs (the others are
    found beside it, in the same precision), or the export folder. ``threads`` sets ONNX
    Runtime's intra-op threads.
    """

    def __init__(self, model: str | Path, *, threads: int = 1) -> None:
        opts = session_options(threads)
        self.paths = _graph_paths(Path(model))
        self.sessions = {
            g: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            for g, p in self.paths.items()
        }
        first = next(iter(self.sessions.values()))
        self.metadata: dict[str, str] = dict(first.get_modelmeta().custom_metadata_map)
        meta = self.metadata
        if "features" not in meta or "decoding" not in meta:
            raise ValueError(f"model: {self.paths} has no speechnas metadata (features, decoding)")
        if "vocabulary" not in meta:
            raise ValueError(f"model: {self.paths} was exported without a vocabulary")
        from speechnas.data.tokenizer import tokenizer_from_dict  # sentencepiece, no torch

        self.tokenizer = tokenizer_from_dict(json.loads(meta["vocabulary"]))
        self.features = FeatureConfig(**json.loads(meta["features"]))
        self.decoding = meta["decoding"]
        self.blank = int(meta.get("blank_id", "0"))
        self.min_length = int(meta.get("min_input_length", "1"))
        self._input = first.get_inputs()[0].name

    def transcribe_wave(self, wave: np.ndarray) -> Transcript:
        """wave (N,) float32 at ``self.features.sample_rate`` → transcript."""
        start = time.perf_counter()
        feats, n = compute_features(wave, self.features)
        out = self.transcribe_features(feats, n)
        return dataclasses.replace(
            out,
            audio_seconds=len(wave) / self.features.sample_rate,
            feature_seconds=time.perf_counter() - start - out.model_seconds - out.decode_seconds,
        )

    def transcribe_features(self, feats: np.ndarray, length: int) -> Transcript:
        """Model input of one utterance, features (T, F) or samples (N,), with ``length``
        valid frames → transcript (its audio duration taken from ``length``)."""
        if feats.shape[0] < self.min_length:  # too short for one output frame: pad, n stays
            pad = [(0, self.min_length - feats.shape[0])] + [(0, 0)] * (feats.ndim - 1)
            feats = np.pad(feats, pad)
        inputs = {self._input: feats[None], "lengths": np.array([length], dtype=np.int64)}
        start = time.perf_counter()
        if self.decoding == "rnnt":
            enc, enc_len = self.sessions["encoder"].run(None, inputs)
            t_model = time.perf_counter()
            ids = self._rnnt_greedy(enc[0, : int(enc_len[0])])
        else:
            log_probs, out_len = self.sessions["model"].run(None, inputs)
            t_model = time.perf_counter()
            ids = ctc_greedy(log_probs[0], int(out_len[0]), self.blank)
        end = time.perf_counter()
        cfg = self.features
        hop = 1 if cfg.kind == "waveform" else cfg.hop
        return Transcript(
            text=self.tokenizer.decode(ids),
            tokens=tuple(ids),
            audio_seconds=length * hop / cfg.sample_rate,
            feature_seconds=0.0,
            model_seconds=t_model - start,
            decode_seconds=end - t_model,
        )

    def transcribe_file(
        self, path: str | Path, *, offset: float = 0.0, duration: float | None = None
    ) -> Transcript:
        """An audio file (any format libsndfile reads), or a span of it, → transcript."""
        wave = _read_audio(Path(path), self.features.sample_rate, offset, duration)
        return self.transcribe_wave(wave)

    def _rnnt_greedy(self, enc: np.ndarray) -> list[int]:
        """Greedy transducer search over enc (T, D), at most ``max_symbols`` tokens a frame;
        the same search as ``RNNTDecoder`` with beam 1."""
        meta = self.metadata
        layers, hidden = int(meta["pred_layers"]), int(meta["pred_hidden"])
        max_symbols = int(meta["max_symbols"])
        predictor, joiner = self.sessions["predictor"], self.sessions["joiner"]

        def predict(token: int, h: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
            return predictor.run(None, {"token": np.array([token], dtype=np.int64), "h": h, "c": c})

        zeros = np.zeros((layers, 1, hidden), dtype=np.float32)
        pred, h, c = predict(self.blank, zeros, zeros)
        ids: list[int] = []
        for t in range(enc.shape[0]):
            frame = enc[t : t + 1]
            for _ in range(max_symbols):
                (logits,) = joiner.run(None, {"enc": frame, "pred": pred})
                best = int(logits[0].argmax())
                if best == self.blank:
                    break
                ids.append(best)
                pred, h, c = predict(best, h, c)
        return ids


def score_manifest(
    transcriber: Transcriber, manifest: str | Path, *, limit: int | None = None
) -> dict[str, Any]:
    """WER/CER (texts normalised as in training), pooled RTF, and the normalised references
    and hypotheses of a corpus (JSONL manifest or Kaldi data dir)."""
    from speechnas.data.manifest import load_corpus
    from speechnas.data.synth.text import normalize_text
    from speechnas.evaluate.metrics import error_rates

    utts = list(load_corpus(manifest).utterances)[:limit]
    refs = [normalize_text(u.text) for u in utts]
    results = [
        transcriber.transcribe_file(u.audio_path, offset=u.offset, duration=u.duration)
        for u in utts
    ]
    rates = error_rates(refs, [r.text for r in results])
    audio = sum(r.audio_seconds for r in results)
    compute = sum(r.compute_seconds for r in results)
    return {
        **rates.to_dict(),
        "rtf": compute / max(audio, 1e-9),
        "audio_seconds": audio,
        "references": refs,
        "hypotheses": [r.text for r in results],
        "ids": [u.id for u in utts],
    }
