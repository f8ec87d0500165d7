"""How well the calibrated latency predictor tracks measured latency, and what the runtime and
precision cost: prints one JSON object.

1. Calibrates the building blocks of every architecture below on ``--target`` (isolated
   blocks only; no whole model is timed for this), in ``--passes`` passes over all blocks
   (each block's least median over them).
2. Fits the whole-model correction on ``--correction`` architectures drawn with another seed.
3. Measures ``--archs`` architectures drawn from ``--space`` (seeded) at each of ``--seconds``
   and compares with the predictions, raw (block sum) and corrected: share within ±10 %,
   Spearman's rho, MAPE, overall and per length. None of these archs fit the correction.
   Every whole model is timed in ``--rounds`` rounds, the models in turn, and its latency is
   the least of its per-round medians (``rounds_ms`` in the rows keeps them all).
4. For ``--ratio-archs`` of them: ONNX Runtime float32, ONNX Runtime int8 and PyTorch eager
   latency, measured one after the other in this run, as ratios to float32.
5. With ``--floor``: the measurement's own noise floor. The same architectures are measured
   again in a fresh process ``--floor-gap`` minutes later; the share of them within ±10% of
   their first measurement is the best any predictor can score against one measurement. The
   predictor is reported against both measurements beside it, overall and per encoder family.
6. The confidence flag (``confidence``): the share of rows flagged low-confidence (their band,
   from the correction's leave-one-out errors, wider than ±10%), the predictor's share within
   ±10% on the others, the bands' coverage, and the share within ±10% when flagged rows are
   measured (with ``--floor``, by the fresh-process measurement).
7. ``steal``: the share of the machine's CPU time the hypervisor gave to other guests while
   the models were measured (each time), which is noise no care inside the machine removes.

Run it by hand on a quiet machine; it takes a while at full size (50 archs: tens of minutes):

    .venv/bin/python bench/latency.py --archs 50 --seconds 2 5 10 --seed 0
    .venv/bin/python bench/latency.py --archs 5 --ratio-archs 1 --repeats 3   # smoke test
    .venv/bin/python bench/latency.py --archs 24 --per-encoder --floor --floor-gap 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import time
from typing import Any

import numpy as np
import torch

from speechnas.hardware import load_target, profile
from speechnas.hardware.calibration import PASSES
from speechnas.hardware.cpu import cpu_ticks, steal_share
from speechnas.hardware.evaluation import ROUNDS, accuracy, measure_archs
from speechnas.hardware.predictor import LatencyPredictor
from speechnas.nn.build import build
from speechnas.space import Arch, load_space

ENCODERS = ("conformer", "transformer", "ebranchformer", "lstm", "blstm", "cnn")


def draw(space_name: str, n: int, seed: int, per_encoder: bool) -> list[Arch]:
    """``n`` architectures: uniform over the space, or in turn per encoder family (a uniform
    draw from speech-all is mostly 12-layer Conformers, which have the most variants)."""
    space = load_space(space_name)
    rng = random.Random(seed)
    if not per_encoder:
        return [space.sample(rng) for _ in range(n)]
    return [space.repair({"encoder": ENCODERS[i % len(ENCODERS)]}, rng) for i in range(n)]


def ratios(archs: list[Arch], seconds: list[float], args: argparse.Namespace) -> list[dict]:
    """ONNX Runtime fp32 / int8 and PyTorch eager on the same models, one after the other."""
    out = []
    for i, arch in enumerate(archs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed + i)
            model = build(arch, vocab_size=args.vocab_size).eval()
        ms: dict[str, dict[str, float]] = {}
        for name in ("cpu-ort-1t", "cpu-ort-int8-1t", "cpu-torch-1t"):
            prof = profile(
                model, name, seconds=seconds, memory=False, repeats=args.repeats, seed=args.seed
            )
            ms[name] = {f"{r.seconds:g}": r.median_ms for r in prof.lengths}
        fp32 = ms["cpu-ort-1t"]
        out.append(
            {
                "key": arch.hash(),
                "encoder": arch["encoder"],
                "decoder": arch.get("decoder", "ctc"),
                "ms": ms,
                "int8_over_fp32": {s: ms["cpu-ort-int8-1t"][s] / v for s, v in fp32.items()},
                "torch_over_ort": {s: ms["cpu-torch-1t"][s] / v for s, v in fp32.items()},
            }
        )
    return out


def _measure_again(job: dict[str, Any]) -> list[dict[str, Any]]:
    """In a fresh process: the same models measured again (the same seeded weights)."""
    torch.set_num_threads(1)
    archs = [Arch.from_json(a) for a in job["archs"]]
    return measure_archs(archs, job["target"], job["seconds"], seed=job["seed"],
                         vocab_size=job["vocab_size"], repeats=job["repeats"],
                         rounds=job["rounds"])  # fmt: skip


def _within(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(b - a) / a <= 0.10))


def noise_floor(
    first: list[dict[str, Any]], second: list[dict[str, Any]], predicted: list[dict[str, Any]]
) -> dict[str, Any]:
    """Two measurements of the same models and the predictions: the share of models within
    ±10% of their own first measurement (the floor), and the predictor's share within ±10% of
    each measurement, overall, per encoder family and per length."""
    pred = {(r["key"], r["seconds"]): r["predicted_ms"] for r in predicted}
    rows = [
        {"encoder": a["arch"]["encoder"], "seconds": a["seconds"], "m1": a["measured_ms"],
         "m2": b["measured_ms"], "p": pred[(a["key"], a["seconds"])]}
        for a, b in zip(first, second, strict=True)
    ]  # fmt: skip

    def stats(sel: list[dict[str, Any]]) -> dict[str, Any]:
        m1, m2, p = (np.array([r[k] for r in sel]) for k in ("m1", "m2", "p"))
        return {
            "n": len(sel),
            "floor_within_10pct": _within(m1, m2),
            "predictor_within_10pct_first": _within(m1, p),
            "predictor_within_10pct_second": _within(m2, p),
            "median_remeasure_change": float(np.median((m2 - m1) / m1)),
        }

    families = sorted({r["encoder"] for r in rows})
    lengths = sorted({r["seconds"] for r in rows})
    return {
        **stats(rows),
        "by_statistic": rounds_floor(first, second),
        "per_encoder": {f: stats([r for r in rows if r["encoder"] == f]) for f in families},
        "per_length": {f"{s:g}": stats([r for r in rows if r["seconds"] == s]) for s in lengths},
    }


def rounds_floor(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> dict[str, Any]:
    """The floor as each statistic of the rounds would give it: round k of the first
    measurement against round k of the second (one timing each), the medians of the rounds,
    and their least (what ``measured_ms`` is)."""
    a = np.array([r["rounds_ms"] for r in first])
    b = np.array([r["rounds_ms"] for r in second])
    return {
        "single_rounds": [_within(a[:, k], b[:, k]) for k in range(min(a.shape[1], b.shape[1]))],
        "median_of_rounds": _within(np.median(a, axis=1), np.median(b, axis=1)),
        "least_of_rounds": _within(a.min(axis=1), b.min(axis=1)),
    }


def confidence_report(
    predictor: LatencyPredictor,
    rows: list[dict[str, Any]],
    vocab_size: int,
    again: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The confidence flag on the evaluated rows: the share flagged low-confidence (sent to a
    real measurement), the predictor's share within ±10% on the rest, the band's coverage
    (the share whose error lies inside its own band) and the hybrid's share within ±10% when
    flagged rows take a measurement: the fresh-process one (``again``) when there is one."""
    second = {(r["key"], r["seconds"]): r["measured_ms"] for r in again or []}
    out_rows = []
    for r in rows:
        c = predictor.confidence(Arch.from_json(r["arch"]), r["seconds"], vocab_size)
        err = r["predicted_ms"] / r["measured_ms"] - 1.0
        hybrid = second.get((r["key"], r["seconds"]), r["measured_ms"]) if c.low else None
        used = r["predicted_ms"] if hybrid is None else hybrid
        out_rows.append({"encoder": r["arch"]["encoder"], "band": c.band, "low": c.low,
                         "error": err, "inside": abs(err) <= c.band,
                         "hybrid_within": abs(used / r["measured_ms"] - 1.0) <= 0.10})  # fmt: skip
    low = [x for x in out_rows if x["low"]]
    kept = [x for x in out_rows if not x["low"]]

    def share(sel: list[dict[str, Any]], key: str) -> float | None:
        return float(np.mean([bool(x[key]) for x in sel])) if sel else None

    return {
        "flagged_low": len(low) / max(1, len(out_rows)),
        "bands": {
            f: float(np.median([x["band"] for x in out_rows if x["encoder"] == f]))
            for f in sorted({x["encoder"] for x in out_rows})
        },
        "coverage": share(out_rows, "inside"),
        "unflagged_within_10pct": float(np.mean([abs(x["error"]) <= 0.10 for x in kept]))
        if kept
        else None,
        "hybrid_within_10pct": share(out_rows, "hybrid_within"),
        "remeasured": again is not None,
    }


