"""Predicted against measured latency of whole models: the predictor's accuracy report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.stats import spearmanr

from speechnas.hardware.target import Target, load_target
from speechnas.space import Arch

if TYPE_CHECKING:
    from speechnas.hardware.predictor import LatencyPredictor

__all__ = ["ROUNDS", "accuracy", "measure_archs", "time_in_turn"]


#: Rounds :func:`measure_archs` times every model in by default. One burst of contention on a
#: shared machine slows a model for seconds; the least of medians taken minutes apart is the
#: model's time without it. Measured on a 2-core cloud machine (50 models at 3 lengths, two
#: sets of three timings minutes apart): within ±10% of each other for 37-83% of the
#: model-lengths from one timing each, 70% as the median of three and 91% as the least of three.
#: It helps less against contention that lasts minutes: in such an hour, 31-44% from one
#: timing and 47% from the least of three.
ROUNDS = 3


def measure_archs(
    archs: Iterable[Mapping[str, Any]],
    target: Target | str,
    seconds: Sequence[float] = (2.0, 5.0, 10.0),
    *,
    vocab_size: int = 32,
    warmup: int | None = None,
    repeats: int | None = None,
    seed: int = 0,
    rounds: int = ROUNDS,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Measured latency of whole models (random weights, seeded): one row per arch and length
    with ``key``, ``arch`` (JSON), ``seconds``, ``measured_ms`` and ``rounds_ms``.

    Every model is built and exported once and timed in ``rounds`` rounds that take the models
    in turn, so a model's rounds lie minutes apart on a long list; ``measured_ms`` is the least
    of its per-round medians (see :data:`ROUNDS`) and ``rounds_ms`` all of them."""
    if rounds < 1:
        raise ValueError(f"rounds: {rounds} must be at least 1")
    archs = [Arch(a) for a in archs]
    times = _timed_rounds(
        archs, target, seconds, vocab_size=vocab_size, rounds=rounds, warmup=warmup,
        repeats=repeats, model_seed=lambda i: seed + i, input_seed=lambda i, r: seed + i + r,
        progress=progress,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    for arch, per_round in zip(archs, times, strict=True):
        for j, s in enumerate(seconds):
            ms = [r[j] for r in per_round]
            rows.append({"key": arch.hash(), "arch": arch.to_json(), "seconds": float(s),
                         "measured_ms": min(ms), "rounds_ms": ms})  # fmt: skip
    return rows


def _random_model(arch: Arch, vocab_size: int, seed: int) -> torch.nn.Module:
    """``arch`` built with random weights from ``seed`` (the global RNG left as it was)."""
    from speechnas.nn.build import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(arch, vocab_size=vocab_size).eval()


def _timed_rounds(
    archs: Sequence[Arch],
    target: Target | str,
    seconds: Sequence[float],
    *,
    vocab_size: int,
    rounds: int,
    model_seed: Callable[[int], int],
    input_seed: Callable[[int, int], int],
    warmup: int | None = None,
    repeats: int | None = None,
    progress: bool = False,
) -> list[list[list[float]]]:
    """Median milliseconds ``out[i][r][j]`` of model ``i`` in round ``r`` at ``seconds[j]``.
    Each model is built (``model_seed(i)``) and, for ONNX Runtime, exported once; every round
    times every model in turn, in a new runtime session with inputs from ``input_seed(i, r)``."""
    import tempfile
    from pathlib import Path

    from speechnas.hardware.profiler import profile

    target = load_target(target)
    out: list[list[list[float]]] = [[] for _ in archs]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(archs) * rounds, desc="measuring whole models", leave=False)
    from speechnas.export.onnx import export_model

    with tempfile.TemporaryDirectory() as tmp:
        models: list[Any] = []
        for i, a in enumerate(archs):
            m = _random_model(a, vocab_size, model_seed(i))
            if target.runtime == "onnxruntime":  # exported once, not once per round
                m = export_model(m, Path(tmp) / f"{i}", check=False,
                                 int8=target.precision == "int8")  # fmt: skip
            models.append(m)
        for r in range(rounds):
            for i, m in enumerate(models):
                prof = profile(m, target, memory=False, seconds=seconds, warmup=warmup,
                               repeats=repeats, seed=input_seed(i, r),
                               work_dir=Path(tmp) / f"{i}-{r}")  # fmt: skip
                out[i].append([x.median_ms for x in prof.lengths])
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    return out


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
    times = _timed_rounds(
        [Arch(a) for a in archs], target, [seconds], vocab_size=vocab_size, rounds=rounds,
        model_seed=lambda i: i, input_seed=lambda i, r: r,
    )  # fmt: skip
    return [[r[0] for r in per_model] for per_model in times]


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
