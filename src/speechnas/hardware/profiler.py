"""Measured latency, real-time factor, peak memory and size of a model on a target.

What "latency" means, here and in the predictor: the time on the target of the inference work
for one utterance of N seconds, batch 1, from the model's input (feature frames, or the
waveform for the learnable front end) to its output scores, read on the target's clock (elapsed
time, or the running thread's CPU time: see :class:`~speechnas.hardware.target.Target`):

* CTC, and attention/hybrid models (decoded greedily through their CTC head, as exported):
  one forward of the front end, subsampling, encoder and CTC head (projection and
  log-softmax of every frame).
* RNN-T: the encoder forward, then the greedy search's U + 1 prediction-network steps and
  T' + U joiner calls, for U = round(3 N) tokens (about 3 tokens per second of audio) and T'
  encoder frames; the same counts :func:`speechnas.nn.cost.analytic_macs` uses.

Feature extraction and the argmax / collapse of the search are outside the model and are not
counted. A streaming target runs the same per chunk, on the chunk plus its left context; the
utterance latency is then the sum over its chunks. Parts run as separate runs of the runtime
(an RNN-T's step parts once per step), so per-run overheads count as they would in deployment.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from speechnas.hardware.backends import Backend, backend_for_target
from speechnas.hardware.cpu import cpu_report
from speechnas.hardware.program import (
    TOKENS_PER_SECOND,
    Program,
    chunk_windows,
    decoding_calls,
    load_program,
    random_input,
    utterance_length,
)
from speechnas.hardware.target import Target, load_target

__all__ = [
    "LATENCY_DEFINITION",
    "TOKENS_PER_SECOND",
    "LengthResult",
    "Profile",
    "profile",
    "runtime_versions",
]

LATENCY_DEFINITION = (
    "time of one utterance of N s, batch 1, model input to output scores: "
    "CTC/attention = encoder side + CTC head; RNN-T = encoder + (U+1) prediction steps + "
    "(T'+U) joiner calls with U = round(3 N); streaming = sum over chunks with left context"
)


def runtime_versions() -> dict[str, str]:
    """The versions a latency depends on: :func:`speechnas.versions.versions` plus ONNX's."""
    from speechnas.versions import versions

    out = versions()
    for name in ("onnxruntime", "onnx"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@dataclass(frozen=True, slots=True)
class LengthResult:
    """One utterance length: latency statistics over the repeats (ms) and the RTF.

    ``rtf`` = median latency / audio duration. Streaming targets add the number of chunks and
    the per-chunk median and 90th percentile over every chunk of every repeat. Profiled in
    several rounds, ``rounds_ms`` holds every round's median and the rest is the round with the
    least one (see :func:`profile`).
    """

    seconds: float
    input_length: int
    median_ms: float
    p90_ms: float
    rtf: float
    parts_ms: dict[str, float] = field(default_factory=dict)
    chunks: int | None = None
    chunk_median_ms: float | None = None
    chunk_p90_ms: float | None = None
    rounds_ms: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class Profile:
    """What :func:`profile` measured. ``files`` maps each part to its size in bytes (the file
    for ONNX Runtime; the weights file of a checkpoint, or the state dict of a module, for
    PyTorch); ``peak_memory_bytes`` is described by ``memory``."""

    target: Target
    model: str
    decoding: str
    files: dict[str, int]
    peak_memory_bytes: int | None
    memory: str
    lengths: tuple[LengthResult, ...]
    versions: dict[str, str]
    cpu: dict[str, str] = field(default_factory=dict)

    @property
    def model_bytes(self) -> int:
        return sum(self.files.values())

    def latency_ms(self, seconds: float) -> float:
        """The median latency at one of the profiled lengths."""
        for r in self.lengths:
            if abs(r.seconds - seconds) < 1e-9:
                return r.median_ms
        raise ValueError(
            f"seconds: {seconds} was not profiled ({[r.seconds for r in self.lengths]})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "model": self.model,
            "decoding": self.decoding,
            "definition": LATENCY_DEFINITION,
            "files": dict(self.files),
            "model_bytes": self.model_bytes,
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory": self.memory,
            "lengths": [r.to_dict() for r in self.lengths],
            "versions": dict(self.versions),
            "cpu": dict(self.cpu),
        }

    def table(self) -> Table:
        t = self.target
        table = Table(title=f"{self.model} on {t.name} ({t.runtime}, {t.precision}, {t.threads}t)")
        cols = ["seconds", "input", "median ms", "p90 ms", "RTF"]
        if t.streaming:
            cols += ["chunks", "chunk median ms", "chunk p90 ms"]
        for c in cols:
            table.add_column(c, justify="right")
        for r in self.lengths:
            row = [
                f"{r.seconds:g}",
                str(r.input_length),
                f"{r.median_ms:.2f}",
                f"{r.p90_ms:.2f}",
                f"{r.rtf:.4f}",
            ]
            if t.streaming:
                row += [str(r.chunks), f"{r.chunk_median_ms:.2f}", f"{r.chunk_p90_ms:.2f}"]
            table.add_row(*row)
        mem = "n/a" if self.peak_memory_bytes is None else f"{self.peak_memory_bytes / 2**20:.1f}"
        table.caption = (
            f"{self.decoding}; size {self.model_bytes / 2**20:.2f} MiB; peak memory {mem} MiB"
        )
        if rounds := max((len(r.rounds_ms) for r in self.lengths), default=0):
            table.caption += f"; the fastest of {rounds} rounds"
        if self.cpu:
            table.caption += f"; CPU {self.cpu.get('cpu_features', '?')}"
        return table


def _step_times(program: Program, backend: Backend, target: Target) -> dict[str, np.ndarray]:
    """(repeats,) seconds of one call of each RNN-T step part."""
    return {
        name: backend.time(
            program.parts[name],
            [feeds],
            warmup=target.warmup,
            repeats=target.repeats,
            clock=target.clock,
        )[:, 0]
        for name, feeds in program.step_feeds.items()
    }


def _check_window(program: Program, target: Target, length: int) -> None:
    if program.min_input is not None and length < program.min_input:
        raise ValueError(
            f"target chunk_ms: a {target.chunk_ms} ms chunk is {length} input steps, the model "
            f"needs at least {program.min_input}"
        )


def _measure(
    program: Program, backend: Backend, target: Target, rng: np.random.Generator
) -> tuple[list[LengthResult], dict[str, np.ndarray]]:
    """Latency per length; also the largest input of the first part (for the memory probe)."""
    first = program.parts[program.first]
    feeds: list[dict[str, np.ndarray]] = []
    plan: list[tuple[float, int, list[tuple[int, float, float]]]] = []
    for s in target.seconds:
        if target.streaming:
            total, windows = chunk_windows(program.features, target, s)
            x = random_input(program.features, total, rng)
            _check_window(program, target, windows[0][2] - windows[0][0])
            rows = []
            for lo, start, hi in windows:
                rows.append((len(feeds), start, (hi - start) / max(1, hi - lo)))
                feeds.append(program.feeds(np.ascontiguousarray(x[:, lo:hi])))
            plan.append((s, total, rows))
        else:
            n = utterance_length(program.features, s)
            plan.append((s, n, [(len(feeds), 0, 1.0)]))
            feeds.append(program.feeds(random_input(program.features, n, rng)))
    times = backend.time(
        first, feeds, warmup=target.warmup, repeats=target.repeats, clock=target.clock
    )
    steps = _step_times(program, backend, target) if program.decoding == "rnnt" else {}
    results = []
    for s, n, rows in plan:
        cols = [i for i, _, _ in rows]
        per_chunk = times[:, cols]  # (repeats, chunks)
        parts = {program.first: float(np.median(per_chunk.sum(axis=1))) * 1e3}
        if steps:
            # Per chunk (a whole utterance is one chunk): the new encoder frames of its window
            # and its share of the round(3 N) tokens.
            frames = np.array([backend.run(first, feeds[i])[0].shape[1] for i, _, _ in rows])
            pred_calls, join_calls = decoding_calls(s, frames, np.array([r[2] for r in rows]))
            per_chunk = (
                per_chunk
                + steps["predictor"][:, None] * pred_calls[None, :]
                + steps["joiner"][:, None] * join_calls[None, :]
            )
            parts["predictor"] = float(np.median(steps["predictor"]) * pred_calls.sum()) * 1e3
            parts["joiner"] = float(np.median(steps["joiner"]) * join_calls.sum()) * 1e3
        total = per_chunk.sum(axis=1) * 1e3  # (repeats,) ms
        median = float(np.median(total))
        result = LengthResult(
            seconds=s,
            input_length=n,
            median_ms=median,
            p90_ms=float(np.percentile(total, 90)),
            rtf=median / (1000.0 * s),
            parts_ms=parts,
        )
        if target.streaming:
            flat = per_chunk.ravel() * 1e3
            result = LengthResult(
                **{
                    **result.to_dict(),
                    "chunks": len(rows),
                    "chunk_median_ms": float(np.median(flat)),
                    "chunk_p90_ms": float(np.percentile(flat, 90)),
                },
            )
        results.append(result)
    largest = max(feeds, key=lambda f: f[program.input_names[0]].size)
    return results, largest


def _sizes(program: Program, backend: Backend) -> dict[str, int]:
    """Bytes of each part as it runs: the converted file or module where the backend converts
    (static int8, bf16), else what the program says."""
    prepared = getattr(backend, "prepared", None)
    if prepared is None or getattr(backend, "precision", "fp32") == "fp32":
        return dict(program.sizes)
    if backend.name != "onnxruntime":  # one module holds every part: count it once
        ran = prepared(program.parts[program.first])
        return {"model": sum(t.numel() * t.element_size() for t in ran.state_dict().values())}
    return {name: Path(prepared(part)).stat().st_size for name, part in program.parts.items()}


def _least(rounds: Sequence[LengthResult]) -> LengthResult:
    """One length's round with the least median, with every round's median in ``rounds_ms``
    (left empty for a single round)."""
    best = min(rounds, key=lambda r: r.median_ms)
    if len(rounds) == 1:
        return best
    return replace(best, rounds_ms=tuple(r.median_ms for r in rounds))


def profile(
    model: Any,
    target: Target | str | Path = "cpu-ort-1t",
    *,
    backend: Backend | None = None,
    memory: bool = True,
    seconds: Sequence[float] | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    work_dir: str | Path | None = None,
    seed: int = 0,
    rounds: int = 1,
) -> Profile:
    """Measures ``model`` on ``target`` (see the module docstring for what latency means).

    ``model``: an ``.onnx`` file, a folder of exported files, an ``export_model`` result, a
    checkpoint folder or an ``nn.Module`` (exported first for ONNX Runtime). ``seconds``,
    ``warmup`` and ``repeats`` override the target's. ``backend`` defaults to the local one of
    the target's runtime and precision (a ValueError if this CPU lacks the instructions the
    precision needs: ``speechnas.hardware.cpu``). Inputs are random (seeded by ``seed``);
    ``memory`` adds the peak memory, measured in a child process (a second or two).

    ``rounds`` times every length that many times over, each round with other random inputs;
    a length's figures are those of its round with the least median and ``rounds_ms`` keeps
    every round's median. A burst of contention on a shared machine slows a model for seconds
    (:data:`speechnas.hardware.evaluation.ROUNDS`); the least of several rounds is the model's
    time without it.
    """
    if rounds < 1:
        raise ValueError(f"rounds: {rounds} must be at least 1")
    target = load_target(target)
    overrides = {
        "seconds": tuple(seconds) if seconds is not None else None,
        "warmup": warmup,
        "repeats": repeats,
    }
    target = target.replace(**{k: v for k, v in overrides.items() if v is not None})
    backend = backend or backend_for_target(target)
    with tempfile.TemporaryDirectory() as tmp:
        program = load_program(model, target, Path(work_dir) if work_dir else Path(tmp))
        rng = np.random.default_rng(seed)
        measured = [_measure(program, backend, target, rng) for _ in range(rounds)]
        largest = measured[0][1]
        lengths = [_least([m[0][j] for m in measured]) for j in range(len(target.seconds))]
        peak = None
        if memory:
            parts = [(program.parts[program.first], largest)]
            parts += [(program.parts[n], f) for n, f in program.step_feeds.items()]
            peak = backend.peak_memory(parts)
    what = (
        f"peak RSS increase of a fresh process after importing {target.runtime}: loading the "
        f"model and one run of the longest input"
        if memory
        else "not measured"
    )
    return Profile(
        target=target,
        model=program.description,
        decoding=program.decoding,
        files=_sizes(program, backend),
        peak_memory_bytes=peak,
        memory=what,
        lengths=tuple(lengths),
        versions=runtime_versions(),
        cpu=cpu_report(),
    )
