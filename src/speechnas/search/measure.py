"""Measuring trained models on the search's hardware target: a one-shot finalist and the
retrained selection are exported, timed and compared with the predictor's figure."""

from __future__ import annotations

from pathlib import Path

from speechnas.search.config import SearchConfig
from speechnas.search.objectives import latency_model


def measure_on_target(
    checkpoint: str | Path, cfg: SearchConfig, preset_name: str | None = None
) -> dict[str, float]:
    """The model in ``checkpoint`` profiled on the search's target (exported, timed, peak
    memory), next to the predictor's figure for its architecture: ``latency_measured``,
    ``latency_p90_measured``, ``latency_predicted``, ``model_bytes`` and, where the target
    measures it, ``memory_measured_mb``; with ``preset_name``, also that preset timed now with
    random weights (they do not change a float model's time), ``latency_limit_measured``."""
    from speechnas.hardware import profile
    from speechnas.train.checkpoint import load_model

    loaded = load_model(checkpoint)
    seconds = cfg.latency_seconds
    prof = profile(checkpoint, cfg.target, seconds=[seconds])
    predicted = latency_model(cfg.target).predict(
        loaded.model.arch, seconds, loaded.tokenizer.vocab_size
    )
    (length,) = prof.lengths
    out = {
        "latency_measured": length.median_ms,
        "latency_p90_measured": length.p90_ms,
        "latency_predicted": predicted,
        "model_bytes": float(prof.model_bytes),
    }
    if preset_name is not None:
        from speechnas.hardware.evaluation import measure_archs
        from speechnas.nn.presets import preset

        vocab = loaded.tokenizer.vocab_size
        (row,) = measure_archs([preset(preset_name)], cfg.target, [seconds], vocab_size=vocab)
        out["latency_limit_measured"] = float(row["measured_ms"])
    if prof.peak_memory_bytes is not None:
        out["memory_measured_mb"] = prof.peak_memory_bytes / 2**20
    return out


__all__ = ["measure_on_target"]
