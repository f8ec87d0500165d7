"""Predicted against measured latency of whole models: the predictor's accuracy report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.stats import spearmanr

from speechnas.hardware.target import Target, load_target
from speechnas.space import Arch

if TYPE_CHECKING:
    from speechnas.hardware.predictor import LatencyPredictor

__all__ = ["accuracy", "measure_archs", "time_in_turn"]


def measure_archs(
    archs: Iterable[Mapping[str, Any]],
    target: Target | str,
    seconds: Sequence[float] = (2.0, 5.0, 10.0),
    *,
    vocab_size: int = 32,
    warmup: int | None = None,
    repeats: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Measured latency of whole models (random weights, seeded): one row per arch and length
    with ``key``, ``arch`` (JSON), ``seconds`` and ``measured_ms``."""
    from speechnas.hardware.profiler import profile

    archs = list(archs)
    rows: list[dict[str, Any]] = []
    iterator: Iterable[Mapping[str, Any]] = archs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(archs, desc="measuring whole models", leave=False)
    for i, arch in enumerate(iterator):
        arch = Arch(arch)
        model = _random_model(arch, vocab_size, seed + i)
        prof = profile(
            model,
            target,
            memory=False,
            seconds=seconds,
            warmup=warmup,
            repeats=repeats,
            seed=seed + i,
        )
        for r in prof.lengths:
            rows.append(
                {
                    "key": arch.hash(),
                    "arch": arch.to_json(),
                    "seconds": r.seconds,
                    "measured_ms": r.median_ms,
                }
            )
    return rows


def _random_model(arch: Arch, vocab_size: int, seed: int) -> torch.nn.Module:
    """``arch`` built with random weights from ``seed`` (the global RNG left as it was)."""
    from speechnas.nn.build import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(arch, vocab_size=vocab_size).eval()


def time_in_turn(
    archs: Sequence[Mapping[str, Any]],
    target: Target | str,
    seconds: float,
    *,
    vocab_size: int,
    rounds: int,
) -> list[list[float]]:
    """Median milliseconds of each of ``archs`` at ``seconds``, the models timed in turn for
    ``rounds`` rounds: ``out[i][r]``. Each model is built (random weights: they do not change a
    float model's time) and exported once; every round times it in a new runtime session with
    other random inputs, so a drift of the machine from round to round hits every model alike."""
    import tempfile
    from pathlib import Path

    from speechnas.hardware.profiler import profile

    target = load_target(target)
    models: list[Any] = [_random_model(Arch(a), vocab_size, i) for i, a in enumerate(archs)]
    out: list[list[float]] = [[] for _ in models]
    with tempfile.TemporaryDirectory() as tmp:
        if target.runtime == "onnxruntime":  # exported once, not once per round
            from speechnas.export.onnx import export_model

            int8 = target.precision == "int8"
            models = [export_model(m, Path(tmp) / f"{i}", check=False, int8=int8)
                      for i, m in enumerate(models)]  # fmt: skip
        for r in range(rounds):
            for i, m in enumerate(models):
                prof = profile(m, target, memory=False, seconds=[seconds], seed=r,
                               work_dir=Path(tmp) / f"{i}-{r}")  # fmt: skip
                out[i].append(prof.lengths[0].median_ms)
    return out


def _stats(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    err = (predicted - measured) / measured
    rho = spearmanr(measured, predicted).statistic if len(measured) > 1 else float("nan")
    return {
        "n": len(measured),
        "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
        "mape": float(np.mean(np.abs(err))),
        "median_error": float(np.median(err)),
        "max_abs_error": float(np.max(np.abs(err))),
        "spearman": float(rho),
    }


def accuracy(
    predictor: LatencyPredictor,
    archs: Iterable[Mapping[str, Any]] = (),
    target: Target | str | None = None,
    seconds: Sequence[float] = (2.0, 5.0, 10.0),
    *,
    vocab_size: int = 32,
    rows: Sequence[Mapping[str, Any]] | None = None,
    **measure: Any,
) -> dict[str, Any]:
    """Predicted against measured latency of whole models on ``target`` (the predictor's by
    default): share within ±10 %, mean absolute percentage error, Spearman's rho, overall and
    per length, and every row. ``rows`` from :func:`measure_archs` skip the measuring;
    ``measure`` passes ``warmup``, ``repeats``, ``seed``, ``progress`` on to it."""
    target = load_target(target) if target is not None else predictor.target
    if rows is None:
        rows = measure_archs(archs, target, seconds, vocab_size=vocab_size, **measure)
    out_rows = []
    for r in rows:
        arch = Arch.from_json(r["arch"])
        predicted = predictor.predict(arch, r["seconds"], vocab_size)
        out_rows.append({**r, "predicted_ms": predicted})
    m = np.array([r["measured_ms"] for r in out_rows])
    p = np.array([r["predicted_ms"] for r in out_rows])
    lengths = sorted({float(r["seconds"]) for r in out_rows})
    per_length = {}
    for s in lengths:
        sel = np.array([float(r["seconds"]) == s for r in out_rows])
        per_length[f"{s:g}"] = _stats(m[sel], p[sel])
    return {
        "target": target.name,
        "archs": len({r["key"] for r in out_rows}),
        "seconds": lengths,
        **_stats(m, p),
        "per_length": per_length,
        "correction_archs": list(predictor.correction_archs),
        "rows": out_rows,
    }
