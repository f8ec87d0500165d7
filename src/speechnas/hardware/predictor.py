"""A latency predictor calibrated per target from micro-benchmarks of building blocks.

nn-Meter's idea at the granularity of this package's blocks: an architecture is decomposed
into blocks (:mod:`speechnas.hardware.blocks`), each distinct block is timed on the target over
a grid of lengths, with its weights in and out of the core's private cache, and fitted as
``a + b·T + c·T²`` (:mod:`speechnas.hardware.calibration`). The latency of a whole
architecture at any utterance length is the sum of its blocks at their lengths, each between
its warm and cold curve by the share of the model's weights that cannot stay in that cache
(``1 - L2 / weight bytes``, at least 0), minus the fixed cost of the extra runtime calls the
blocks were timed with (the deployed encoder side is one call). An optional final
``scale · sum (+ offset)`` correction, fitted on a few whole models, absorbs what isolated
blocks do not see (the shared L3, the graph glue between blocks). What isolated blocks miss
differs by encoder family (attention stacks lose more than LSTMs), so a family with enough
fitting models gets its own scale on top; :func:`speechnas.hardware.evaluation.accuracy` reports
the result on architectures not used to fit it.

The table of fitted blocks is a JSON file keyed by target, block key and package versions, so a
search calibrates each block once per machine and reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls

from speechnas.hardware.backends import Backend, backend_for_target
from speechnas.hardware.blocks import RUN_BLOCK, Block, decompose
from speechnas.hardware.calibration import FLUSH_BYTES, GRIDS, PASSES, BlockFit, measure_blocks
from speechnas.hardware.program import chunk_windows, decoding_calls, utterance_length
from speechnas.hardware.stream_blocks import decompose_stream, io_block
from speechnas.hardware.target import Target, load_target, target_from_dict
from speechnas.nn.blocks import subsampled_lengths
from speechnas.nn.build import feature_config
from speechnas.nn.spec import decode
from speechnas.space import Arch, SearchSpace

__all__ = ["Confidence", "LatencyPredictor", "cache_file", "default_cache_dir"]

# 2: depthwise convolutions export as 2-D convolutions; 3: LSTM layers are pre-norm residual
# (other timings)
FORMAT = 3

#: The relative half-width claimed for a prediction without a whole-model correction: the raw
#: block sum put 42-77% of random architectures within ±10% on fresh machines (MAPE 18%).
DEFAULT_BAND = 0.20
#: The narrowest half-width claimed, whatever the fit says: the same models timed in two
#: processes minutes apart moved by more than 5% in a sizeable share of cases.
MIN_BAND = 0.05
#: A prediction whose half-width exceeds this is low-confidence (the ±10% accuracy goal).
TOLERANCE = 0.10


@dataclass(frozen=True, slots=True)
class Confidence:
    """A prediction with its relative half-width ``band`` and what that band rests on."""

    ms: float
    band: float
    basis: str

    @property
    def low(self) -> bool:
        """Wider than :data:`TOLERANCE`: worth a real measurement wherever it decides."""
        return self.band > TOLERANCE

    def straddles(self, limit: float) -> bool:
        """Whether ``limit`` lies inside the band, so the prediction cannot tell on which side
        of it the architecture falls."""
        return self.ms * (1.0 - self.band) <= limit <= self.ms * (1.0 + self.band)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _l2_bytes() -> int:
    """The private (level 2) cache of one core, from sysfs; 1 MiB where it cannot be read."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()
                units = {"K": 2**10, "M": 2**20}
                return int(size.rstrip("KM")) * units.get(size[-1], 1)
        except (OSError, ValueError):
            continue
    return 2**20


