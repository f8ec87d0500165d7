"""Objectives, hard constraints, the latency hook and the scalar reward.

Every objective is minimised. Names: ``wer:TESTSET``, ``cer:TESTSET``, ``rtf:TESTSET`` (a test
set of the base training config), ``wer:mean(T1,T2,...)`` and ``cer:mean(...)`` (the unweighted
mean over the named test sets: every test condition counts alike), ``dev_wer``, ``latency``
(ms per utterance of ``latency_seconds`` on the configured target), ``params``, ``macs``
(analytic, one utterance of ``latency_seconds``) and ``memory`` (MB of float32 weights,
analytic). Streaming architectures add ``stream_wer:TESTSET`` and ``stream_dev_wer`` (greedy
CTC chunk by chunk with states: the chunk-masked full forward computes the same frames, so
these equal ``wer:TESTSET`` and ``dev_wer`` of the model trained at its own chunk size),
``chunk_latency`` (predicted ms per chunk), ``algorithmic_latency`` (ms of audio a chunk waits
for) and ``emission_delay`` (mean ms from a token's place on the full-context CTC path to its
emission, on dev). Which of them are error
rates, and what the others measure, is said once here (:func:`objective_kind`,
:func:`is_error_rate`) for the drivers, the selection and the plots.

Latency comes from a :class:`LatencyModel`; :func:`latency_model` is the one place that maps a
target name to one: a hardware target (``cpu-ort-1t``, a target YAML) gets its calibrated block
predictor, and ``proxy`` converts analytic MACs to milliseconds at a fixed rate (a stand-in for
ranking when no runtime is at hand, not a measurement of any device).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from speechnas.nn.build import build, feature_config
from speechnas.nn.cost import analytic_macs, count_parameters
from speechnas.nn.spec import decode
from speechnas.space import Arch

SCALAR_OBJECTIVES = (
    "dev_wer",
    "latency",
    "params",
    "macs",
    "memory",
    # streaming architectures only (see predicted_metrics and run_trial)
    "stream_dev_wer",
    "chunk_latency",
    "algorithmic_latency",
    "emission_delay",
)
PER_TEST_OBJECTIVES = ("wer", "cer", "rtf", "stream_wer")
#: The objectives of a TTS search (``task: tts``): ``mcd`` (dB, dev, reference durations),
#: ``tts_cer`` (the judge's CER on synthesized dev sentences), ``duration_error`` (frames per
#: phoneme), ``latency`` (ms to generate the mel of a 3.2-second sentence, measured on the
#: target), ``rtf`` (that latency over 3.2 s), ``params``, ``macs``, ``memory``.
TTS_OBJECTIVES = ("mcd", "tts_cer", "duration_error", "latency", "rtf", "params", "macs", "memory")
CONSTRAINT_KEYS = (
    "max_latency_ms",
    "max_params",
    "max_macs",
    "max_memory_mb",
    "max_chunk_latency_ms",
    "max_lookahead_ms",
    "max_algorithmic_latency_ms",
    "max_emission_delay_ms",
)
#: constraint → (metric it limits, how a violation reads, unit)
LIMITS = {
    "max_latency_ms": ("latency", "latency", " ms"),
    "max_params": ("params", "params", ""),
    "max_macs": ("macs", "MACs", ""),
    "max_memory_mb": ("memory", "memory", " MB"),
    "max_chunk_latency_ms": ("chunk_latency", "chunk latency", " ms"),
    "max_lookahead_ms": ("lookahead_ms", "look-ahead", " ms"),
    "max_algorithmic_latency_ms": ("algorithmic_latency", "algorithmic latency", " ms"),
    "max_emission_delay_ms": ("emission_delay", "emission delay", " ms"),
}
#: The metrics :func:`predicted_metrics` gives that a trial keeps beside its trained ones, and
#: those of them that are predictions (unless the latency model measures).
CARRIED_METRICS = (
    "macs", "memory", "latency", "chunk_latency", "algorithmic_latency", "lookahead_ms",
    "rtf",  # TTS: the measured latency over the reference sentence's duration
)  # fmt: skip
PREDICTED_METRICS = ("latency", "chunk_latency")
#: The proxy's rate: 2 GMAC/s, the order of one embedded CPU core running float32 kernels.
PROXY_MACS_PER_SECOND = 2e9


ObjectiveKind = Literal["error", "speed", "latency", "size", "compute"]


def objective_kind(name: str) -> ObjectiveKind:
    """What an objective measures: ``error`` (a word or character error rate: ``wer:T``,
    ``cer:T``, ``dev_wer``; for TTS ``mcd``, ``tts_cer``, ``duration_error``), ``speed``
    (``rtf:T``), ``latency``, ``size`` (``params``, ``memory``) or ``compute`` (``macs``); a
    ValueError for a name that is no objective."""
    kind = name if name in TTS_OBJECTIVES else check_objective(name).partition(":")[0]
    if kind in ("wer", "cer", "dev_wer", "stream_wer", "stream_dev_wer", "tts_cer", "mcd",
                "duration_error"):  # fmt: skip
        return "error"
    if kind == "rtf":
        return "speed"
    if kind in ("latency", "chunk_latency", "algorithmic_latency", "emission_delay"):
        return "latency"
    return "compute" if kind == "macs" else "size"


def is_error_rate(name: str) -> bool:
    """Whether objective (or metric) ``name`` is an error rate, a fraction in [0, 1] or so:
    ``wer:T``, ``cer:T``, ``dev_wer`` and, as a metric, ``dev_cer``."""
    kind, sep, test = name.partition(":")
    return (kind in ("wer", "cer", "stream_wer") and bool(sep and test)) or name in (
        "dev_wer",
        "dev_cer",
        "stream_dev_wer",
        "tts_cer",
    )


_MEAN = re.compile(r"^(wer|cer):mean\(([^()]*)\)$")


def objective_tests(name: str) -> tuple[str, ...]:
    """The test sets an objective reads: none, ``(T,)`` for ``wer:T``, ``(T1, T2)`` for
    ``wer:mean(T1,T2)``."""
    if m := _MEAN.match(name):
        return tuple(t.strip() for t in m.group(2).split(","))
    _, sep, test = name.partition(":")
    return (test,) if sep else ()


def check_objective(name: str, *, task: str = "asr") -> str:
    """``name`` if it names an objective of ``task``; a ValueError listing the allowed forms
    otherwise."""
    if task == "tts":
        if name in TTS_OBJECTIVES:
            return name
        raise ValueError(
            f"objectives: {name!r} is not one of a TTS search's {list(TTS_OBJECTIVES)}"
        )
    if name in TTS_OBJECTIVES and name not in SCALAR_OBJECTIVES:
        raise ValueError(f"objectives: {name!r} is a TTS objective; set task: tts to use it")
    kind, sep, test = name.partition(":")
    if m := _MEAN.match(name):
        tests = objective_tests(name)
        if all(tests) and len(set(tests)) == len(tests):
            return name
        raise ValueError(
            f"objectives: {name!r}: expected {m.group(1)}:mean(T1,T2,...) with distinct, "
            "non-empty test set names"
        )
    if (not sep and kind in SCALAR_OBJECTIVES) or (
        sep and kind in PER_TEST_OBJECTIVES and test and "(" not in test
    ):
        return name
    allowed = [
        *SCALAR_OBJECTIVES,
        *(f"{k}:TESTSET" for k in PER_TEST_OBJECTIVES),
        "wer:mean(T1,T2,...)",
        "cer:mean(T1,T2,...)",
    ]
    raise ValueError(f"objectives: {name!r} is not one of {allowed}")


class LatencyModel(Protocol):
    """Milliseconds to run ``arch`` on one utterance of ``seconds`` on some target."""

    name: str
    measured: bool  # True when the number comes from running the model, False for a prediction

    def predict(self, arch: Arch, seconds: float, vocab_size: int) -> float: ...


@dataclass(frozen=True, slots=True)
class ProxyLatency:
    """A labelled proxy: analytic MACs divided by a fixed rate (default 2 GMAC/s).

    It ranks architectures by compute only; memory traffic, operator overheads and the
    decoder's search are ignored. A calibrated predictor replaces it per target.
    """

    macs_per_second: float = PROXY_MACS_PER_SECOND
    name: str = "proxy"
    measured: bool = False

    def predict(self, arch: Arch, seconds: float, vocab_size: int) -> float:
        macs = analytic_macs(arch, seconds=seconds, vocab_size=vocab_size).total
        return 1000.0 * macs / self.macs_per_second


LATENCY_TARGETS: dict[str, Callable[[], LatencyModel]] = {"proxy": ProxyLatency}


def latency_model(target: str, *, cache_dir: str | Path | None = None) -> LatencyModel:
    """The latency model of a target name: the single hook for calibrated or measured ones.

    ``proxy`` is the analytic stand-in; any hardware target (a built-in name such as
    ``cpu-ort-1t`` or a target YAML) gets the calibrated block predictor of that target, read
    from its calibration table in ``cache_dir`` and extended on demand: a block no table holds
    yet is micro-benchmarked the first time an architecture needs it, and the table is saved.
    """
    if target in LATENCY_TARGETS:
        return LATENCY_TARGETS[target]()
    from speechnas.hardware import LatencyPredictor, builtin_targets, load_target

    try:
        t = load_target(target)
    except ValueError as e:
        allowed = sorted([*LATENCY_TARGETS, *builtin_targets()])
        raise ValueError(
            f"target: {target!r} is not one of {allowed} or a target YAML ({e})"
        ) from None
    return LatencyPredictor.for_target(t, cache_dir=cache_dir, auto_extend=True)


def is_hardware_target(target: str) -> bool:
    """Whether ``target`` names a device whose models can be run and timed (not ``proxy``)."""
    return target not in LATENCY_TARGETS


def check_builds(arch: Arch, vocab_size: int) -> None:
    """Builds ``arch`` and decodes one second of silence; raises what the model raises.

    Costs well under a second, so a topology that cannot run never reaches training.
    """
    model = build(arch, vocab_size=vocab_size).eval()
    feats = feature_config(arch)
    frames = int(feats.frame_rate)
    with torch.no_grad():
        model.decode(torch.zeros(1, frames, feats.dim), torch.tensor([frames]))


def predicted_metrics(
    arch: Arch, *, vocab_size: int, latency: LatencyModel, seconds: float
) -> dict[str, float]:
    """The metrics known without training: ``params``, ``macs``, ``memory`` (MB) and
    ``latency`` (ms), all for one utterance of ``seconds``; for a streaming architecture also
    ``algorithmic_latency`` and ``lookahead_ms`` (from its geometry) and ``chunk_latency``, the
    predicted time of one steady-state chunk with full caches (``predict_chunk`` of a calibrated
    predictor; a proxy prices the model on one chunk's window of input)."""
    params = count_parameters(arch, vocab_size=vocab_size)
    out = {
        "params": params,
        "macs": analytic_macs(arch, seconds=seconds, vocab_size=vocab_size).total,
        "memory": params * 4 / 2**20,
        "latency": latency.predict(arch, seconds, vocab_size),
    }
    spec = decode(arch)
    if spec.streaming and not spec.waveform_input:
        geo = spec.stream_geometry
        window_s = ((geo.window - 1) * spec.features.hop + spec.features.n_fft) / (
            spec.features.sample_rate
        )
        out["algorithmic_latency"] = geo.algorithmic_latency_ms
        out["lookahead_ms"] = geo.lookahead_ms
        chunk = getattr(latency, "predict_chunk", None)  # a calibrated predictor prices the
        # chunk with its caches; a proxy prices the model on one chunk's window
        out["chunk_latency"] = (
            chunk(arch, vocab_size) if chunk else latency.predict(arch, window_s, vocab_size)
        )
    return out


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}"