def summary(acc: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "within_10pct", "spearman", "mape", "median_error", "max_abs_error")
    return {
        **{k: acc[k] for k in keys},
        "per_length": {s: {k: v[k] for k in keys} for s, v in acc["per_length"].items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="cpu-ort-1t")
    ap.add_argument("--space", default="speech-all")
    ap.add_argument("--archs", type=int, default=50, help="architectures to evaluate")
    ap.add_argument(
        "--correction",
        type=int,
        default=12,
        help="archs that fit the correction (with "
        "--per-encoder, two per family give each family its own scale)",
    )
    ap.add_argument("--ratio-archs", type=int, default=3)
    ap.add_argument("--seconds", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-encoder", action="store_true", help="draw encoder families in turn")
    ap.add_argument("--vocab-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=None, help="default: the target's")
    ap.add_argument("--passes", type=int, default=PASSES, help="calibration passes")
    ap.add_argument("--rounds", type=int, default=ROUNDS,
                    help="rounds every whole model is timed in, the models in turn; its "
                    "latency is the least of its per-round medians")  # fmt: skip
    ap.add_argument("--cache", default=None, help="calibration cache folder (default: none)")
    ap.add_argument("--floor", action="store_true", help="measure again in a fresh process")
    ap.add_argument("--floor-gap", type=float, default=2.0, help="minutes before that")
    args = ap.parse_args()
    torch.set_num_threads(1)
    target = load_target(args.target)
    started = time.perf_counter()

    evaluated = draw(args.space, args.archs, args.seed, args.per_encoder)
    fitting = draw(args.space, args.correction, args.seed + 10_000, args.per_encoder)
    predictor = LatencyPredictor.calibrate(
        target, [*evaluated, *fitting], vocab_size=args.vocab_size, cache=args.cache,
        repeats=args.repeats, passes=args.passes, progress=True,
    )  # fmt: skip
    calibrated = time.perf_counter()
    measure = {"vocab_size": args.vocab_size, "repeats": args.repeats, "rounds": args.rounds,
               "progress": True}  # fmt: skip
    if fitting:
        rows = measure_archs(fitting, target, args.seconds, seed=args.seed + 10_000, **measure)
        predictor.fit_correction(rows, vocab_size=args.vocab_size)
    ticks = cpu_ticks()
    measured = measure_archs(evaluated, target, args.seconds, seed=args.seed, **measure)
    steal = {"measured": steal_share(ticks, cpu_ticks())}
    corrected = accuracy(predictor, target=target, rows=measured, vocab_size=args.vocab_size)
    scale, offset = predictor.correction
    families = predictor.family_scales
    predictor.correction, predictor.family_scales = (1.0, 0.0), {}
    raw = accuracy(predictor, target=target, rows=measured, vocab_size=args.vocab_size)
    predictor.correction, predictor.family_scales = (scale, offset), families
    floor, again = None, None
    if args.floor:
        time.sleep(60 * args.floor_gap)
        job = {"archs": [a.to_json() for a in evaluated], "target": args.target,
               "seconds": args.seconds, "seed": args.seed, "vocab_size": args.vocab_size,
               "repeats": args.repeats, "rounds": args.rounds}  # fmt: skip
        ticks = cpu_ticks()
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            again = pool.apply(_measure_again, (job,))
        steal["measured_again"] = steal_share(ticks, cpu_ticks())
        floor = noise_floor(measured, again, corrected["rows"])
    confidence = confidence_report(predictor, corrected["rows"], args.vocab_size, again)
    result = {
        "target": target.to_dict(),
        "space": args.space,
        "seed": args.seed,
        "archs": len(evaluated),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "passes": args.passes,
        "blocks": len(predictor.fits),
        "correction": {
            "scale": scale,
            "offset_ms": offset,
            "family_scales": predictor.family_scales,
            "archs": len(fitting),
        },
        "corrected": summary(corrected),
        "raw_block_sum": summary(raw),
        "noise_floor": floor,
        "steal": steal,
        "confidence": confidence,
        "ratios": ratios(evaluated[: args.ratio_archs], args.seconds, args),
        "minutes": {
            "calibration": (calibrated - started) / 60,
            "total": (time.perf_counter() - started) / 60,
        },
        "rows": [
            {k: r[k] for k in ("key", "seconds", "measured_ms", "rounds_ms", "predicted_ms")}
            | {"encoder": r["arch"]["encoder"]}
            | (
                {
                    "measured_again_ms": again[i]["measured_ms"],
                    "again_rounds_ms": again[i]["rounds_ms"],
                }
                if again
                else {}
            )
            for i, r in enumerate(corrected["rows"])
        ],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
