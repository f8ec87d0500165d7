"""Feature extraction cost per training batch: speechnas's filterbank, Kaldi's filterbank as
training computes it (one batched tensor program) and as kaldi-native-fbank computes it (frame by
frame, what the transcriber and sherpa-onnx call), and how far the batched one is from the
library's output.

One thread; a batch of ``--batch`` random utterances of ``--seconds`` each (the search's
60-second batches are 32 x 2 s); the three are timed in alternating rounds and each reported as
the median with its range, and as a ratio to speechnas's ``fbank80`` measured in the same rounds.
Prints JSON and a table.

    .venv/bin/python bench/features.py --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from speechnas.data.features import FeatureExtractor
from speechnas.data.filters import kaldi_fbank
from speechnas.nn.spec import FRONTENDS
from speechnas.versions import versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    wave = 0.1 * torch.randn(args.batch, int(16000 * args.seconds), generator=gen)
    lengths = torch.full((args.batch,), wave.shape[1])
    fbank, knf = FeatureExtractor(FRONTENDS["fbank80"]), FeatureExtractor(FRONTENDS["knf80"])
    cfg = FRONTENDS["knf80"]
    ways = {
        "fbank80 (speechnas, torch)": lambda: fbank(wave, lengths),
        "knf80 batched (torch, training)": lambda: knf(wave, lengths),
        "knf80 kaldi-native-fbank (per utterance)": lambda: [
            kaldi_fbank(w.numpy(), cfg) for w in wave
        ],
    }
    for f in ways.values():
        f()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.rounds):
        for name, f in ways.items():
            start = time.perf_counter()
            f()
            times[name].append(1000 * (time.perf_counter() - start))
    base = times["fbank80 (speechnas, torch)"]
    rows: dict[str, dict[str, Any]] = {}
    for name, ms in times.items():
        ratios = [a / b for a, b in zip(ms, base, strict=True)]
        rows[name] = {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
                      "ratio_to_fbank80_median": statistics.median(ratios),
                      "ratio_range": [min(ratios), max(ratios)]}  # fmt: skip
    batched, _ = knf(wave, lengths)
    diff = max(
        float(np.abs(batched[b].numpy() - kaldi_fbank(wave[b].numpy(), cfg)).max())
        for b in range(args.batch)
    )
    report = {"batch": args.batch, "seconds": args.seconds, "rounds": args.rounds,
              "threads": 1, "results": rows, "max_abs_log_energy_diff": diff,
              "versions": versions()}  # fmt: skip
    print(json.dumps(report, indent=1))
    audio = args.batch * args.seconds
    table = Table(
        title=f"features of {audio:g} s of audio ({args.batch} x {args.seconds:g} s), 1 thread"
    )
    for col in ("features", "median ms", "range ms", "× fbank80 (same rounds)"):
        table.add_column(col, justify="left" if col == "features" else "right")
    for name, r in rows.items():
        lo, hi = r["ratio_range"]
        table.add_row(name, f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}-{r['max_ms']:.1f}",
                      f"{r['ratio_to_fbank80_median']:.2f} ({lo:.2f}-{hi:.2f})")  # fmt: skip
    Console(width=120).print(table)
    Console().print(f"batched vs kaldi-native-fbank: max |Δ log energy| {diff:.2e}")


if __name__ == "__main__":
    main()
