"""Streaming for real: full-context vs chunk-by-chunk WER, emission delay, chunk latency.

Three streaming architectures (Conformer, Transformer, LSTM; each at most about 1 M parameters)
are trained once each with dynamic chunk training (chunks of 4, 8 and 16 encoder frames, a
quarter of the batches in full context, half with look-ahead), with the default search's recipe
and a step budget. Each is then scored on the built-in test sets:

* full context (the same weights with attention unmasked);
* streamed chunk by chunk (explicit states, ``speechnas.nn.streaming``) at 160, 320 and 640 ms
  chunks, with no look-ahead and with one chunk of look-ahead: WER, first/last-token emission
  delay against the full-context CTC path of the same weights;
* exported as a streaming ONNX encoder (states as inputs/outputs), fp32 and int8: per-chunk
  latency p50/p90 on ONNX Runtime, one thread, and RTF (``--latency``);
* what chunking alone costs at 320 ms: streamed vs the full-context forward at the same
  look-ahead, paired over ``test`` (bootstrap and MAPSSWE).

``--predictor-archs N`` also compares the predicted per-chunk latency (the search's
``chunk_latency``) with the measured one on N random streaming architectures, and the
measurement with itself minutes later (``--models ""`` for that alone).

Prints JSON and a table; a rerun reuses finished trainings and scores.

    .venv/bin/python bench/streaming.py --steps 1500 --out runs/bench-streaming
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from _retrain import trained
from rich.console import Console
from rich.table import Table

from speechnas.data.dataset import SpeechDataset
from speechnas.data.loading import load_utterances
from speechnas.evaluate.decode import evaluate_dataset
from speechnas.evaluate.streaming import evaluate_streaming
from speechnas.hardware.stream import chunk_latency
from speechnas.nn.cost import count_parameters
from speechnas.nn.presets import preset
from speechnas.search.config import default_search_path, load_search_config
from speechnas.search.runner import prepare_base
from speechnas.space import Arch
from speechnas.train.checkpoint import load_model
from speechnas.train.config import DynamicChunkConfig
from speechnas.versions import versions

STREAM = {"streaming": True, "chunk_size": 8, "left_chunks": 4, "lookahead": 16}
ARCHS: dict[str, dict[str, Any]] = {
    "conformer": {**preset("small"), **STREAM},
    "transformer": {"encoder": "transformer", "d_model": 128, "layers": 4, "heads": 4,
                    "ffn_dim": 512, "attention": "abs", **STREAM},
    "lstm": {"encoder": "lstm", "d_model": 128, "layers": 2, "lstm_hidden": 256, **STREAM},
}  # fmt: skip
CHUNKS = (4, 8, 16)  # encoder frames: 160, 320 and 640 ms after subsampling by 4


def score(
    checkpoint: str, tests: dict[str, str], out: Path, stream_tests: list[str]
) -> dict[str, Any]:
    """Full-context and streaming WER and delays of one model, cached in ``out``. The delays
    are measured against the full-context path without look-ahead."""
    done = out / "scores.json"
    if done.is_file():
        cached = json.loads(done.read_text())
        if "full_no_lookahead" not in cached:  # written before full context had look-ahead
            cached["full_no_lookahead"] = cached["full"]
            cached["full"] = full_context(checkpoint, tests)
            done.write_text(json.dumps(cached, indent=1))
        return cached
    loaded = load_model(checkpoint)
    model = loaded.model
    full = load_model(checkpoint).model  # the same weights, run in full context
    full.configure_streaming(chunk=None, lookahead=0)
    result: dict[str, Any] = {"full": full_context(checkpoint, tests), "full_no_lookahead": {},
                              "stream": {}}  # fmt: skip
    for name, manifest in tests.items():
        ds = SpeechDataset(load_utterances(manifest, skip_invalid=False), loaded.tokenizer,
                           loaded.features)  # fmt: skip
        result["full_no_lookahead"][name] = evaluate_dataset(full, ds).rates.wer
        if name not in stream_tests:
            continue
        for chunk in CHUNKS:
            for lookahead in (0, chunk):
                model.configure_streaming(chunk=chunk, lookahead=lookahead)
                ev = evaluate_streaming(model, ds, reference=full)
                key = f"{chunk}/{lookahead}"
                result["stream"].setdefault(key, {})[name] = ev.to_dict()
                logging.info("%s %s chunk %s: WER %.2f%%", out.name, name, key,
                             100 * ev.rates.wer)  # fmt: skip
    done.write_text(json.dumps(result, indent=1))
    return result


def full_context(checkpoint: str, tests: dict[str, str]) -> dict[str, float]:
    """WER per test set with attention over the whole utterance and all of the look-ahead."""
    loaded = load_model(checkpoint)
    loaded.model.configure_streaming(chunk=None)
    out = {}
    for name, manifest in tests.items():
        ds = SpeechDataset(load_utterances(manifest, skip_invalid=False), loaded.tokenizer,
                           loaded.features)  # fmt: skip
        out[name] = evaluate_dataset(loaded.model, ds).rates.wer
    return out


def chunking_cost(checkpoint: str, manifest: str, out: Path, chunk: int = 8) -> dict[str, Any]:
    """What chunking alone costs at ``chunk`` encoder frames (320 ms): the same weights streamed
    chunk by chunk against their full-context forward at the same look-ahead (none, and one
    chunk), paired over the utterances of ``manifest`` (bootstrap and MAPSSWE,
    :func:`speechnas.evaluate.significance.compare_systems`). Full context with all of the
    architecture's look-ahead is the last row. Cached in ``out``."""
    from speechnas.evaluate.significance import compare_systems

    done = out / f"chunking-{chunk}.json"
    if done.is_file():
        return json.loads(done.read_text())
    loaded = load_model(checkpoint)
    ds = SpeechDataset(load_utterances(manifest, skip_invalid=False), loaded.tokenizer,
                       loaded.features)  # fmt: skip
    refs = [u.text for u in ds.utterances]
    model = loaded.model
    full_lookahead = model.spec.stream_geometry.lookahead
    result: dict[str, Any] = {"manifest": manifest, "chunk": chunk}

    def full(lookahead: int) -> tuple[str, ...]:
        model.configure_streaming(chunk=None, lookahead=lookahead)
        return evaluate_dataset(model, ds).hypotheses

    streamed: tuple[str, ...] = ()
    for lookahead in sorted({0, min(chunk, full_lookahead)}):
        model.configure_streaming(chunk=chunk, lookahead=lookahead)
        streamed = evaluate_streaming(model, ds).hypotheses
        result[f"{chunk}/{lookahead}"] = compare_systems(refs, streamed, full(lookahead))
    result["full_context_all_lookahead"] = compare_systems(refs, streamed, full(full_lookahead))
    done.write_text(json.dumps(result, indent=1))
    return result


