"""Micro-benchmarks of building blocks on a target, and their latency-vs-length fits.

Each block (see :mod:`speechnas.hardware.blocks`) is exported once with a symbolic length
axis (checked against PyTorch at a second length; blocks that do not trace cleanly are
exported once per length instead; a static graph would also have its masks constant-folded
away), quantised for an int8 target, and timed at a grid of lengths in two cache states:

* cold: before every timed run ``FLUSH_BYTES`` are written, which evicts the core's private
  cache (L2) but not the shared L3. Inside a model whose weights exceed L2 the other layers
  evict a block's weights between its uses, and isolated blocks timed warm sum to well under
  the whole model at short lengths;
* warm: runs back to back, as every block of a model that fits in L2 runs.

The predictor mixes the two by the model's size (:mod:`speechnas.hardware.predictor`). The
median per length of each state is fitted by ``ms(T) = a + b·T + c·T²`` with non-negative
coefficients (scipy's NNLS) minimising the relative error: non-negative terms keep every
prediction positive and non-decreasing in length, and the quadratic term carries the
attention scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls

from speechnas.hardware.backends import Backend
from speechnas.hardware.block_modules import block_module
from speechnas.hardware.blocks import Block
from speechnas.hardware.stream_blocks import CHUNK_AXIS, stream_block_module
from speechnas.hardware.target import Target

__all__ = [
    "FLUSH_BYTES",
    "GRIDS",
    "PASSES",
    "BlockFit",
    "fit_length_model",
    "lengths_of",
    "measure_blocks",
]

#: Bytes written before every timed block run: a few times the private L2 of current x86 and
#: Arm cores (1-2 MiB), far below their shared L3.
FLUSH_BYTES = 4 * 2**20
#: Largest relative miss of a block's fit before the block is timed again.
REMEASURE_ERROR = 0.15
#: Passes over all blocks a calibration makes. A burst of contention on a shared machine slows
#: every block timed during it by tens of percent, so one pass leaves some blocks inflated;
#: the least of two passes' medians (each per length and cache state) is the block without the
#: burst unless both passes met one.
PASSES = 2

#: Calibration lengths per axis: encoder frames cover 2 s at subsampling 8 (25 frames) to
#: 25 s at 4 (625); input frames and samples cover 0.6 to 20 s.
GRIDS: dict[str, tuple[int, ...]] = {
    "frames": (16, 40, 100, 200, 400, 640),
    "input_frames": (60, 150, 400, 1000, 2000),
    "samples": (16000, 48000, 128000, 320000),
    "step": (1,),
}


@dataclass(frozen=True, slots=True)
class BlockFit:
    """A block's measured medians (ms) at the calibration lengths, cold and warm, their fitted
    curves, and the bytes of the block's weights as the target runs them (its file for ONNX
    Runtime, int8 included; its state dict for PyTorch)."""

    key: str
    axis: str
    coef: tuple[float, float, float]
    warm_coef: tuple[float, float, float]
    lengths: tuple[int, ...]
    ms: tuple[float, ...]
    warm_ms: tuple[float, ...]
    bytes: int
    dynamic: bool
    error: float  # the largest relative residual of either fit at the calibration lengths

    def __call__(self, length: float, cold: float = 1.0) -> float:
        """Predicted milliseconds of one run at ``length`` (ignored for a decoding step),
        with a share ``cold`` of the block's weights evicted from the private cache."""
        a, b, c = (w + cold * (k - w) for k, w in zip(self.coef, self.warm_coef, strict=True))
        return a + b * length + c * length * length

    def to_dict(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "coef": list(self.coef),
            "warm_coef": list(self.warm_coef),
            "lengths": list(self.lengths),
            "ms": list(self.ms),
            "warm_ms": list(self.warm_ms),
            "bytes": self.bytes,
            "dynamic": self.dynamic,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, key: str, data: dict[str, Any]) -> BlockFit:
        def triple(values: Any) -> tuple[float, float, float]:
            a, b, c = (float(v) for v in values)
            return a, b, c

        return cls(
            key=key,
            axis=str(data["axis"]),
            coef=triple(data["coef"]),
            warm_coef=triple(data["warm_coef"]),
            lengths=tuple(int(v) for v in data["lengths"]),
            ms=tuple(float(v) for v in data["ms"]),
            warm_ms=tuple(float(v) for v in data["warm_ms"]),
            bytes=int(data["bytes"]),
            dynamic=bool(data["dynamic"]),
            error=float(data["error"]),
        )


