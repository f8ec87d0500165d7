"""Streaming decoding: the encoder runs chunk by chunk, the search carries its state across
chunks, and every token gets the time it was emitted.

CTC (greedy, or prefix beam search through :class:`CTCPrefixBeam`) and RNN-T greedy decode
incrementally; a hybrid CTC/attention model streams through its CTC head (attention rescoring
needs the whole utterance). The emission time of a token is the audio (ms) that had arrived
when the chunk after which the partial result's first tokens settled on the final ones could
run; its delay is measured against a reference time per token, by default the position of the
token on the full-context CTC path of a model (:func:`ctc_token_times`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from speechnas.data.dataset import SpeechDataset
from speechnas.evaluate.decode import prepare_batches
from speechnas.evaluate.metrics import ErrorRates, error_rates
from speechnas.nn.build import SpeechModel
from speechnas.nn.decoders.attention import AttentionDecoder
from speechnas.nn.decoders.base import BLANK
from speechnas.nn.decoders.ctc import CTCDecoder, CTCPrefixBeam
from speechnas.nn.decoders.rnnt import RNNTDecoder
from speechnas.nn.streaming import StreamedEncoding, chunk_ready_ms, stream_encode

__all__ = [
    "DelayStats",
    "StreamingEvaluation",
    "ctc_token_times",
    "emission_delays",
    "emission_times",
    "evaluate_streaming",
    "stream_decode",
]


def _ctc_head(model: SpeechModel) -> CTCDecoder | None:
    dec = model.decoder
    if isinstance(dec, CTCDecoder):
        return dec
    if isinstance(dec, AttentionDecoder):
        return dec.ctc
    return None


def stream_decode(
    model: SpeechModel, streamed: StreamedEncoding, *, beam: int = 1
) -> list[list[list[int]]]:
    """Per utterance, the partial result after each of its chunks (the last is the result)."""
    c = streamed.chunk
    b = streamed.enc.shape[0]
    counts = [len(r) for r in streamed.ready_ms]
    chunks = max(counts, default=0)
    partials: list[list[list[int]]] = [[] for _ in range(b)]
    ctc = _ctc_head(model)
    if isinstance(model.decoder, RNNTDecoder):
        if beam != 1:
            raise ValueError("stream_decode: RNN-T streams with greedy search only (beam=1)")
        search = model.decoder.greedy_start(b)
        for i in range(chunks):
            enc = streamed.enc[:, i * c : (i + 1) * c]
            lens = (streamed.lengths - i * c).clamp(0, c)
            search = model.decoder.greedy_step(enc, lens, search)
            for u in range(b):
                if i < counts[u]:
                    partials[u].append(list(search.hyps[u]))
        return partials
    if ctc is None:
        raise ValueError(f"stream_decode: no streaming search for {type(model.decoder).__name__}")
    log_probs = ctc(streamed.enc)  # (B, T', V): per frame, so chunking changes nothing
    for u in range(b):
        n = int(streamed.lengths[u])
        if beam == 1:
            best = log_probs[u, :n].argmax(-1).tolist()
            tokens: list[int] = []
            prev = BLANK
            for i in range(counts[u]):
                for t in best[i * c : (i + 1) * c]:
                    if t != prev and t != BLANK:
                        tokens.append(t)
                    prev = t
                partials[u].append(list(tokens))
        else:
            search = CTCPrefixBeam(beam)
            for i in range(counts[u]):
                partials[u].append(search.step(log_probs[u, i * c : min((i + 1) * c, n)]).best())
    return partials


def emission_times(partials: Sequence[Sequence[int]], ready_ms: Sequence[float]) -> list[float]:
    """When each token of the final result was emitted: the chunk from which on the partial
    results begin with the final result's first k+1 tokens."""
    final = list(partials[-1]) if partials else []
    times: list[float] = []
    for k in range(len(final)):
        settled = len(partials) - 1
        while settled > 0 and list(partials[settled - 1][: k + 1]) == final[: k + 1]:
            settled -= 1
        times.append(ready_ms[settled])
    return times


def ctc_token_times(
    model: SpeechModel, feats: torch.Tensor, lengths: torch.Tensor
) -> list[list[float]]:
    """Per utterance, the time (ms) of each token of the greedy full-context CTC path: the end
    of the first encoder frame that emits it (its input frames through the subsampling)."""
    if _ctc_head(model) is None:
        raise ValueError("ctc_token_times: the model has no CTC head")
    with torch.no_grad():
        starts = _token_frames(model, feats, lengths)
    step = model.spec.subsampling_factor * model.features.hop_ms
    return [[(t + 1) * step for t in frames] for frames in starts]


@dataclass(frozen=True, slots=True)
class DelayStats:
    """Emission delay (ms) over utterances: mean and 90th percentile."""

    mean: float
    p90: float
    count: int

    @staticmethod
    def of(values: Sequence[float]) -> DelayStats:
        if not values:
            return DelayStats(float("nan"), float("nan"), 0)
        v = np.asarray(values, dtype=float)
        return DelayStats(float(v.mean()), float(np.percentile(v, 90)), len(v))


