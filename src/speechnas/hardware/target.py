"""Deployment targets: which runtime, precision and threads, and what input a model gets.

A :class:`Target` says how a model is run when its latency is measured or predicted: the
runtime (ONNX Runtime or PyTorch eager), the precision (see :data:`PRECISIONS`), the number of
threads, and the input, either whole utterances of
several lengths (attention grows quadratically with length, so one length is not enough) or
a stream of chunks of ``chunk_ms`` with ``left_context_ms`` of earlier audio in front.

Built-in targets live as YAML files next to this module (``targets/*.yaml``); users declare
their own in the same form and load either with :func:`load_target`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CLOCKS",
    "PRECISIONS",
    "PRECISION_RUNTIMES",
    "RUNTIMES",
    "Target",
    "builtin_targets",
    "load_target",
    "target_from_dict",
]

RUNTIMES: tuple[str, ...] = ("onnxruntime", "torch")
#: How the model's numbers are stored and multiplied:
#:
#: * "fp32": float32 throughout, either runtime.
#: * "int8": ONNX Runtime dynamic quantisation (``speechnas.export.quantize.quantize_int8``):
#:   int8 weights of every MatMul, activations quantised per run; convolutions stay float.
#: * "int8-static": ONNX Runtime static QDQ quantisation (``quantize_qdq``): int8 weights
#:   (per channel) and activations with calibrated scales, MatMuls and convolutions; the
#:   int8 kernels use VNNI dot products, so the CPU needs AVX-512 VNNI, AVX-VNNI or AMX-INT8.
#: * "bf16": PyTorch with the module and its float inputs in bfloat16 (oneDNN's bf16
#:   kernels, AVX-512 BF16 or AMX-BF16 needed); outputs come back as float32.
#:
#: ``speechnas.hardware.cpu.PRECISION_FEATURES`` says which CPU flags each precision needs.
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "int8-static", "bf16")
#: The runtimes each precision runs on.
PRECISION_RUNTIMES: dict[str, tuple[str, ...]] = {
    "fp32": RUNTIMES,
    "int8": ("onnxruntime",),
    "int8-static": ("onnxruntime",),
    "bf16": ("torch",),
}
CLOCKS: tuple[str, ...] = ("wall", "cpu")
_SUFFIXES = (".yaml", ".yml")


def _positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"target {field}: expected a positive integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Target:
    """One way of running a model, and the input it is measured on.

    ``seconds``: the utterance lengths (s) a profile or a prediction covers. With ``chunk_ms``
    set the target is streaming: each utterance is cut into ``ceil(1000 * s / chunk_ms)``
    chunks and every chunk is run with up to ``left_context_ms`` of the audio before it.
    ``warmup`` runs precede the ``repeats`` timed runs of every input.

    ``clock``: "wall" times elapsed time; "cpu" the CPU time of the calling thread, which for a
    single-threaded run (both runtimes compute on the calling thread with one thread) equals
    the elapsed time on an otherwise idle core, and is not inflated when other processes share
    the cores, as on a busy development machine. "cpu" needs ``threads: 1``.
    """

    name: str
    runtime: str = "onnxruntime"
    precision: str = "fp32"
    threads: int = 1
    seconds: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0)
    chunk_ms: int | None = None
    left_context_ms: int = 0
    warmup: int = 3
    repeats: int = 10
    clock: str = "wall"
    doc: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"target name: expected a non-empty string, got {self.name!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"target runtime: {self.runtime!r} is not one of {list(RUNTIMES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"target precision: {self.precision!r} is not one of {list(PRECISIONS)}"
            )
        allowed = PRECISION_RUNTIMES[self.precision]
        if self.runtime not in allowed:
            raise ValueError(
                f"target precision: {self.precision!r} needs runtime "
                f"{' or '.join(repr(r) for r in allowed)}, got runtime {self.runtime!r}"
            )
        _positive_int("threads", self.threads)
        if self.clock not in CLOCKS:
            raise ValueError(f"target clock: {self.clock!r} is not one of {list(CLOCKS)}")
        if self.clock == "cpu" and self.threads != 1:
            raise ValueError(
                f"target clock: 'cpu' times the calling thread only, so it needs threads 1, "
                f"got threads {self.threads}"
            )
        _positive_int("repeats", self.repeats)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"target warmup: expected an integer >= 0, got {self.warmup!r}")
        secs = self.seconds
        if isinstance(secs, int | float) and not isinstance(secs, bool):
            secs = (secs,)
        if not isinstance(secs, tuple | list) or not secs:
            raise ValueError(f"target seconds: expected a non-empty list of lengths, got {secs!r}")
        for s in secs:
            if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
                raise ValueError(f"target seconds: {s!r} is not a number")
            if s <= 0:
                raise ValueError(f"target seconds: {s!r} is not a positive length")
        object.__setattr__(self, "seconds", tuple(float(s) for s in secs))
        if self.chunk_ms is not None:
            _positive_int("chunk_ms", self.chunk_ms)
        left = self.left_context_ms
        if isinstance(left, bool) or not isinstance(left, int) or left < 0:
            raise ValueError(f"target left_context_ms: expected an integer >= 0, got {left!r}")
        if left and self.chunk_ms is None:
            raise ValueError("target left_context_ms: only valid with chunk_ms (streaming)")
        if not isinstance(self.doc, str):
            raise ValueError(f"target doc: expected a string, got {self.doc!r}")

    @property
    def streaming(self) -> bool:
        return self.chunk_ms is not None

    def chunks(self, seconds: float) -> int:
        """How many chunks an utterance of ``seconds`` is cut into (streaming targets)."""
        if self.chunk_ms is None:
            raise ValueError(f"target {self.name}: not a streaming target (chunk_ms is unset)")
        return max(1, math.ceil(round(1000.0 * seconds, 6) / self.chunk_ms))

    def replace(self, **changes: Any) -> Target:
        return target_from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = list(self.seconds)
        return out


_FIELDS = tuple(f.name for f in fields(Target))


def target_from_dict(data: Any, *, source: str = "<dict>") -> Target:
    """A :class:`Target` from a mapping; unknown keys and bad values raise a ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"target {source}: expected a mapping at the top level")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"target {source}: unknown field(s) {unknown}; allowed fields are {list(_FIELDS)}"
        )
    if "name" not in data:
        raise ValueError(f"target {source}: the field 'name' is required")
    values = dict(data)
    if isinstance(values.get("seconds"), list):
        values["seconds"] = tuple(values["seconds"])
    return Target(**values)