def lengths_of(block: Block) -> tuple[int, ...]:
    """The lengths ``block`` is timed at: its axis's grid, or its one shape for a streamed
    chunk (its length is ignored)."""
    return (1,) if block.axis == CHUNK_AXIS else GRIDS[block.axis]


def fit_length_model(
    lengths: Sequence[float], ms: Sequence[float]
) -> tuple[tuple[float, float, float], float]:
    """Non-negative (a, b, c) of ``a + b·T + c·T²`` with the least squared relative error, and
    the largest relative residual. One length gives the constant (a, 0, 0)."""
    t = np.asarray(lengths, dtype=float)
    y = np.asarray(ms, dtype=float)
    if len(t) == 1:
        return (float(y[0]), 0.0, 0.0), 0.0
    scale = t.max()
    design = np.stack([np.ones_like(t), t / scale, (t / scale) ** 2], axis=1)
    # Rows divided by the measurement: the residuals are relative, so the short lengths (the
    # millisecond ones) weigh as much as the long ones.
    weights = 1.0 / np.maximum(y, 1e-9)
    sol, _ = nnls(design * weights[:, None], np.ones_like(y))
    coef = (float(sol[0]), float(sol[1] / scale), float(sol[2] / scale**2))
    fitted = design @ sol
    return coef, float(np.max(np.abs(fitted - y) / np.maximum(y, 1e-9)))


def _numpy(feeds: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in feeds.items()}