@dataclass(frozen=True, slots=True)
class StreamingEvaluation:
    rates: ErrorRates
    hypotheses: tuple[str, ...]
    references: tuple[str, ...]
    first_token_delay: DelayStats
    last_token_delay: DelayStats
    audio_seconds: float
    compute_seconds: float
    chunks: int

    @property
    def rtf(self) -> float:
        return self.compute_seconds / max(self.audio_seconds, 1e-9)

    def to_dict(self) -> dict[str, object]:
        return {
            **self.rates.to_dict(),
            "first_token_delay_ms": {"mean": self.first_token_delay.mean,
                                     "p90": self.first_token_delay.p90},
            "last_token_delay_ms": {"mean": self.last_token_delay.mean,
                                    "p90": self.last_token_delay.p90},
            "rtf": self.rtf,
            "chunks": self.chunks,
        }  # fmt: skip


@torch.no_grad()
def evaluate_streaming(
    model: SpeechModel,
    dataset: SpeechDataset,
    *,
    beam: int = 1,
    reference: SpeechModel | None = None,
    max_batch_seconds: float = 120.0,
) -> StreamingEvaluation:
    """Streaming WER/CER of every utterance, and first/last-token emission delays against the
    full-context CTC path of ``reference`` (default: ``model`` itself run on whole utterances,
    which isolates the delay the chunking adds)."""
    was_training = model.training
    model.eval()
    ref_model = reference if reference is not None else model
    ref_model.eval()
    hyps: list[str] = [""] * len(dataset)
    first: list[float] = []
    last: list[float] = []
    audio = compute = 0.0
    chunks = 0
    for indices, batch in prepare_batches(dataset, max_batch_seconds=max_batch_seconds):
        start = time.perf_counter()
        streamed = stream_encode(model, batch.feats, batch.feat_lens)
        partials = stream_decode(model, streamed, beam=beam)
        compute += time.perf_counter() - start
        audio += batch.seconds
        chunks += sum(len(r) for r in streamed.ready_ms)
        ref_times = ctc_token_times(ref_model, batch.feats, batch.feat_lens)
        for row, i in enumerate(indices):
            result = partials[row][-1] if partials[row] else []
            hyps[i] = dataset.tokenizer.decode(result)
            emitted = emission_times(partials[row], streamed.ready_ms[row])
            ref = ref_times[row]
            if emitted and ref:
                first.append(emitted[0] - ref[0])
                last.append(emitted[-1] - ref[-1])
    model.train(was_training)
    refs = [u.text for u in dataset.utterances]
    return StreamingEvaluation(
        rates=error_rates(refs, hyps),
        hypotheses=tuple(hyps),
        references=tuple(refs),
        first_token_delay=DelayStats.of(first),
        last_token_delay=DelayStats.of(last),
        audio_seconds=audio,
        compute_seconds=compute,
        chunks=chunks,
    )


@torch.no_grad()
def emission_delays(
    model: SpeechModel,
    dataset: SpeechDataset,
    *,
    max_utterances: int | None = 200,
    max_batch_seconds: float = 300.0,
) -> tuple[DelayStats, DelayStats]:
    """First- and last-token emission delays of greedy CTC streaming, computed from the
    chunk-masked forward (which computes the streamed frames, so a token is emitted once the
    chunk holding its first frame has run) against the full-context CTC path of the same
    weights. Much faster than :func:`evaluate_streaming`, for scoring search trials."""
    if _ctc_head(model) is None:
        raise ValueError("emission_delays: the model has no CTC head")
    was_training = model.training
    model.eval()
    geo = model.stream_geometry()
    if max_utterances is not None and len(dataset) > max_utterances:
        dataset = SpeechDataset(
            dataset.utterances[:max_utterances], dataset.tokenizer, dataset.features
        )
    first: list[float] = []
    last: list[float] = []
    try:
        for _, batch in prepare_batches(dataset, max_batch_seconds=max_batch_seconds):
            streamed = _token_frames(model, batch.feats, batch.feat_lens)
            model.configure_streaming(chunk=None, lookahead=0)
            try:
                ref = ctc_token_times(model, batch.feats, batch.feat_lens)
            finally:
                model.configure_streaming(chunk=geo.chunk, lookahead=geo.lookahead)
            for row, frames in enumerate(streamed):
                n = int(batch.feat_lens[row])
                if frames and ref[row]:
                    ready = [chunk_ready_ms(model, t // geo.chunk, n) for t in frames]
                    first.append(ready[0] - ref[row][0])
                    last.append(ready[-1] - ref[row][-1])
    finally:
        model.train(was_training)
    return DelayStats.of(first), DelayStats.of(last)


def _token_frames(
    model: SpeechModel, feats: torch.Tensor, lengths: torch.Tensor
) -> list[list[int]]:
    """Per utterance, the encoder frame where each token of the greedy CTC path starts."""
    ctc = _ctc_head(model)
    assert ctc is not None
    enc, enc_lens = model.encode(feats, lengths)
    best = ctc(enc).argmax(-1)
    out: list[list[int]] = []
    for row, n in zip(best.tolist(), enc_lens.tolist(), strict=True):
        frames: list[int] = []
        prev = BLANK
        for t, tok in enumerate(row[:n]):
            if tok != prev and tok != BLANK:
                frames.append(t)
            prev = tok
        out.append(frames)
    return out