def _builtin_dir() -> Traversable:
    return resources.files("speechnas.hardware").joinpath("targets")


def builtin_targets() -> list[str]:
    """The names of the built-in targets."""
    return sorted(
        p.name.rsplit(".", 1)[0] for p in _builtin_dir().iterdir() if p.name.endswith(_SUFFIXES)
    )


def _from_yaml(text: str, source: str) -> Target:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"target {source}: not valid YAML: {e}") from None
    try:
        return target_from_dict(data, source=source)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from None


def load_target(name_or_path: str | Path | Target) -> Target:
    """A built-in target by name (``load_target("cpu-ort-1t")``) or one from a YAML file."""
    if isinstance(name_or_path, Target):
        return name_or_path
    path = Path(name_or_path)
    if isinstance(name_or_path, Path) or path.suffix in _SUFFIXES or path.exists():
        if not path.is_file():
            raise ValueError(f"target file {str(path)!r} does not exist")
        return _from_yaml(path.read_text(encoding="utf-8"), str(path))
    names = builtin_targets()
    if name_or_path not in names:
        raise ValueError(
            f"target {name_or_path!r} is not a built-in target ({', '.join(names)}) "
            "nor a .yaml file"
        )
    entry = _builtin_dir().joinpath(f"{name_or_path}.yaml")
    return _from_yaml(entry.read_text(encoding="utf-8"), f"built-in {name_or_path}")