def latencies(checkpoint: str, out: Path, *, fresh: bool = False) -> dict[str, Any]:
    """Per-chunk latency p50/p90 and RTF of the streaming ONNX graph on cpu-ort-stream-1t,
    fp32 and int8, at every chunk size and look-ahead; cached in ``out`` unless ``fresh``."""
    done = out / "latency.json"
    if done.is_file() and not fresh:
        return json.loads(done.read_text())
    model = load_model(checkpoint).model
    result: dict[str, Any] = {}
    for chunk in CHUNKS:
        for lookahead in (0, chunk):
            model.configure_streaming(chunk=chunk, lookahead=lookahead)
            key = f"{chunk}/{lookahead}"
            result[key] = {
                "fp32": chunk_latency(model, "cpu-ort-stream-1t").to_dict(),
                "int8": chunk_latency(model, "cpu-ort-stream-1t", int8=True).to_dict(),
                "algorithmic_latency_ms": model.stream_geometry().algorithmic_latency_ms,
            }
            logging.info("%s chunk %s: p90 %.2f ms fp32, %.2f ms int8", out.name, key,
                         result[key]["fp32"]["p90_ms"], result[key]["int8"]["p90_ms"])  # fmt: skip
    done.write_text(json.dumps(result, indent=1))
    return result


