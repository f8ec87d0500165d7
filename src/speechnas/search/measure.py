"""Measuring trained models on the search's hardware target: a one-shot finalist and the
retrained selection are exported, timed and compared with the predictor's figure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from speechnas.search.config import SearchConfig
from speechnas.search.objectives import latency_model
from speechnas.space import Arch


def measure_on_target(
    checkpoint: str | Path, cfg: SearchConfig, preset_name: str | None = None
) -> dict[str, Any]:
    """The model in ``checkpoint`` profiled on the search's target (exported, timed, peak
    memory), next to the predictor's figure for its architecture: ``latency_measured`` (the
    least of :data:`~speechnas.hardware.evaluation.ROUNDS` rounds' medians, every round in
    ``latency_measured_rounds_ms``), ``latency_p90_measured``, ``latency_predicted``,
    ``model_bytes`` and, where the target measures it, ``memory_measured_mb``; with
    ``preset_name``, also the model against that preset (see :func:`_against_preset`)."""
    from speechnas.hardware import profile
    from speechnas.hardware.evaluation import ROUNDS
    from speechnas.train.checkpoint import load_model

    loaded = load_model(checkpoint)
    seconds = cfg.latency_seconds
    prof = profile(checkpoint, cfg.target, seconds=[seconds], rounds=ROUNDS)
    predicted = latency_model(cfg.target).predict(
        loaded.model.arch, seconds, loaded.tokenizer.vocab_size
    )
    (length,) = prof.lengths
    out = {
        "latency_measured": length.median_ms,
        "latency_p90_measured": length.p90_ms,
        "latency_measured_rounds_ms": list(length.rounds_ms),
        "latency_predicted": predicted,
        "model_bytes": float(prof.model_bytes),
    }
    if preset_name is not None:
        out.update(
            _against_preset(loaded.model.arch, preset_name, cfg, loaded.tokenizer.vocab_size)
        )
    if prof.peak_memory_bytes is not None:
        out["memory_measured_mb"] = prof.peak_memory_bytes / 2**20
    if loaded.model.spec.streaming:
        out.update(_streaming(loaded, Path(checkpoint).parent / "stream-export", cfg))
    return out


def _streaming(loaded: Any, folder: Path, cfg: SearchConfig) -> dict[str, Any]:
    """A streaming model exported with its states (``folder/stream.onnx``, the file
    ``speechnas transcribe --streaming`` takes) and its per-chunk latency, timed chunk by chunk
    with real states on ONNX Runtime with the target's threads, next to the prediction."""
    from speechnas.export.streaming import export_streaming
    from speechnas.hardware import load_target
    from speechnas.hardware.stream import chunk_latency_of_file
    from speechnas.search.objectives import predicted_metrics

    res = export_streaming(loaded.model, folder, tokenizer=loaded.tokenizer, int8=True)
    stream_target = load_target("cpu-ort-stream-1t")
    threads = load_target(cfg.target).threads
    if threads != stream_target.threads:
        stream_target = dataclasses.replace(stream_target, threads=threads, clock="wall")
    lat = chunk_latency_of_file(res.path, stream_target, seconds=cfg.latency_seconds)
    pre = predicted_metrics(
        loaded.model.arch,
        vocab_size=loaded.tokenizer.vocab_size,
        latency=latency_model(cfg.target),
        seconds=cfg.latency_seconds,
    )
    return {
        "stream_export": str(res.path),
        "chunk_latency_measured": lat.p50_ms,
        "chunk_latency_p90_measured": lat.p90_ms,
        "chunk_latency_predicted": pre["chunk_latency"],
        "stream_rtf_measured": lat.rtf,
        "algorithmic_latency": pre["algorithmic_latency"],
    }


#: interleaved rounds of the model-vs-preset comparison
PRESET_ROUNDS = 5
#: a model misses a preset's latency limit when its median per-round ratio to the preset is
#: above 1 + this: `small` against itself landed at 0.993-1.008 in six repetitions of the five
#: rounds on a 2-core machine, so 2% is about twice that spread
RATIO_TOLERANCE = 0.02


def _against_preset(arch: Any, preset_name: str, cfg: SearchConfig, vocab: int) -> dict[str, Any]:
    """The model and the preset timed alternately for :data:`PRESET_ROUNDS` rounds (random
    weights, which do not change a float model's time): one process's timings of the same
    model drift by tens of percent, so the comparison is the median of the per-round ratios,
    ``latency_ratio_to_limit``; ``latency_beside_limit`` is the model's median time in those
    rounds and ``latency_limit_measured`` that over the ratio (the preset as timed beside it)."""
    from speechnas.nn.presets import preset

    model, limit = _beside(arch, preset(preset_name), cfg, vocab)
    ratio = float(np.median(np.array(model) / np.array(limit)))
    return {
        "latency_ratio_to_limit": ratio,
        "latency_beside_limit": float(np.median(model)),
        "latency_limit_measured": float(np.median(model)) / ratio,
        "latency_rounds_ms": model,
        "latency_limit_rounds_ms": limit,
    }


def _beside(
    arch: Any, reference: Any, cfg: SearchConfig, vocab: int
) -> tuple[list[float], list[float]]:
    """Milliseconds of ``arch`` and of ``reference`` (None: ``arch`` alone) on the search's
    target, timed in turn for :data:`PRESET_ROUNDS` rounds."""
    from speechnas.hardware.evaluation import time_in_turn

    archs = [arch] if reference is None else [arch, reference]
    times = time_in_turn(archs, cfg.target, cfg.latency_seconds, vocab_size=vocab,
                         rounds=PRESET_ROUNDS)  # fmt: skip
    return times[0], times[1] if reference is not None else []


def verify_latency(arch: Any, cfg: SearchConfig, vocab: int, model: Any) -> dict[str, Any] | None:
    """A real measurement of ``arch`` where its latency limit lies inside the prediction's
    confidence band (``model.confidence``, :meth:`LatencyPredictor.confidence`), else None.

    A limit that a preset stands for (``max_latency_ms: small``) is checked as a ratio: the
    architecture and the preset are timed in turn, and ``latency`` is the median per-round
    ratio times the limit, in the predictor's units like every other trial's latency. A limit
    in milliseconds is checked against the architecture's median time itself. Either way
    ``latency`` replaces the prediction; the rest records what was measured and why."""
    limit = cfg.constraints.max_latency_ms
    confidence = getattr(model, "confidence", None)
    if limit is None or confidence is None:
        return None
    c = confidence(arch, cfg.latency_seconds, vocab)
    if not c.straddles(float(limit)):
        return None
    source = cfg.constraints.source("max_latency_ms")
    reference = None if source is None else Arch.from_json(json.loads(source))
    times, ref = _beside(arch, reference, cfg, vocab)
    out = {
        "predicted": c.ms,
        "band": c.band,
        "basis": c.basis,
        "limit": float(limit),
        "rounds_ms": times,
        "measured_ms": float(np.median(times)),
    }
    if reference is None:
        return {**out, "latency": out["measured_ms"]}
    ratio = float(np.median(np.array(times) / np.array(ref)))
    return {**out, "reference_rounds_ms": ref, "ratio_to_limit": ratio,
            "latency": ratio * float(limit)}  # fmt: skip


__all__ = ["PRESET_ROUNDS", "RATIO_TOLERANCE", "measure_on_target", "verify_latency"]
