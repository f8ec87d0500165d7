"""What attention's mask costs on ONNX Runtime: one self-attention block timed under masks of
the same shape that allow more or fewer scores, with and without flush-to-zero.

The latency predictor times each block in isolation. A streaming encoder's layers attend under
a chunk mask; if what is masked changed nothing but the result, an open mask of the same shape
would do for timing. This measures whether it does: the block of
:mod:`speechnas.hardware.block_modules` (pre-norm, residual), exported as the calibration
exports it, run on the ``cpu-ort-1t`` backend at each length under

- ``open``: every score allowed (what a non-streaming encoder passes at batch 1);
- ``chunk``: the chunk mask of a streaming stack (``--chunk`` frames, ``--left`` chunks of
  left context, :func:`speechnas.nn.blocks.attention.attention_mask`);
- ``causal``: every earlier frame;
- ``diagonal``: each frame only itself (the most masked a row can be).

Two worker processes take the rounds in turn: one as ONNX Runtime runs by default, one whose
first session sets ``session.set_denormal_as_zero``. That setting is the process's, not the
session's: ONNX Runtime applies the first session's choice to the calling thread (later
sessions' choices change nothing, and PyTorch on that thread then flushes denormals too), so
each setting needs a process of its own. Each round's medians are divided by that round's
``open`` time in the same process, so machine drift cancels; a ratio is the median over
rounds with its range. Prints JSON and a table.

    .venv/bin/python bench/attention_masks.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

MASKS = ("open", "chunk", "causal", "diagonal")
SETTINGS = ("default", "flush-to-zero")


def _masks(t: int, chunk: int, left: int) -> dict[str, np.ndarray]:
    import torch

    from speechnas.nn.blocks.attention import attention_mask

    eye = np.eye(t, dtype=bool)[None]
    return {
        "open": np.ones((1, t, t), dtype=bool),
        "chunk": attention_mask(torch.tensor([t]), t, chunk=chunk, left_chunks=left).numpy(),
        "causal": np.tril(np.ones((t, t), dtype=bool))[None],
        "diagonal": eye,
    }


def _worker(flush: bool, jobs: Any, results: Any, spec: dict[str, Any]) -> None:
    """One process, one denormal setting: builds and exports the blocks once, then times one
    round per job it is handed."""
    import onnxruntime as ort
    import torch

    from speechnas.export.transcribe import session_options
    from speechnas.hardware.block_modules import block_module
    from speechnas.hardware.blocks import Block
    from speechnas.hardware.calibration import _export

    torch.set_num_threads(1)
    opts = session_options(1)  # as speechnas runs a model
    if flush:
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    work = Path(tempfile.mkdtemp(prefix="attention-masks-"))
    sessions, inputs = {}, {}
    for name, params in spec["blocks"].items():
        block = Block("mhsa", tuple(params.items()), "frames")
        module, make = block_module(block)
        gen = torch.Generator().manual_seed(0)
        path = _export(module, make(64, gen), work / f"{name}.onnx", dynamic=True)
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inputs[name] = {t: make(t, gen)["x"].numpy() for t in spec["frames"]}
    masks = {t: _masks(t, spec["chunk"], spec["left"]) for t in spec["frames"]}
    while (job := jobs.get()) is not None:
        out: dict[str, Any] = {}
        for name, sess in sessions.items():
            for t in spec["frames"]:
                for m in MASKS[job:] + MASKS[:job]:  # the order rotates with the round
                    feeds = {"x": inputs[name][t], "mask": masks[t][m]}
                    for _ in range(spec["warmup"]):
                        sess.run(None, feeds)
                    ms = []
                    for _ in range(spec["repeats"]):
                        t0 = time.perf_counter()
                        sess.run(None, feeds)
                        ms.append(1e3 * (time.perf_counter() - t0))
                    out[f"{name}|{t}|{m}"] = float(np.median(ms))
        results.put(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[125, 250, 500],
                    help="encoder frames (5 and 10 s at 40 ms, 20 s)")  # fmt: skip
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--left", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20, help="timed runs per mask and round")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    if min(args.frames) < 2 or args.rounds < 1 or args.repeats < 1:
        raise SystemExit("--frames >= 2, --rounds >= 1 and --repeats >= 1 expected")
    spec = {
        "blocks": {
            "d144-h4-abs": {"d": 144, "heads": 4, "pos": "abs", "window": None},
            "d256-h4-rel": {"d": 256, "heads": 4, "pos": "rel", "window": None},
        },
        "frames": args.frames, "chunk": args.chunk, "left": args.left,
        "repeats": args.repeats, "warmup": args.warmup,
    }  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    queues = {s: (ctx.Queue(), ctx.Queue()) for s in SETTINGS}
    procs = [
        ctx.Process(target=_worker, args=(s == "flush-to-zero", *queues[s], spec), daemon=True)
        for s in SETTINGS
    ]
    for p in procs:
        p.start()
    rounds: dict[str, list[dict[str, float]]] = {s: [] for s in SETTINGS}
    try:
        for r in range(args.rounds):
            for s in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
                queues[s][0].put(r % len(MASKS))
                rounds[s].append(queues[s][1].get())
    finally:
        for s in SETTINGS:
            queues[s][0].put(None)
        for p in procs:
            p.join(timeout=30)
    rows = []
    for name in spec["blocks"]:
        for t in args.frames:
            for s in SETTINGS:
                open_ms = np.array([x[f"{name}|{t}|open"] for x in rounds[s]])
                for m in MASKS:
                    ms = np.array([x[f"{name}|{t}|{m}"] for x in rounds[s]])
                    ratio = ms / open_ms
                    rows.append({
                        "block": name, "frames": t, "setting": s, "mask": m,
                        "median_ms": float(np.median(ms)), "ratio_to_open": float(np.median(ratio)),
                        "ratio_range": [float(ratio.min()), float(ratio.max())],
                    })  # fmt: skip
    default = {(r["block"], r["frames"], r["mask"]): r["median_ms"] for r in rows
               if r["setting"] == "default"}  # fmt: skip
    for r in rows:
        r["ms_over_default"] = r["median_ms"] / default[(r["block"], r["frames"], r["mask"])]
    print(json.dumps({"spec": spec, "rounds": args.rounds, "rows": rows}, indent=1))
    table = Table(title="self-attention block under each mask: time / the open mask's (range)")
    for c in ("block", "frames", "setting", *MASKS, "open: ms"):
        table.add_column(c, justify="right")
    for name in spec["blocks"]:
        for t in args.frames:
            for s in SETTINGS:
                sel = {r["mask"]: r for r in rows
                       if (r["block"], r["frames"], r["setting"]) == (name, t, s)}  # fmt: skip
                cells = [
                    f"{sel[m]['ratio_to_open']:.2f} ({sel[m]['ratio_range'][0]:.2f}-"
                    f"{sel[m]['ratio_range'][1]:.2f})"
                    for m in MASKS
                ]
                table.add_row(name, str(t), s, *cells, f"{sel['open']['median_ms']:.3f}")
    Console(stderr=True, width=160).print(table)


if __name__ == "__main__":
    main()