def predictor_accuracy(n: int, seed: int, out: Path, cache: str | None) -> dict[str, Any]:
    """Predicted (the chunk blocks of cpu-ort-1t's predictor, as the search predicts
    ``chunk_latency``) vs measured (the streaming graph with real states on cpu-ort-stream-1t)
    per-chunk latency of ``n`` architectures sampled from the streaming space (the encoder
    families in turn), randomly initialised. ``cache``: the calibration folder (None: a fresh
    one, so every block is timed here)."""
    import random
    import tempfile
    import time

    import numpy as np

    from speechnas.nn.build import build
    from speechnas.search.objectives import latency_model, predicted_metrics
    from speechnas.space import load_space

    space = load_space("streaming")
    rng = random.Random(seed)
    predictor = latency_model("cpu-ort-1t", cache_dir=cache or tempfile.mkdtemp())
    calibration = 0.0
    rows = []
    families = ("conformer", "transformer", "lstm")  # in turn: uniform sampling is mostly
    for i in range(n):  # Conformers, the family with the most architectures
        arch = space.sample(rng)
        while arch["encoder"] != families[i % len(families)]:
            arch = space.sample(rng)
        start = time.perf_counter()
        pred = predicted_metrics(arch, vocab_size=32, latency=predictor, seconds=5.0)
        calibration += time.perf_counter() - start
        model = build(arch, vocab_size=32).eval()
        meas = chunk_latency(model, "cpu-ort-stream-1t")
        rows.append({"arch": arch.to_json(), "predicted_ms": pred["chunk_latency"],
                     "measured_p50_ms": meas.p50_ms, "measured_p90_ms": meas.p90_ms})  # fmt: skip
        logging.info("arch %d/%d %s: predicted %.2f ms, measured p50 %.2f ms", i + 1, n,
                     arch["encoder"], pred["chunk_latency"], meas.p50_ms)  # fmt: skip
    # the floor: every model timed again minutes later, in the same process
    for r in rows:
        model = build(Arch.from_json(r["arch"]), vocab_size=32).eval()
        r["remeasured_p50_ms"] = chunk_latency(model, "cpu-ort-stream-1t").p50_ms
    err = np.array([r["predicted_ms"] / r["measured_p50_ms"] - 1 for r in rows])
    again = np.array([r["remeasured_p50_ms"] / r["measured_p50_ms"] - 1 for r in rows])
    by_family = {
        f: float(np.median([e for e, r in zip(err, rows, strict=True)
                            if r["arch"]["encoder"] == f]))
        for f in families
    }  # fmt: skip
    result = {
        "median_error_by_family": by_family,
        "archs": n,
        "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
        "within_25pct": float(np.mean(np.abs(err) <= 0.25)),
        "median_error": float(np.median(err)),
        "mape": float(np.mean(np.abs(err))),
        "floor_within_10pct": float(np.mean(np.abs(again) <= 0.10)),
        "floor_mape": float(np.mean(np.abs(again))),
        "remeasured_within_10pct": float(
            np.mean([abs(r["predicted_ms"] / r["remeasured_p50_ms"] - 1) <= 0.10 for r in rows])
        ),
        "calibration_seconds": calibration,
        "chunk_blocks": sum(f.axis == "chunk" for f in predictor.fits.values()),
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictor.json").write_text(json.dumps(result, indent=1))
    return result


def table(rows: dict[str, dict[str, Any]], test: str) -> Table:
    t = Table(title=f"streaming WER on {test} (chunk ms / look-ahead ms), delays on {test}")
    for col in (
        "model",
        "params",
        "full",
        "chunk/LA",
        "stream WER",
        "rel. to full",
        "first delay mean/p90",
        "last delay mean/p90",
    ):
        t.add_column(col, justify="right")
    for label, r in rows.items():
        full = r["scores"]["full"][test]
        for key, per_test in r["scores"]["stream"].items():
            chunk, la = (int(v) for v in key.split("/"))
            s = per_test[test]
            ft, lt = s["first_token_delay_ms"], s["last_token_delay_ms"]
            lat = r["latency"][key]
            t.add_row(label, f"{r['params'] / 1e6:.2f} M", f"{100 * full:.2f}",
                      f"{chunk * 40}/{la * 40}", f"{100 * s['wer']:.2f}",
                      f"{100 * (s['wer'] - full) / max(full, 1e-9):+.1f}%",
                      f"{ft['mean']:.0f}/{ft['p90']:.0f}",
                      f"{lt['mean']:.0f}/{lt['p90']:.0f}",
                      f"{lat['fp32']['p50_ms']:.2f}/{lat['fp32']['p90_ms']:.2f}",
                      f"{lat['int8']['p50_ms']:.2f}/{lat['int8']['p90_ms']:.2f}",
                      f"{lat['fp32']['rtf']:.4f}")  # fmt: skip
    return t


def chunking_table(rows: dict[str, dict[str, Any]]) -> Table:
    t = Table(title="what chunking costs: streamed vs full context at the same look-ahead, test")
    for col in ("model", "streamed", "WER streamed", "WER full", "Δ (95% CI)", "relative",
                "p MAPSSWE"):  # fmt: skip
        t.add_column(col, justify="right")
    for label, r in rows.items():
        for key, c in r["chunking"].items():
            if not isinstance(c, dict):
                continue
            name = "vs all look-ahead" if key == "full_context_all_lookahead" else key
            ci = f"{100 * c['ci_low']:+.2f}..{100 * c['ci_high']:+.2f}"
            t.add_row(label, name, f"{100 * c['wer_a']:.2f}", f"{100 * c['wer_b']:.2f}",
                      f"{100 * c['delta']:+.2f} ({ci})",
                      f"{100 * c['delta'] / max(c['wer_b'], 1e-9):+.1f}%",
                      f"{c['p_mapsswe']:.3g}")  # fmt: skip
    return t


def _percent(errors: dict[str, float]) -> str:
    return ", ".join(f"{k} {100 * v:+.1f}%" for k, v in errors.items())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(default_search_path()))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default=",".join(ARCHS), help="models to train ('' : none)")
    p.add_argument("--out", default="runs/bench-streaming")
    p.add_argument("--stream-tests", default="test,test-noisy", help="test sets to stream")
    p.add_argument("--remeasure", action="store_true", help="time the chunk latencies again")
    p.add_argument(
        "--predictor-archs",
        type=int,
        default=0,
        help="also compare predicted with measured chunk latency on N sampled archs",
    )
    p.add_argument("--predictor-cache", default=None, help="calibration folder (default: new)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    base = prepare_base(load_search_config(args.config)).replace(
        space=None, dynamic_chunk=DynamicChunkConfig()
    )
    tests = dict(base.data.test)
    rows: dict[str, dict[str, Any]] = {}
    for label in filter(None, args.models.split(",")):
        arch = Arch(ARCHS[label])
        out = Path(args.out) / label
        out.mkdir(parents=True, exist_ok=True)
        res = trained(out, base, arch, tests, minutes=10_000, seed=args.seed, steps=args.steps)
        rows[label] = {
            "arch": arch.to_json(),
            "params": count_parameters(arch, vocab_size=load_model(res["metrics"]["checkpoint"])
                                       .tokenizer.vocab_size),
            "checkpoint": res["metrics"]["checkpoint"],
            "latency": latencies(res["metrics"]["checkpoint"], out, fresh=args.remeasure),
            "scores": score(res["metrics"]["checkpoint"], tests, out, args.stream_tests.split(",")),
            "chunking": chunking_cost(res["metrics"]["checkpoint"], tests["test"], out),
        }  # fmt: skip
    report: dict[str, Any] = {
        "steps": args.steps, "seed": args.seed, "versions": versions(), "models": rows,
    }  # fmt: skip
    if args.predictor_archs:
        report["predictor"] = predictor_accuracy(
            args.predictor_archs, args.seed, Path(args.out), args.predictor_cache
        )
    print(json.dumps(report, indent=1))
    console = Console(stderr=True)
    for test in args.stream_tests.split(",") if rows else ():
        console.print(table(rows, test))
    if rows:
        console.print(chunking_table(rows))
    if "predictor" in report:
        r = report["predictor"]
        console.print(
            f"chunk latency predicted vs measured, {r['archs']} archs: "
            f"{100 * r['within_10pct']:.0f}% within ±10%, {100 * r['within_25pct']:.0f}% within "
            f"±25%, median error {100 * r['median_error']:+.1f}%, MAPE {100 * r['mape']:.1f}%; "
            f"by family {_percent(r['median_error_by_family'])}; the measurement against "
            f"itself minutes later: {100 * r['floor_within_10pct']:.0f}% within ±10% (MAPE "
            f"{100 * r['floor_mape']:.1f}%); the prediction against that second measurement: "
            f"{100 * r['remeasured_within_10pct']:.0f}% within ±10%"
        )


if __name__ == "__main__":
    main()
