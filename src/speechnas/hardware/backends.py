"""Where models run: a small protocol and the two local implementations.

A :class:`Backend` runs a model on named numpy inputs, times repeated runs and measures peak
memory. The profiler and the latency predictor only talk to this protocol, so a remote device
(a phone over adb, a board over ssh) can be plugged in later by implementing the three methods
for model files that it copies over.

* :class:`OrtBackend`: ONNX Runtime on this machine's CPU; the model is an ``.onnx`` path.
  With precision "int8-static" a float file is first quantised to static QDQ int8 (random
  calibration: the latency does not depend on the values), once per file.
* :class:`TorchBackend`: PyTorch eager on this machine's CPU; the model is an ``nn.Module``
  called with the inputs in order. With precision "bf16" a bfloat16 copy of the module runs
  on bfloat16 inputs (integer inputs, such as lengths, are passed unchanged).

The precision is applied here, not in ``program.load_program``, so that one program (a model
exported once) can be timed at every precision; the backend checks that the CPU has the
instructions the precision needs (``speechnas.hardware.cpu``) and says which are missing.
"""

from __future__ import annotations

import contextlib
import copy
import copyreg
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Backend",
    "Feeds",
    "OrtBackend",
    "TorchBackend",
    "backend_for",
    "backend_for_target",
    "time_calls",
]

Feeds = Mapping[str, np.ndarray]


@runtime_checkable
class Backend(Protocol):
    """Runs one model on one device."""

    name: str

    def run(self, model: Any, feeds: Feeds) -> list[np.ndarray]:
        """One run of ``model`` on ``feeds``; its outputs in order."""
        ...

    def time(
        self,
        model: Any,
        feeds: Sequence[Feeds],
        *,
        warmup: int,
        repeats: int,
        clock: str = "wall",
        flush_bytes: int = 0,
    ) -> np.ndarray:
        """(repeats, len(feeds)) seconds of single runs: each input in turn gets ``warmup``
        untimed runs, then ``repeats`` timed ones. ``clock``: "wall" (elapsed) or "cpu" (CPU
        time of the thread that runs the model). ``flush_bytes`` > 0: before every timed run,
        that many bytes are written (untimed) to push the model out of the core's private
        caches, as the other layers of a whole model do."""
        ...

    def peak_memory(self, parts: Sequence[tuple[Any, Feeds]]) -> int | None:
        """Bytes: the peak resident-memory increase of loading every model of ``parts`` and
        running each once on its inputs, or None where this backend cannot tell."""
        ...


