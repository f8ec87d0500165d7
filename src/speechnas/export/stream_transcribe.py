"""Streaming speech to text with an exported streaming model and no PyTorch.

Audio arrives in pieces of any size (:meth:`StreamingTranscriber.accept`); features are computed
incrementally (a frame as soon as its samples are in); a chunk runs through ``stream.onnx``
(``speechnas.export.streaming``) as soon as its window of feature frames — chunk, look-ahead and
the subsampling's context — is complete, with the states the previous chunk returned; greedy CTC
carries its last token across chunks, so the partial text only grows. :meth:`finish` runs the
last, shorter chunk. Each chunk's compute time is recorded for latency figures.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from speechnas.data.filters import FeatureConfig, kaldi_frames, kaldi_online_fbank
from speechnas.export.features_np import compute_features
from speechnas.export.transcribe import _read_audio, session_options

__all__ = [
    "IncrementalFeatures",
    "StreamTranscript",
    "StreamingTranscriber",
    "score_stream_manifest",
]


class IncrementalFeatures:
    """Feature frames of a growing waveform, each frame once, as soon as its samples have
    arrived; with :meth:`finish`, together the frames :func:`compute_features` gives for the
    whole waveform. Filterbank/MFCC frames (``n_fft`` samples from ``t · hop``) are final when
    their samples are in; Kaldi filterbanks (kind "knf") come from kaldi-native-fbank's own
    online extractor, whose last frames (reflected at the end) wait for :meth:`finish`."""

    def __init__(self, cfg: FeatureConfig) -> None:
        if cfg.kind not in ("fbank", "mfcc", "knf"):
            raise ValueError(
                f"features: kind {cfg.kind!r} is not computed incrementally yet; streaming "
                "models need fbank, mfcc or knf features"
            )
        self.cfg = cfg
        self.samples = np.zeros(0, dtype=np.float32)
        self.start = 0  # sample index of self.samples[0]
        self.frames = 0  # frames emitted so far
        self.kaldi = kaldi_online_fbank(cfg) if cfg.kind == "knf" else None

    def accept(self, wave: np.ndarray) -> np.ndarray:
        """More samples (N,) → the frames they complete (n, F), possibly none."""
        cfg = self.cfg
        if self.kaldi is not None:
            self.kaldi.accept_waveform(float(cfg.sample_rate), np.asarray(wave, np.float32))
            return self._kaldi_frames()
        self.samples = np.concatenate([self.samples, np.asarray(wave, dtype=np.float32)])
        total = self.start + len(self.samples)
        ready = cfg.num_frames(total)
        if ready <= self.frames:
            return np.zeros((0, cfg.dim), dtype=np.float32)
        first = self.frames * cfg.hop - self.start
        last = (ready - 1) * cfg.hop + cfg.n_fft - self.start
        feats, _ = compute_features(self.samples[first:last], cfg)
        self.frames = ready
        keep = self.frames * cfg.hop  # samples before the next frame's start are done with
        self.samples = self.samples[keep - self.start :]
        self.start = keep
        return feats

    def finish(self) -> np.ndarray:
        """The end of the waveform → the frames that waited for it (n, F), possibly none."""
        if self.kaldi is None:
            return np.zeros((0, self.cfg.dim), dtype=np.float32)
        self.kaldi.input_finished()
        return self._kaldi_frames()

    def _kaldi_frames(self) -> np.ndarray:
        assert self.kaldi is not None
        feats = kaldi_frames(self.kaldi, self.frames, self.cfg)
        self.frames += len(feats)
        return feats


@dataclass
class StreamTranscript:
    text: str
    tokens: list[int]
    partials: list[tuple[float, str]]  # (audio ms when the chunk could run, text after it)
    chunk_seconds: list[float] = field(default_factory=list)  # compute time of each chunk
    audio_seconds: float = 0.0

    @property
    def compute_seconds(self) -> float:
        return sum(self.chunk_seconds)

    @property
    def rtf(self) -> float:
        return self.compute_seconds / max(self.audio_seconds, 1e-9)


class StreamingTranscriber:
    """One stream at a time through ``stream.onnx``: :meth:`accept` audio, then :meth:`finish`
    (which also resets for the next stream); :meth:`transcribe_file` does both for a file."""

    def __init__(self, model: str | Path, *, threads: int = 1) -> None:
        path = Path(model)
        if path.is_dir():
            path = path / "stream.onnx"
        if not path.is_file():
            raise ValueError(
                f"model: {path} does not exist; export one with "
                "`speechnas export --checkpoint C --output D --streaming`"
            )
        self.session = ort.InferenceSession(
            str(path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if meta.get("streaming") != "1":
            raise ValueError(f"model: {path} is not a streaming export (no `streaming` metadata)")
        from speechnas.data.tokenizer import tokenizer_from_dict  # no torch

        self.metadata = meta
        self.tokenizer = tokenizer_from_dict(json.loads(meta["vocabulary"]))
        self.features = FeatureConfig(**json.loads(meta["features"]))
        self.blank = int(meta.get("blank_id", "0"))
        self.chunk = int(meta["stream_chunk"])
        self.lookahead = int(meta["stream_lookahead"])
        self.window = int(meta["stream_window"])
        self.hop = int(meta["stream_hop"])
        self.factor = int(meta["subsampling_factor"])
        self.receptive = self.window - (self.chunk + self.lookahead - 1) * self.factor
        self.state_shapes: dict[str, list[int]] = json.loads(meta["stream_states"])
        self.reset()

    def reset(self) -> None:
        self.incremental = IncrementalFeatures(self.features)
        self.feats = np.zeros((0, self.features.dim), dtype=np.float32)
        self.feats_start = 0  # feature frame index of self.feats[0]
        self.next_chunk = 0
        self.states = {
            n: np.zeros(s, dtype=np.int64 if n == "offset" else np.float32)
            for n, s in self.state_shapes.items()
        }
        self.tokens: list[int] = []
        self.prev = self.blank
        self.partials: list[tuple[float, str]] = []
        self.chunk_seconds: list[float] = []
        self.samples = 0

    def accept(self, wave: np.ndarray) -> str:
        """More audio (N,) float32 at the model's rate → the partial text so far."""
        self.samples += len(wave)
        new = self.incremental.accept(wave)
        self.feats = np.concatenate([self.feats, new])
        while self._frames_in() >= self.next_chunk * self.hop + self.window:
            self._run(self.chunk + self.lookahead)
        return self.tokenizer.decode(self.tokens)

    def finish(self) -> StreamTranscript:
        """Runs what is left of the stream and returns its transcript; then resets."""
        self.feats = np.concatenate([self.feats, self.incremental.finish()])
        total = self._frames_in()
        n_enc = (total - self.receptive) // self.factor + 1 if total >= self.receptive else 0
        while self.next_chunk * self.chunk < n_enc:
            self._run(min(n_enc - self.next_chunk * self.chunk, self.chunk + self.lookahead))
        out = StreamTranscript(
            text=self.tokenizer.decode(self.tokens),
            tokens=list(self.tokens),
            partials=list(self.partials),
            chunk_seconds=list(self.chunk_seconds),
            audio_seconds=self.samples / self.features.sample_rate,
        )
        self.reset()
        return out

    def transcribe_file(
        self, path: str | Path, *, piece_ms: float | None = None
    ) -> StreamTranscript:
        """Feeds a file in pieces of ``piece_ms`` (default: one chunk of audio) and finishes."""
        wave = _read_audio(Path(path), self.features.sample_rate, 0.0, None)
        ms = piece_ms or self.hop * self.features.hop_ms
        step = max(1, round(ms * self.features.sample_rate / 1000))
        for i in range(0, len(wave), step):
            self.accept(wave[i : i + step])
        return self.finish()

    def _frames_in(self) -> int:
        return self.feats_start + len(self.feats)

    def _run(self, valid: int) -> None:
        lo = self.next_chunk * self.hop - self.feats_start
        window = self.feats[lo : lo + self.window]
        if len(window) < self.window:
            window = np.pad(window, ((0, self.window - len(window)), (0, 0)))
        start = time.perf_counter()
        outs = self.session.run(
            None,
            {"window": window[None], "valid": np.array([valid], dtype=np.int64), **self.states},
        )
        log_probs, n = outs[0][0], int(outs[1][0])
        self.states = dict(zip(self.state_shapes, outs[2:], strict=True))
        for t in log_probs[:n].argmax(-1).tolist():
            if t != self.prev and t != self.blank:
                self.tokens.append(t)
            self.prev = t
        self.chunk_seconds.append(time.perf_counter() - start)
        last_frame = min(self.next_chunk * self.hop + self.window, self._frames_in())
        cfg = self.features
        ready_ms = (last_frame - 1) * cfg.hop_ms + 1000 * cfg.n_fft / cfg.sample_rate
        self.partials.append((ready_ms, self.tokenizer.decode(self.tokens)))
        self.next_chunk += 1
        drop = self.next_chunk * self.hop - self.feats_start  # frames no later window needs
        if drop > 0:
            self.feats = self.feats[drop:]
            self.feats_start += drop


