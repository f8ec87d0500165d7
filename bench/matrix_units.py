"""Do fewer bits buy time on this CPU? Matmul peaks per precision and whole-model latency.

Run by hand (it takes a few minutes on one thread)::

    python bench/matrix_units.py [--rounds 15] [--models small base] [--json out.json]

1. Single-thread peak GMAC/s of fp32, bf16 and int8 matmuls in PyTorch (oneDNN / MKL; int8
   through ``torch._int_mm``) at 1024^3 and at our models' shapes (T' = 125-250 frames,
   d_model 96/144, FFN 256/576).
2. Per model (presets ``small`` and ``base``, 5 s of audio, batch 1, one thread): the latency
   of every path, measured interleaved (each round runs every path once, three calls each),
   on the calling thread's CPU clock; the ratio to the fp32 path of the same runtime and to
   ONNX Runtime fp32, as median [min-max] over the rounds; the achieved GMAC/s
   (``speechnas.nn.cost.analytic_macs`` / median latency) beside the peak of that precision.

Prints a table and the JSON (also written with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from speechnas.hardware.backends import OrtBackend, TorchBackend
from speechnas.hardware.cpu import cpu_report
from speechnas.hardware.program import load_program, random_input, utterance_length
from speechnas.hardware.target import load_target
from speechnas.nn.build import build
from speechnas.nn.cost import analytic_macs
from speechnas.nn.presets import preset

SHAPES = [(1024, 1024, 1024), (250, 144, 576), (250, 576, 144), (125, 96, 256), (125, 256, 96)]
# path name → (target, backend precision, peak key)
PATHS = {
    "ort-fp32": ("cpu-ort-1t", "fp32", "fp32"),
    "ort-int8-dynamic": ("cpu-ort-int8-1t", "fp32", "int8"),
    "ort-int8-static": ("cpu-ort-qdq-1t", "int8-static", "int8"),
    "torch-fp32": ("cpu-torch-1t", "fp32", "fp32"),
    "torch-bf16": ("cpu-torch-bf16-1t", "bf16", "bf16"),
}


def _best(f: Callable[[], object], macs: int, n: int = 15) -> float:
    for _ in range(3):
        f()
    times = []
    for _ in range(n):
        start = time.thread_time()
        f()
        times.append(time.thread_time() - start)
    return macs / min(times) / 1e9


def matmul_peaks() -> list[dict[str, object]]:
    rows = []
    for m, k, n in SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        ab, bb = a.bfloat16(), b.bfloat16()
        ai = torch.randint(-127, 128, (m, k), dtype=torch.int8)
        bi = torch.randint(-127, 128, (k, n), dtype=torch.int8)
        macs = m * k * n
        rows.append(
            {
                "shape": [m, k, n],
                "fp32": _best(lambda a=a, b=b: a @ b, macs),
                "bf16": _best(lambda a=ab, b=bb: a @ b, macs),
                "int8": _best(lambda a=ai, b=bi: torch._int_mm(a, b), macs),
            }
        )
    return rows


def model_paths(name: str, rounds: int, work: Path) -> dict[str, object]:
    torch.manual_seed(0)
    arch = preset(name)
    model = build(arch, vocab_size=30).eval()
    macs = analytic_macs(arch, seconds=5.0, vocab_size=30).total
    calls = {}
    for path, (target_name, precision, _) in PATHS.items():
        target = load_target(target_name)
        program = load_program(model, target, work / path)
        n = utterance_length(program.features, 5.0)
        feeds = program.feeds(random_input(program.features, n, np.random.default_rng(0)))
        backend = (
            OrtBackend(1, precision)
            if target.runtime == "onnxruntime"
            else TorchBackend(1, precision)
        )
        part = program.parts[program.first]
        run = backend._call(part)  # the same call the profiler times
        calls[path] = lambda run=run, feeds=feeds: run(feeds)
    for c in calls.values():
        for _ in range(3):
            c()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for k, c in calls.items():
            start = time.thread_time()
            c(), c(), c()
            times[k].append((time.thread_time() - start) / 3)
    out: dict[str, object] = {"macs": macs, "paths": {}}
    t = {k: np.array(v) for k, v in times.items()}
    for k, v in t.items():
        same = t["ort-fp32"] if k.startswith("ort") else t["torch-fp32"]
        r_same, r_ort = v / same, v / t["ort-fp32"]
        out["paths"][k] = {  # type: ignore[index]
            "median_ms": float(np.median(v) * 1e3),
            "ratio_same_runtime_fp32": [float(np.median(r_same)), float(r_same.min()),
                                        float(r_same.max())],
            "ratio_ort_fp32": [float(np.median(r_ort)), float(r_ort.min()), float(r_ort.max())],
            "gmacs": macs / float(np.median(v)) / 1e9,
        }  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--models", nargs="+", default=["small", "base"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    peaks = matmul_peaks()
    peak = {p: max(float(r[p]) for r in peaks) for p in ("fp32", "bf16", "int8")}
    with tempfile.TemporaryDirectory() as tmp:
        models = {m: model_paths(m, args.rounds, Path(tmp) / m) for m in args.models}
    result = {"cpu": cpu_report(), "matmul_gmacs": peaks, "peak_gmacs": peak, "models": models}
    console = Console()
    t = Table(title="single-thread matmul GMAC/s (best of 15)")
    for c in ("M x K x N", "fp32", "bf16", "int8"):
        t.add_column(c, justify="right")
    for r in peaks:
        t.add_row(
            "x".join(map(str, r["shape"])), *(f"{r[p]:.0f}" for p in ("fp32", "bf16", "int8"))
        )
    console.print(t)
    for m, res in models.items():
        t = Table(title=f"{m}, 5 s, 1 thread, {args.rounds} interleaved rounds")
        for c in ("path", "median ms", "/ same-runtime fp32", "/ ORT fp32", "GMAC/s", "% peak"):
            t.add_column(c, justify="right")
        for k, v in res["paths"].items():  # type: ignore[union-attr]
            rs, ro = v["ratio_same_runtime_fp32"], v["ratio_ort_fp32"]
            pk = peak[PATHS[k][2]]
            t.add_row(k, f"{v['median_ms']:.2f}", f"{rs[0]:.2f} [{rs[1]:.2f}-{rs[2]:.2f}]",
                      f"{ro[0]:.2f} [{ro[1]:.2f}-{ro[2]:.2f}]", f"{v['gmacs']:.0f}",
                      f"{100 * v['gmacs'] / pk:.0f}%")  # fmt: skip
        console.print(t)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