def time_calls(
    call: Callable[[Feeds], object],
    feeds: Sequence[Feeds],
    *,
    warmup: int,
    repeats: int,
    clock: str = "wall",
    flush_bytes: int = 0,
) -> np.ndarray:
    """The timing loop shared by the local backends (see :meth:`Backend.time`); the garbage
    collector is paused inside. The "cpu" clock is this thread's CPU time: the local runtimes
    compute on the calling thread when they have one thread.

    Each input's runs are consecutive: interleaving lengths makes the first run after a long
    input pay for the caches and buffers that input left behind, which is not the steady
    state of either a whole model or a block.
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock: {clock!r} is not one of ['wall', 'cpu']")
    now = time.perf_counter if clock == "wall" else time.thread_time
    scratch = np.ones(max(1, flush_bytes // 8)) if flush_bytes > 0 else None
    out = np.empty((repeats, len(feeds)))
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for j, f in enumerate(feeds):
            for _ in range(warmup):
                call(f)
            for r in range(repeats):
                if scratch is not None:
                    scratch += 1.0
                start = now()
                call(f)
                out[r, j] = now() - start
    finally:
        if enabled:
            gc.enable()
    return out


def _probe(spec: dict[str, Any]) -> int | None:
    """Runs ``speechnas.hardware._memprobe`` in a fresh interpreter; its peak RSS increase."""
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for i, (model_path, feeds) in enumerate(spec.pop("parts")):
            npz = Path(tmp) / f"feeds{i}.npz"
            np.savez(npz, **{k: np.asarray(v) for k, v in feeds.items()})
            parts.append({"model": str(model_path), "feeds": str(npz), "names": list(feeds)})
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps({**spec, "parts": parts}))
        env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
        done = subprocess.run(
            [sys.executable, "-m", "speechnas.hardware._memprobe", str(spec_path)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return None if result["peak"] is None else max(0, int(result["peak"]) - int(result["base"]))


class OrtBackend:
    """ONNX Runtime, CPU execution provider, one session per model file.

    Sessions are single-process and deterministic in scheduling: ``intra_op_num_threads`` =
    ``threads``, one inter-op thread, sequential execution, all graph optimisations.
    """

    name = "onnxruntime"
    precisions: tuple[str, ...] = ("fp32", "int8", "int8-static")

    def __init__(self, threads: int = 1, precision: str = "fp32") -> None:
        if precision not in self.precisions:
            raise ValueError(
                f"precision: {precision!r} is not one of {list(self.precisions)} (onnxruntime)"
            )
        if precision == "int8-static":
            from speechnas.hardware.cpu import check_precision

            check_precision(precision)
        self.threads = threads
        self.precision = precision
        self._sessions: dict[tuple[str, float], Any] = {}
        self._converted: dict[tuple[str, float], Path] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def prepared(self, model: str | Path) -> Path:
        """The file that runs for ``model``: itself, or for "int8-static" its QDQ int8 form
        (files that are already quantised run as they are)."""
        path = Path(model)
        if self.precision != "int8-static" or _is_quantised(path):
            return path
        key = (str(path.resolve()), path.stat().st_mtime)
        if key not in self._converted:
            from speechnas.export.quantize import quantize_qdq

            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="speechnas-qdq-")
            dst = Path(self._tmp.name) / f"{len(self._converted)}-{path.stem}.qdq.onnx"
            self._converted[key] = quantize_qdq(path, dst).path
        return self._converted[key]

    def session(self, model: str | Path) -> Any:
        import onnxruntime as ort

        path = self.prepared(model)
        key = (str(path.resolve()), path.stat().st_mtime)
        if key not in self._sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            if len(self._sessions) >= 8:  # keep a few: calibration opens hundreds of files
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[key] = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )
        return self._sessions[key]

    def _call(self, model: str | Path) -> Callable[[Feeds], list[np.ndarray]]:
        session = self.session(model)
        names = [i.name for i in session.get_inputs()]

        def call(feeds: Feeds) -> list[np.ndarray]:
            return session.run(None, {n: feeds[n] for n in names})

        return call

    def run(self, model: str | Path, feeds: Feeds) -> list[np.ndarray]:
        return self._call(model)(feeds)

    def time(
        self,
        model: str | Path,
        feeds: Sequence[Feeds],
        *,
        warmup: int,
        repeats: int,
        clock: str = "wall",
        flush_bytes: int = 0,
    ) -> np.ndarray:
        return time_calls(
            self._call(model),
            feeds,
            warmup=warmup,
            repeats=repeats,
            clock=clock,
            flush_bytes=flush_bytes,
        )

    def peak_memory(self, parts: Sequence[tuple[Any, Feeds]]) -> int | None:
        """Peak RSS increase of a fresh process over its size after importing ONNX Runtime,
        while it opens every session and runs it once: weights, arena and activations."""
        parts = [(self.prepared(m), f) for m, f in parts]
        return _probe({"runtime": self.name, "threads": self.threads, "parts": parts})


def _is_quantised(path: Path) -> bool:
    """Whether an ONNX file already holds quantised ops or says it was quantised."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if any(p.key == "quantization" for p in model.metadata_props):
        return True
    quantised = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeMatMul", "MatMulNBits"}
    return any(n.op_type in quantised for n in model.graph.node)