def score_stream_manifest(
    transcriber: StreamingTranscriber, manifest: str | Path, *, limit: int | None = None
) -> dict[str, Any]:
    """Streaming WER/CER of a corpus, pooled RTF, and the per-chunk compute time (median and
    90th percentile over every chunk of every utterance, ms)."""
    from speechnas.data.manifest import load_corpus
    from speechnas.data.synth.text import normalize_text
    from speechnas.evaluate.metrics import error_rates

    utts = list(load_corpus(manifest).utterances)[:limit]
    refs = [normalize_text(u.text) for u in utts]
    results = []
    for u in utts:
        wave = _read_audio(Path(u.audio_path), transcriber.features.sample_rate, u.offset,
                           u.duration)  # fmt: skip
        step = transcriber.hop * transcriber.features.hop  # one chunk of audio at a time
        for i in range(0, len(wave), step):
            transcriber.accept(wave[i : i + step])
        results.append(transcriber.finish())
    rates = error_rates(refs, [r.text for r in results])
    chunk_ms = np.array([1000 * s for r in results for s in r.chunk_seconds])
    audio = sum(r.audio_seconds for r in results)
    return {
        **rates.to_dict(),
        "rtf": sum(r.compute_seconds for r in results) / max(audio, 1e-9),
        "chunk_ms_p50": float(np.percentile(chunk_ms, 50)) if len(chunk_ms) else 0.0,
        "chunk_ms_p90": float(np.percentile(chunk_ms, 90)) if len(chunk_ms) else 0.0,
        "audio_seconds": audio,
        "hypotheses": [r.text for r in results],
        "ids": [u.id for u in utts],
    }