def calibration_identity(target: Target) -> dict[str, Any]:
    """What a calibration table is only valid for: how the target runs models, the package
    versions that run them and the processor."""
    from speechnas.hardware.profiler import runtime_versions

    v = runtime_versions()
    return {
        "runtime": target.runtime,
        "precision": target.precision,
        "threads": target.threads,
        "clock": target.clock,
        "protocol": {
            "format": FORMAT,
            "flush_bytes": FLUSH_BYTES,
            "grids": {k: list(g) for k, g in GRIDS.items()},
        },
        "versions": {k: v[k] for k in ("speechnas", "torch", "onnxruntime", "onnx", "numpy")},
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "arch": platform.machine(),
            "l2_bytes": _l2_bytes(),
        },
    }


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/speechnas/latency`` (``~/.cache/speechnas/latency`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "speechnas" / "latency"


def cache_file(target: Target, cache_dir: str | Path) -> Path:
    """The table of ``target`` under ``cache_dir``: named by the target and a digest of its
    :func:`calibration_identity`, so a new runtime version starts a new table."""
    identity = json.dumps(calibration_identity(target), sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{target.name}-{digest}.json"


class LatencyPredictor:
    """Predicted milliseconds of an architecture on one target (see the module docstring).

    Satisfies the search's ``LatencyModel`` protocol: ``name``, ``measured`` and
    ``predict(arch, seconds, vocab_size)``. With ``auto_extend``, a prediction that meets a
    block missing from the table measures it first (and writes the table back to
    ``cache_path`` when set); otherwise it raises a ValueError naming the block.
    """

    measured = False

    def __init__(
        self,
        target: Target | str,
        fits: Mapping[str, BlockFit] | None = None,
        *,
        correction: tuple[float, float] = (1.0, 0.0),
        correction_archs: Sequence[str] = (),
        family_scales: Mapping[str, float] | None = None,
        bands: Mapping[str, float] | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.target = load_target(target)
        self.fits: dict[str, BlockFit] = dict(fits or {})
        self.correction = (float(correction[0]), float(correction[1]))
        self.correction_archs = list(correction_archs)
        self.family_scales: dict[str, float] = dict(family_scales or {})
        # relative half-width per encoder family ("*": a family without its own scale)
        self.bands: dict[str, float] = dict(bands or {})
        self.identity = identity or calibration_identity(self.target)
        self.name = f"predicted:{self.target.name}"
        self.auto_extend = False
        self.cache_path: Path | None = None

    @classmethod
    def for_target(
        cls,
        target: Target | str,
        *,
        cache_dir: str | Path | None = None,
        auto_extend: bool = False,
    ) -> LatencyPredictor:
        """The predictor of ``target`` from its table in ``cache_dir`` (default:
        :func:`default_cache_dir`), or an empty one when there is no table yet; either way its
        ``cache_path`` is that table's file. With ``auto_extend`` a prediction measures the
        blocks it lacks and writes the table back (the search's use); without, it raises."""
        t = load_target(target)
        path = cache_file(t, cache_dir if cache_dir is not None else default_cache_dir())
        predictor = cls.load(path) if path.is_file() else cls(t)
        predictor.cache_path = path
        predictor.auto_extend = auto_extend
        return predictor

    # -- calibration -----------------------------------------------------------------------

    @classmethod
    def calibrate(
        cls,
        target: Target | str,
        archs_or_space: Iterable[Mapping[str, Any]] | SearchSpace,
        *,
        vocab_size: int = 32,
        samples: int = 500,
        seed: int = 0,
        cache: str | Path | None = None,
        warmup: int | None = None,
        repeats: int | None = None,
        passes: int = PASSES,
        backend: Backend | None = None,
        progress: bool = False,
    ) -> LatencyPredictor:
        """Times every block of ``archs_or_space`` on ``target``.

        A space stands for ``samples`` architectures drawn from it (seeded by ``seed``); the
        blocks of later candidates that these missed are added by :meth:`extend`. With
        ``cache`` (a folder), blocks already in the target's table there are reused and the
        new ones are written back. ``warmup``/``repeats`` default to the target's; ``passes``:
        see :func:`speechnas.hardware.calibration.measure_blocks`.
        """
        target = load_target(target)
        predictor = cls(target)
        path = cache_file(target, cache) if cache is not None else None
        if path is not None and path.is_file():
            loaded = cls.load(path)
            if loaded.identity == predictor.identity:  # same runtime, versions and processor
                predictor.fits = loaded.fits
                if loaded.target == target:  # the correction is only valid for the same input
                    predictor.correction = loaded.correction
                    predictor.correction_archs = loaded.correction_archs
                    predictor.family_scales = loaded.family_scales
                    predictor.bands = loaded.bands
        predictor.cache_path = path
        if isinstance(archs_or_space, SearchSpace):
            rng = random.Random(seed)
            archs: list[Mapping[str, Any]] = [archs_or_space.sample(rng) for _ in range(samples)]
        else:
            archs = list(archs_or_space)
        predictor.extend(
            archs,
            vocab_size=vocab_size,
            warmup=warmup,
            repeats=repeats,
            passes=passes,
            backend=backend,
            progress=progress,
        )
        if path is not None:
            predictor.save(path)
        return predictor

    def missing(
        self, archs: Iterable[Mapping[str, Any]], *, vocab_size: int = 32, chunk: bool = False
    ) -> list[Block]:
        """The blocks of ``archs`` not in the table yet (the fixed-cost block included): the
        blocks of an utterance, or with ``chunk`` those of a streamed chunk."""
        split = decompose_stream if chunk else decompose
        seen: dict[str, Block] = {}
        for arch in archs:
            for use in split(arch, vocab_size=vocab_size):
                seen.setdefault(use.block.key, use.block)
                if use.block.kind == "stream_layer":
                    io = io_block(use.block)
                    seen.setdefault(io.key, io)
        seen.setdefault(RUN_BLOCK.key, RUN_BLOCK)
        return [b for k, b in seen.items() if k not in self.fits]

    def extend(
        self,
        archs: Iterable[Mapping[str, Any]],
        *,
        vocab_size: int = 32,
        warmup: int | None = None,
        repeats: int | None = None,
        passes: int = PASSES,
        backend: Backend | None = None,
        progress: bool = False,
        chunk: bool = False,
    ) -> int:
        """Measures the blocks of ``archs`` that are missing (a streamed chunk's with
        ``chunk``); returns how many."""
        todo = self.missing(archs, vocab_size=vocab_size, chunk=chunk)
        if not todo:
            return 0
        t = self.target
        backend = backend or backend_for_target(t)
        kwargs = {
            "warmup": t.warmup if warmup is None else warmup,
            "repeats": t.repeats if repeats is None else repeats,
            "passes": passes,
        }
        with tempfile.TemporaryDirectory() as tmp:
            if progress:
                from rich.progress import Progress

                with Progress(transient=True) as bar:
                    task = bar.add_task(f"calibrating {t.name}", total=len(todo) * passes)
                    fits = measure_blocks(
                        todo, t, backend, Path(tmp), **kwargs, progress=lambda b: bar.advance(task)
                    )
            else:
                fits = measure_blocks(todo, t, backend, Path(tmp), **kwargs)
        self.fits.update(fits)
        return len(todo)

    # -- prediction ------------------------------------------------------------------------

    def _fit(self, block: Block) -> BlockFit:
        if block.key not in self.fits:
            raise ValueError(
                f"latency predictor {self.name}: block {block.key} is not calibrated; "
                "call extend([arch]) first"
            )
        return self.fits[block.key]

    @staticmethod
    def _lengths(arch: Mapping[str, Any], n: int) -> dict[str, int]:
        """Each axis's length when the model gets ``n`` input steps (frames or samples)."""
        spec = decode(arch)
        t_in = n
        if spec.waveform_input:  # LearnableFrontend: 400 samples, hop 160
            t_in = 1 + (n - 400) // 160 if n >= 400 else 0
        t_enc = int(subsampled_lengths(torch.tensor([t_in]), spec.subsampling_factor)[0])
        return {"samples": n, "input_frames": t_in, "frames": t_enc, "step": 1}

    def raw_ms(self, arch: Mapping[str, Any], seconds: float = 5.0, vocab_size: int = 32) -> float:
        """The block sum before the whole-model correction."""
        return sum(self.raw_parts(arch, seconds, vocab_size).values())

    def raw_parts(
        self, arch: Mapping[str, Any], seconds: float = 5.0, vocab_size: int = 32
    ) -> dict[str, float]:
        """The block sum by block kind (``run``: the runtime's fixed cost of a call), before
        the whole-model correction; the values add up to :meth:`raw_ms`."""
        uses = decompose(arch, vocab_size=vocab_size)
        features = feature_config(arch)
        if self.target.streaming:
            _, windows = chunk_windows(features, self.target, seconds)
        else:
            windows = [(0, 0, utterance_length(features, seconds))]
        at = [self._lengths(arch, hi - lo) for lo, _, hi in windows]
        shares = np.array([(hi - start) / max(1, hi - lo) for lo, start, hi in windows])
        pred_calls, join_calls = decoding_calls(
            seconds, np.array([a["frames"] for a in at]), shares
        )
        # The share of a block's weights the rest of the model evicts from the core's private
        # cache between two uses of it: none while all encoder-side weights fit, all of them
        # in the limit of a model much larger than the cache.
        encoder_side = [u for u in uses if u.calls == "utterance"]
        weights = sum(u.times * self._fit(u.block).bytes for u in encoder_side)
        l2 = int(self.identity["machine"].get("l2_bytes") or _l2_bytes())
        cold = max(0.0, 1.0 - l2 / weights) if weights > 0 else 0.0
        # Every block was timed as a call of its own and paid the runtime's fixed cost of a
        # call; deployed, the encoder side is one call. So each encoder-side block counts
        # without that cost (never below zero, so a block never lowers the sum) and the
        # utterance pays it once per chunk. Decoding steps are calls of their own anyway.
        run = self._fit(RUN_BLOCK)(0.0, cold)
        parts: dict[str, float] = {RUN_BLOCK.kind: 0.0}
        for i, lengths in enumerate(at):
            calls = {
                "utterance": 1.0,
                "prediction_steps": float(pred_calls[i]),
                "joiner_calls": float(join_calls[i]),
            }
            parts[RUN_BLOCK.kind] += run
            for use in uses:
                ms = self._fit(use.block)(lengths[use.block.axis], cold)
                if use.calls == "utterance":
                    ms = max(ms - run, 0.0)
                kind = use.block.kind
                parts[kind] = parts.get(kind, 0.0) + use.times * calls[use.calls] * ms
        return parts

    def _ensure(self, arch: Mapping[str, Any], vocab_size: int, chunk: bool = False) -> None:
        """With ``auto_extend``, measures the blocks of ``arch`` the table lacks and saves."""
        if self.auto_extend and self.missing([arch], vocab_size=vocab_size, chunk=chunk):
            self._sync()  # another process sharing the table may have measured them
            if self.extend([arch], vocab_size=vocab_size, chunk=chunk) and self.cache_path:
                self._sync()
                self.save(self.cache_path)

    def predict(self, arch: Mapping[str, Any], seconds: float = 5.0, vocab_size: int = 32) -> float:
        """Predicted milliseconds of ``arch`` on one utterance of ``seconds`` (the profiler's
        definition of latency; on a streaming target, the sum over the utterance's chunks)."""
        self._ensure(arch, vocab_size)
        scale, offset = self.correction
        scale = self.family_scales.get(decode(arch).encoder, scale)
        return scale * self.raw_ms(arch, seconds, vocab_size) + offset

    def predict_chunk(self, arch: Mapping[str, Any], vocab_size: int = 32) -> float:
        """Predicted milliseconds of one steady-state chunk of the streaming ``arch``, its
        caches full (what :func:`speechnas.hardware.stream.chunk_latency` measures): the sum of
        its chunk blocks (:mod:`speechnas.hardware.stream_blocks`), each mixed between warm and
        cold like the utterance's blocks. The shell is counted whole (its inputs and outputs
        are the deployed graph's); a layer without what timing it alone added: binding its
        chunk, padding and mask and the runtime's call (its ``stream_io`` block). No
        whole-model correction: the blocks are the chunk's own shapes."""
        self._ensure(arch, vocab_size, chunk=True)
        uses = decompose_stream(arch, vocab_size=vocab_size)
        weights = sum(u.times * self._fit(u.block).bytes for u in uses)
        l2 = int(self.identity["machine"].get("l2_bytes") or _l2_bytes())
        cold = max(0.0, 1.0 - l2 / weights) if weights > 0 else 0.0
        total = 0.0
        for u in uses:
            ms = self._fit(u.block)(0.0, cold)
            if u.block.kind == "stream_layer":
                ms = max(ms - self._fit(io_block(u.block))(0.0, cold), 0.0)
            total += u.times * ms
        return total

    def _sync(self) -> None:
        """Adopts the blocks the cache file holds (the file wins where both have a block), so
        processes sharing a table, such as the workers of a search, time each block once and
        predict the same for the same architecture."""
        if self.cache_path is None or not self.cache_path.is_file():
            return
        try:
            disk = LatencyPredictor.load(self.cache_path)
        except (OSError, ValueError, KeyError):  # being replaced right now; measure instead
            return
        if disk.identity == self.identity:
            self.fits.update(disk.fits)

    # -- correction ------------------------------------------------------------------------

    def fit_correction(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        vocab_size: int = 32,
        offset: bool = False,
        per_family: int = 2,
    ) -> None:
        """Fits ``measured ≈ scale · block sum`` (``+ offset`` with ``offset``; both >= 0, least
        squared relative error) on rows of :func:`speechnas.hardware.evaluation.measure_archs`;
        those archs should not be used to judge it. The offset is off by default: a constant
        fitted on a few models weighs heavily on the smallest ones. An encoder family with at
        least ``per_family`` distinct fitting models also gets its own scale (0 turns that
        off).

        Each fitting model is then predicted by the correction fitted without it (leave one
        model out); the largest such relative error of a family's models is its ``band``, and
        that of every model under the shared scale alone is the band of a family without a
        scale of its own (``"*"``): what :meth:`confidence` reports."""
        raw = np.array(
            [self.raw_ms(Arch.from_json(r["arch"]), r["seconds"], vocab_size) for r in rows]
        )
        measured = np.array([r["measured_ms"] for r in rows])
        families = np.array([str(r["arch"].get("encoder")) for r in rows])
        keys = np.array([str(r["key"]) for r in rows])
        fit = _Fit(offset=offset, per_family=per_family)
        self.correction, self.family_scales = fit(raw, measured, families, keys)
        self.correction_archs = sorted(set(keys.tolist()))
        bands: dict[str, float] = {}
        for key in self.correction_archs:
            out = keys == key
            (scale, off), scales = fit(raw[~out], measured[~out], families[~out], keys[~out])
            family = str(families[out][0])
            own = scales.get(family, scale) * raw[out] + off
            shared = scale * raw[out] + off
            own_err = float(np.max(np.abs(own / measured[out] - 1.0)))
            shared_err = float(np.max(np.abs(shared / measured[out] - 1.0)))
            if family in self.family_scales:
                bands[family] = max(bands.get(family, 0.0), own_err)
            bands["*"] = max(bands.get("*", 0.0), shared_err)
        self.bands = bands

    def confidence(
        self, arch: Mapping[str, Any], seconds: float = 5.0, vocab_size: int = 32
    ) -> Confidence:
        """The prediction of ``arch`` with its relative half-width (at least :data:`MIN_BAND`):
        its family's leave-one-out error in the whole-model correction, the shared scale's for
        a family without a scale of its own, :data:`DEFAULT_BAND` without a correction."""
        ms = self.predict(arch, seconds, vocab_size)
        family = decode(arch).encoder
        if not self.correction_archs:
            band, basis = DEFAULT_BAND, "no whole-model correction (speechnas latency correct)"
        elif not self.bands:  # fitted before bands were kept
            band, basis = DEFAULT_BAND, "no bands: fit the correction again"
        elif family in self.bands:
            band = self.bands[family]
            basis = f"the largest leave-one-out error of the correction's {family} models"
        else:
            band = self.bands.get("*", DEFAULT_BAND)
            basis = f"no {family} model in the correction: the shared scale's error"
        return Confidence(ms, max(MIN_BAND, band), basis)

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "target": self.target.to_dict(),
            "identity": self.identity,
            "correction": {
                "scale": self.correction[0],
                "offset_ms": self.correction[1],
                "archs": self.correction_archs,
                "family_scales": self.family_scales,
                "bands": self.bands,
            },
            "blocks": {k: f.to_dict() for k, f in sorted(self.fits.items())},
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        data = json.loads(Path(path).read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: format {data.get('format')!r} is not {FORMAT}")
        c = data["correction"]
        return cls(
            target_from_dict(data["target"], source=str(path)),
            {k: BlockFit.from_dict(k, v) for k, v in data["blocks"].items()},
            correction=(c["scale"], c["offset_ms"]),
            correction_archs=c.get("archs", []),
            family_scales=c.get("family_scales", {}),
            bands=c.get("bands", {}),
            identity=data["identity"],
        )


@dataclass(frozen=True, slots=True)
class _Fit:
    """The whole-model correction's least-squares fit (see
    :meth:`LatencyPredictor.fit_correction`): ``((scale, offset), family scales)``."""

    offset: bool
    per_family: int

    def __call__(
        self, raw: np.ndarray, measured: np.ndarray, families: np.ndarray, keys: np.ndarray
    ) -> tuple[tuple[float, float], dict[str, float]]:
        columns = [raw, np.ones_like(raw)] if self.offset else [raw]
        coef, _ = nnls(np.stack(columns, axis=1) / measured[:, None], np.ones_like(measured))
        shared = (float(coef[0]), float(coef[1]) if self.offset else 0.0)
        scales: dict[str, float] = {}
        for family in sorted(set(families.tolist())) if self.per_family else ():
            mine = families == family
            if len(set(keys[mine].tolist())) < self.per_family:
                continue
            # least squared relative error of scale · raw, given the shared offset
            x = raw[mine] / (measured[mine] - shared[1])
            scales[family] = float(np.sum(x) / np.sum(x * x))
        return shared, scales