@contextlib.contextmanager
def _picklable_arch() -> Iterator[None]:
    """Lets ``torch.save`` pickle modules that hold an :class:`Arch` (immutable, so the default
    slot-state pickling cannot restore it) by rebuilding it from its mapping."""
    from speechnas.space.arch import Arch

    copyreg.dispatch_table[Arch] = lambda a: (Arch, (dict(a),))
    try:
        yield
    finally:
        copyreg.dispatch_table.pop(Arch, None)


class TorchBackend:
    """PyTorch eager on the CPU with ``threads`` intra-op threads, under ``inference_mode``;
    in bfloat16 for precision "bf16" (a converted copy of each module, made once)."""

    name = "torch"
    precisions: tuple[str, ...] = ("fp32", "bf16")

    def __init__(self, threads: int = 1, precision: str = "fp32") -> None:
        if precision not in self.precisions:
            raise ValueError(
                f"precision: {precision!r} is not one of {list(self.precisions)} (torch)"
            )
        if precision == "bf16":
            from speechnas.hardware.cpu import check_precision

            check_precision(precision)
        self.threads = threads
        self.precision = precision
        self._converted: dict[int, tuple[Any, Any]] = {}

    def prepared(self, model: Any) -> Any:
        """The module that runs for ``model``: itself, or a bfloat16 copy for "bf16"."""
        if self.precision == "fp32":
            return model
        import torch

        key = id(model)
        if key not in self._converted or self._converted[key][0] is not model:
            with _picklable_arch():
                copied = copy.deepcopy(model)
            from speechnas.hardware._bf16 import Bf16Inputs

            self._converted[key] = (model, Bf16Inputs(copied.to(torch.bfloat16)).eval())
        return self._converted[key][1]

    def _call(self, model: Any) -> Callable[[Feeds], object]:
        import torch

        module = self.prepared(model)

        def call(feeds: Feeds) -> object:
            with torch.inference_mode():
                return module(*(torch.from_numpy(np.asarray(v)) for v in feeds.values()))

        return call

    def _with_threads(self, fn: Callable[[], Any]) -> Any:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    def run(self, model: Any, feeds: Feeds) -> list[np.ndarray]:
        out = self._with_threads(lambda: self._call(model)(feeds))
        items = out if isinstance(out, tuple | list) else (out,)
        return [
            np.asarray((o.float() if o.is_floating_point() else o).detach().numpy()) for o in items
        ]

    def time(
        self,
        model: Any,
        feeds: Sequence[Feeds],
        *,
        warmup: int,
        repeats: int,
        clock: str = "wall",
        flush_bytes: int = 0,
    ) -> np.ndarray:
        call = self._call(model)
        return self._with_threads(
            lambda: time_calls(
                call, feeds, warmup=warmup, repeats=repeats, clock=clock, flush_bytes=flush_bytes
            )
        )

    def peak_memory(self, parts: Sequence[tuple[Any, Feeds]]) -> int | None:
        """Peak RSS increase of a fresh process over its size after importing PyTorch, while
        it loads every module (pickled to a temporary file here) and runs it once."""
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            saved = []
            for i, (module, feeds) in enumerate(parts):
                path = Path(tmp) / f"module{i}.pt"
                with _picklable_arch():
                    torch.save(self.prepared(module), path)
                saved.append((path, feeds))
            return _probe({"runtime": self.name, "threads": self.threads, "parts": saved})


def backend_for(runtime: str, threads: int, precision: str = "fp32") -> Backend:
    """The local backend of a target's runtime, at ``precision`` ("int8" is applied to the
    files before they reach the backend, by ``program.load_program``, so it runs as "fp32")."""
    if runtime == "onnxruntime":
        return OrtBackend(threads, "fp32" if precision == "int8" else precision)
    if runtime == "torch":
        return TorchBackend(threads, precision)
    raise ValueError(f"runtime: {runtime!r} is not one of ['onnxruntime', 'torch']")


def backend_for_target(target: Any) -> Backend:
    """The local backend of a :class:`~speechnas.hardware.target.Target`."""
    return backend_for(target.runtime, target.threads, target.precision)