def _export(
    module: torch.nn.Module,
    feeds: dict[str, torch.Tensor],
    path: Path,
    dynamic: bool,
    axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """``module`` as ONNX: with ``dynamic`` a symbolic length axis, else the given ``axes``."""
    from speechnas.export.graph import export_module

    with torch.no_grad():
        out = module(*feeds.values())
    n_out = len(out) if isinstance(out, tuple) else 1
    axes = dict(axes or {})
    if dynamic:
        axes = {n: ({1: "T", 2: "T"} if n == "mask" else {1: "T"}) for n in feeds if n != "lengths"}
    return export_module(
        module,
        tuple(feeds.values()),
        path,
        input_names=list(feeds),
        output_names=[f"out{i}" for i in range(n_out)],
        dynamic_axes=axes,
    )


def _matches(backend: Backend, path: Path, module: torch.nn.Module, feeds: dict) -> bool:
    """Whether the graph gives PyTorch's outputs at a length it was not traced at."""
    try:
        got = backend.run(path, _numpy(feeds))
    except Exception:  # a graph that cannot run at another length did not trace cleanly
        return False
    with torch.no_grad():
        out = module(*feeds.values())
    expected = out if isinstance(out, tuple) else (out,)
    for g, e in zip(got, expected, strict=True):
        e = e.numpy()
        if g.shape != e.shape or not np.allclose(
            g, e, rtol=1e-3, atol=1e-3 * (1 + np.abs(e).max())
        ):
            return False
    return True


Runs = list[tuple[Any, list[dict[str, np.ndarray]]]]


def _prepare(
    block: Block, target: Target, backend: Backend, folder: Path
) -> tuple[Runs, int, bool]:
    """What to time for each length (model, inputs), the weight bytes, and whether one graph
    with a symbolic length served every length."""
    from speechnas.export.quantize import quantize_int8

    grid = lengths_of(block)
    axes: dict[str, dict[int, str]] = {}
    if block.axis == CHUNK_AXIS:  # one fixed shape, cut from the block's source model
        module, feed, axes = stream_block_module(block)
        feeds = [feed]
    else:
        module, make = block_module(block)
        gen = torch.Generator().manual_seed(0)
        feeds = [make(t, gen) for t in grid]
    if target.runtime == "torch":
        size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
        return [(module, [_numpy(f) for f in feeds])], size, True
    folder.mkdir(parents=True, exist_ok=True)

    def ready(path: Path) -> Path:
        if target.precision == "int8":
            return quantize_int8(path, path.with_suffix(".int8.onnx")).path
        return path

    path = _export(module, feeds[-1], folder / "block.onnx", dynamic=len(grid) > 1, axes=axes)
    if len(grid) == 1 or _matches(backend, path, module, feeds[1]):
        path = ready(path)
        return [(path, [_numpy(f) for f in feeds])], path.stat().st_size, len(grid) > 1
    paths = [ready(_export(module, f, folder / f"block{i}.onnx", dynamic=False))
             for i, f in enumerate(feeds)]  # fmt: skip
    runs: Runs = [(p, [_numpy(f)]) for p, f in zip(paths, feeds, strict=True)]
    return runs, paths[0].stat().st_size, False


def _times(backend: Backend, runs: Runs, timing: dict[str, Any]) -> np.ndarray:
    """(repeats, lengths) milliseconds."""
    columns = [backend.time(model, feeds, **timing) for model, feeds in runs]
    return np.concatenate(columns, axis=1) * 1e3


def measure_blocks(
    blocks: Iterable[Block],
    target: Target,
    backend: Backend,
    work_dir: Path,
    *,
    warmup: int,
    repeats: int,
    flush_bytes: int = FLUSH_BYTES,
    passes: int = PASSES,
    progress: Callable[[Block], None] | None = None,
) -> dict[str, BlockFit]:
    """Times every block at its axis's grid on ``target``, cold and warm, and fits both.

    The blocks are timed in ``passes`` passes over all of them, so a block's passes lie apart
    by the time of the others; its median per length and cache state is the least of its
    passes' medians (see :data:`PASSES`). Decoding steps are only timed warm: the prediction
    network and the joiner alternate with each other alone, and their weights stay in cache as
    they do in a greedy search. A block whose fit then misses a median by more than
    ``REMEASURE_ERROR`` (a run disturbed inside a pass) is timed once more, and the median is
    taken over that pass's runs and the best pass's. ``progress`` is called once per block and
    pass.
    """
    if passes < 1:
        raise ValueError(f"passes: {passes} must be at least 1")
    blocks = list(blocks)
    base = {"warmup": warmup, "repeats": repeats, "clock": target.clock}
    prepared = []
    for i, block in enumerate(blocks):
        runs, size, dynamic = _prepare(block, target, backend, work_dir / f"b{i}")
        prepared.append((block, runs, size, dynamic))

    def timed(block: Block, runs: Runs) -> tuple[np.ndarray, np.ndarray | None]:
        """(repeats, lengths) ms warm, and cold (None for a decoding step)."""
        warm = _times(backend, runs, {**base, "flush_bytes": 0})
        if block.axis == "step":
            return warm, None
        return warm, _times(backend, runs, {**base, "flush_bytes": flush_bytes})

    # per block: for each length, the runs of the pass with the least median there so far
    best: list[tuple[np.ndarray, np.ndarray | None]] = []
    for n in range(passes):
        for i, (block, runs, _, _) in enumerate(prepared):
            got = timed(block, runs)
            if n == 0:
                best.append(got)
            else:
                best[i] = (_least(best[i][0], got[0]), _least_or_none(best[i][1], got[1]))
            if progress is not None:
                progress(block)
    fits: dict[str, BlockFit] = {}
    for (block, runs, size, dynamic), (warm_runs, cold_runs) in zip(prepared, best, strict=True):
        grid = lengths_of(block)
        for again in (False, True):
            if again:  # one more pass, its runs pooled with the best one's
                more_warm, more_cold = timed(block, runs)
                warm_runs = np.concatenate([warm_runs, more_warm])
                if cold_runs is not None and more_cold is not None:
                    cold_runs = np.concatenate([cold_runs, more_cold])
            warm = np.median(warm_runs, axis=0)
            cold = np.median(cold_runs, axis=0) if cold_runs is not None else warm
            coef, cold_error = fit_length_model(grid, cold)
            warm_coef, warm_error = fit_length_model(grid, warm)
            if max(cold_error, warm_error) <= REMEASURE_ERROR:
                break
        fits[block.key] = BlockFit(
            key=block.key,
            axis=block.axis,
            coef=coef,
            warm_coef=warm_coef,
            lengths=grid,
            ms=tuple(float(v) for v in cold),
            warm_ms=tuple(float(v) for v in warm),
            bytes=size,
            dynamic=dynamic,
            error=max(cold_error, warm_error),
        )
    return fits


def _least(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Of two passes' (repeats, lengths) runs, each length's runs from the pass with the lower
    median there."""
    take_b = np.median(b, axis=0) < np.median(a, axis=0)
    return np.where(take_b[None, :], b, a)


def _least_or_none(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return None if a is None or b is None else _least(a, b)