def violations(
    metrics: Mapping[str, Any],
    constraints: Mapping[str, float | None],
    *,
    predicted: bool | Collection[str],
) -> list[str]:
    """Broken hard constraints, each as ``"predicted latency 41 ms > 30 ms"``; ``predicted``
    says which metrics are predictions (True: all of them)."""
    out = []
    for key in CONSTRAINT_KEYS:
        limit = constraints.get(key)
        metric, label, unit = LIMITS[key]
        if limit is None or metric not in metrics:
            continue
        v = float(metrics[metric])
        if v > limit:
            guess = predicted if isinstance(predicted, bool) else metric in predicted
            word = "predicted " if guess else ""
            out.append(f"{word}{label} {_fmt(v)}{unit} > {_fmt(limit)}{unit}")
    return out


def objective_values(metrics: Mapping[str, Any], objectives: Sequence[str]) -> tuple[float, ...]:
    """The objective vector; a ValueError naming the first one missing or not finite."""
    out = []
    for o in objectives:
        v = metrics.get(o)
        if v is None and (m := _MEAN.match(o)):
            parts = [metrics.get(f"{m.group(1)}:{t}") for t in objective_tests(o)]
            v = None if None in parts else sum(float(p) for p in parts) / len(parts)
        if v is None or not math.isfinite(float(v)):
            raise ValueError(f"objective {o} is {v!r}; metrics: {sorted(metrics)}")
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Scalarizer:
    """The scalar reward for single-objective use, to minimise:
    ``primary + lam * ln(latency_ms)`` (the negative of the reward ``-WER - lam*log(latency)``).

    ``primary`` is the first objective that is not latency; latency enters only when it is an
    objective (then a halving of latency is worth ``lam * ln 2`` of the primary).
    """

    objectives: tuple[str, ...]
    lam: float

    def __call__(self, values: Sequence[float]) -> float:
        idx = {o: i for i, o in enumerate(self.objectives)}
        primary = next((o for o in self.objectives if o != "latency"), "latency")
        s = float(values[idx[primary]])
        if "latency" in idx and primary != "latency":
            s += self.lam * math.log(max(float(values[idx["latency"]]), 1e-9))
        return s


__all__ = [
    "CARRIED_METRICS",
    "CONSTRAINT_KEYS",
    "LATENCY_TARGETS",
    "LIMITS",
    "PREDICTED_METRICS",
    "PROXY_MACS_PER_SECOND",
    "TTS_OBJECTIVES",
    "LatencyModel",
    "ObjectiveKind",
    "ProxyLatency",
    "Scalarizer",
    "check_builds",
    "check_objective",
    "is_error_rate",
    "is_hardware_target",
    "latency_model",
    "objective_kind",
    "objective_tests",
    "objective_values",
    "predicted_metrics",
    "violations",
]
