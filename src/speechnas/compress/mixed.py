"""Mixed-precision quantization of a trained checkpoint, end to end: KL sensitivity on held-out
utterances, bit allocation under a size budget, quantization-aware training.

    record = mixed_precision("runs/x/best", "runs/x-4bit", average_bits=4.0, steps=400)

The budget is given either in bytes or as an average bit width (the size of a model whose
quantized weights average that many bits, with the same per-channel scales and float
parameters), or a uniform width replaces the allocation (the comparison). Writes
``allocation.json`` (bits per sub-module, bytes, ratio, sensitivity) and ``allocation.png``
next to the QAT checkpoint folder ``output_dir/best``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from speechnas.compress.allocate import Allocation, allocate, module_bytes, uniform_allocation
from speechnas.compress.plots import plot_allocations
from speechnas.compress.qat import checkpoint_config, qat
from speechnas.compress.sensitivity import Sensitivity, kl_sensitivity
from speechnas.data.dataset import Batch, SpeechDataset
from speechnas.data.loading import load_utterances
from speechnas.evaluate.decode import prepare_batches
from speechnas.nn.quant import weight_bytes
from speechnas.train.checkpoint import LoadedModel, load_model
from speechnas.versions import versions

__all__ = ["average_bits_budget", "dev_batches", "float_bytes", "mixed_precision", "sensitivity_of"]

log = logging.getLogger(__name__)


def dev_batches(loaded: LoadedModel, manifest: str | Path, n: int) -> list[Batch]:
    """The first ``n`` utterances of ``manifest`` as feature batches of the model."""
    if n < 1:
        raise ValueError(f"held-out utterances: expected a positive count, got {n}")
    utts = load_utterances(manifest, skip_invalid=False)[:n]
    ds = SpeechDataset(utts, loaded.tokenizer, loaded.features)
    return [b for _, b in prepare_batches(ds, max_batch_seconds=120.0)]


def sensitivity_of(
    checkpoint: str | Path, *, utterances: int = 60, cache: Path | None = None
) -> Sensitivity:
    """KL sensitivity of the checkpoint's sub-modules on the first ``utterances`` of its dev
    set, read from ``cache`` when that file exists (and written there otherwise)."""
    if cache is not None and cache.is_file():
        return Sensitivity.from_dict(json.loads(cache.read_text()))
    loaded = load_model(checkpoint)
    batches = dev_batches(loaded, checkpoint_config(checkpoint).data.dev, utterances)
    s = kl_sensitivity(loaded.model, batches, progress=True)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(s.to_dict()))
    return s


def float_bytes(loaded: LoadedModel, s: Sensitivity) -> int:
    """Bytes of everything that stays float: all but the weights of ``s``'s sub-modules."""
    return weight_bytes(loaded.model) - sum(4 * n for n in s.numel.values())


def average_bits_budget(s: Sensitivity, bits: float, fixed_bytes: int) -> int:
    """The bytes of a model whose quantized weights average ``bits`` bits (same scales)."""
    if not 1.0 <= bits <= 32.0:
        raise ValueError(f"average bits: expected a value in [1, 32], got {bits}")
    return fixed_bytes + sum(
        int(s.numel[m] * bits / 8) + module_bytes(0, s.channels[m], 2) for m in s.modules
    )


def mixed_precision(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    average_bits: float | None = None,
    budget_bytes: int | None = None,
    uniform_bits: int | None = None,
    steps: int = 400,
    lr: float = 5e-4,
    utterances: int = 60,
    seed: int = 0,
    threads: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Allocates bits (exactly one of ``average_bits``, ``budget_bytes``, ``uniform_bits``),
    fine-tunes with QAT, and returns the record written to ``output_dir/allocation.json``."""
    given = [x is not None for x in (average_bits, budget_bytes, uniform_bits)]
    if sum(given) != 1:
        raise ValueError("give exactly one of average_bits, budget_bytes and uniform_bits")
    out = Path(output_dir)
    loaded = load_model(checkpoint)  # fails early on a bad checkpoint
    s = sensitivity_of(checkpoint, utterances=utterances, cache=out / "sensitivity.json")
    fixed = float_bytes(loaded, s)
    alloc: Allocation
    if uniform_bits is not None:
        alloc = uniform_allocation(s, uniform_bits, fixed_bytes=fixed)
    else:
        budget = budget_bytes or average_bits_budget(s, float(average_bits or 0), fixed)
        alloc = allocate(s, budget, fixed_bytes=fixed)
    result = qat(checkpoint, alloc.bits, out, steps=steps, lr=lr, seed=seed, threads=threads,
                 show_progress=show_progress)  # fmt: skip
    fp32 = weight_bytes(loaded.model)
    record = {
        "checkpoint": str(out / "best"), "source": str(checkpoint), "bytes": alloc.bytes,
        "fp32_bytes": fp32, "ratio": fp32 / alloc.bytes,
        "average_bits": alloc.average_bits(s.numel), "sensitivity": alloc.sensitivity,
        "bits": alloc.bits, "qat": {"steps": result.steps, "lr": lr, "seed": seed},
        "test": result.test, "best_dev_wer": result.best_dev_wer, "versions": versions(),
    }  # fmt: skip
    (out / "allocation.json").write_text(json.dumps(record, indent=1))
    plot_allocations({out.name: alloc.bits}, out / "allocation.png")
    log.info("%s: %.1fx smaller than fp32, %.2f average bits", out, record["ratio"],
             record["average_bits"])  # fmt: skip
    return record
