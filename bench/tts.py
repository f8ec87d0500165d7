"""A hand-designed FastSpeech 2 against the TTS search's selection, at the same training budget.

Each model (``--baseline``, a TTS preset, and ``--arch``: a TTS search's ``pareto.json`` (its
selected architecture), a TTS preset name or an architecture JSON file) is trained from scratch
for ``--steps`` optimizer steps per ``--seeds`` seed on the built-in TTS corpus, with the TTS
search's recipe, then scored on the test split: MCD (dB, reference durations), the judge's CER
and WER on the test sentences spoken with the model's own durations and vocoded by Griffin-Lim,
parameters. Both are exported to ONNX and their fixed-duration graphs (the mel of a 3.2-second
sentence) timed in turn on one thread, ``--rounds`` times, in this one process: RTF, and the
speed ratio with its spread over rounds. Goal (issue): >= 10x smaller, >= 5x faster, MCD within
0.3 dB and CER within 2 points of the baseline. Prints JSON and a table.

    .venv/bin/speechnas search --config bench/tts-equal-steps.yaml
    .venv/bin/python bench/tts.py --arch runs/search-tts-steps/pareto.json --steps 1000 --seeds 0

Trainings are kept under ``--out`` by model (the preset's name or the arch key), so a second
run with another ``--arch`` reuses the baseline's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from speechnas.hardware.tts import time_onnx_fixed
from speechnas.nn.tts import TTS_PRESETS, tts_preset
from speechnas.search.config import load_search_config, search_config_path
from speechnas.search.tts import (
    FRAMES_PER_PHONEME,
    LATENCY_PHONEMES,
    prepare_tts,
    retrain_tts,
)
from speechnas.space import Arch
from speechnas.versions import versions


def read_arch(spec: str) -> tuple[str, Arch]:
    if spec in TTS_PRESETS:
        return spec, tts_preset(spec)
    data = json.loads(Path(spec).read_text())
    if "selected" in data:  # a search's pareto.json
        sel = data["selected"]
        if sel is None:
            raise ValueError(f"{spec}: the search selected nothing")
        return f"search ({sel['key'][:8]})", Arch.from_json(sel["arch"])
    return Path(spec).stem, Arch.from_json(data)


def folder(label: str) -> str:
    """A model's training folder under ``--out``, by what it is (a preset name or an arch key),
    so a later run with another ``--arch`` reuses the baseline's finished training."""
    return label.removeprefix("search (").removesuffix(")")


def paired_tests(
    runs: dict[str, list[dict[str, Any]]], setup: Any, seeds: list[int]
) -> dict[str, Any]:
    """Search minus baseline on the test split, paired over utterances (per-utterance values
    averaged over seeds): MCD (dB, reference durations) and the judge's WER on the sentences
    spoken with the models' own durations; paired bootstrap (10,000 resamples)."""
    from speechnas.data.tts import MelConfig, PhonemeVocab, TtsDataset, load_tts_manifest
    from speechnas.evaluate.significance import paired_bootstrap, utterance_errors
    from speechnas.export.tts_judge import judge_texts
    from speechnas.search.tts_judge import synthesize_utterances
    from speechnas.train.tts import load_tts_model, utterance_scores

    utts = load_tts_manifest(setup.base.test)
    mcds: dict[str, list[np.ndarray]] = {}
    errors: dict[str, list[np.ndarray]] = {}
    words = None
    for key, rs in runs.items():
        for r in rs:
            model, meta = load_tts_model(r["checkpoint"])
            vocab = PhonemeVocab(tuple(meta["phonemes"]))
            cfg = MelConfig(**setup.base.mel)
            items = [TtsDataset(utts, vocab, cfg)[i] for i in range(len(utts))]
            mcds.setdefault(key, []).append(np.array(utterance_scores(model, items)["mcd"]))
            if setup.judge is not None:
                audios = synthesize_utterances(model, utts, vocab, cfg)
                res = judge_texts(audios, cfg.sample_rate, [u.text for u in utts], setup.judge)
                e, words = utterance_errors(list(res.references), list(res.hypotheses))
                errors.setdefault(key, []).append(e)
    ones = np.ones(len(utts))
    out: dict[str, Any] = {"utterances": len(utts), "seeds": seeds}
    b = paired_bootstrap(mcds["search"], mcds["baseline"], ones)
    out["mcd"] = {"diff_db": b.delta, "ci95": [b.ci_low, b.ci_high], "p": b.p_value}
    if errors:
        b = paired_bootstrap(errors["search"], errors["baseline"], words)
        out["judge_wer"] = {"diff_points": 100 * b.delta, "ci95": [100 * b.ci_low, 100 * b.ci_high],
                            "p": b.p_value}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(search_config_path("tts")), help="TTS search YAML")
    ap.add_argument("--baseline", default="fastspeech2", help="the hand-designed TTS preset")
    ap.add_argument("--arch", required=True, help="pareto.json, a TTS preset, or arch JSON")
    ap.add_argument("--steps", type=int, default=2000, help="optimizer steps per training")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--threads", type=int, default=2, help="training threads")
    ap.add_argument("--rounds", type=int, default=5, help="latency rounds, models in turn")
    ap.add_argument("--out", default="runs/bench-tts")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    console = Console(stderr=True)
    cfg = load_search_config(args.config)
    setup = prepare_tts(cfg, console)
    models = {
        "baseline": (args.baseline, tts_preset(args.baseline)),
        "search": read_arch(args.arch),
    }
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in models}
    for key, (label, arch) in models.items():
        for seed in seeds:
            console.print(f"training {key} ({label}), seed {seed}, {args.steps} steps")
            runs[key].append(
                retrain_tts(
                    arch,
                    setup.base,
                    1e6,
                    out / f"{folder(label)}-s{seed}",
                    seed=seed,
                    steps=args.steps,
                    threads=args.threads,
                    judge=setup.judge,
                )
            )
    # latency: the first seed's exports, timed in turn (both fp32, then both int8)
    times: dict[str, list[float]] = {f"{k}{q}": [] for k in models for q in ("", "_int8")}
    for _ in range(args.rounds):
        for key in models:
            for q in ("", "_int8"):
                times[f"{key}{q}"].append(
                    time_onnx_fixed(
                        runs[key][0]["onnx"], LATENCY_PHONEMES, FRAMES_PER_PHONEME, int8=bool(q)
                    )
                )
    paired = paired_tests(runs, setup, seeds)
    mel = setup.base.mel
    mel_seconds = LATENCY_PHONEMES * FRAMES_PER_PHONEME * mel["hop_length"] / mel["sample_rate"]
    ratios = np.array(times["baseline"]) / np.array(times["search"])

    def summary(key: str) -> dict[str, Any]:
        rs = runs[key]
        one = {
            "label": models[key][0],
            "arch": models[key][1].to_json(),
            "params": rs[0]["params"],
            "latency_ms": float(np.median(times[key])),
            "latency_int8_ms": float(np.median(times[f"{key}_int8"])),
            "rtf": float(np.median(times[key])) / (1000 * mel_seconds),
            "steps": rs[0]["steps"],
            "train_minutes": [r["train_minutes"] for r in rs],
        }
        for m in ("mcd", "tts_cer", "tts_wer", "duration_error", "f0_rmse_cents"):
            vals = [r[m] for r in rs if m in r]
            if vals:
                one[m] = float(np.mean(vals))
                one[f"{m}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        one["samples"] = [s["wav"] for s in rs[0]["samples"]]
        return one

    result: dict[str, Any] = {k: summary(k) for k in models}
    result["paired"] = paired
    if setup.judge is not None:  # the judge on the recordings and on their vocoded log-mels
        from speechnas.data.tts import MelConfig, load_tts_manifest
        from speechnas.search.tts_judge import reference_intelligibility

        test = load_tts_manifest(setup.base.test)
        result["judge_ceiling_cer"] = reference_intelligibility(
            test, MelConfig(**setup.base.mel), setup.judge
        )
    b, s = result["baseline"], result["search"]
    result["comparison"] = {
        "size_ratio": b["params"] / s["params"],
        "speed_ratio": float(np.median(ratios)),
        "speed_ratio_range": [float(ratios.min()), float(ratios.max())],
        "mcd_diff_db": s["mcd"] - b["mcd"],
        "cer_diff_points": 100 * (s["tts_cer"] - b["tts_cer"]) if "tts_cer" in s else None,
        "goal": ">= 10x smaller, >= 5x faster, MCD within 0.3 dB, CER within 2 points",
    }
    c = result["comparison"]
    c["goal_met"] = bool(
        c["size_ratio"] >= 10 and c["speed_ratio"] >= 5 and c["mcd_diff_db"] <= 0.3
        and (c["cer_diff_points"] is None or c["cer_diff_points"] <= 2)
    )  # fmt: skip
    result.update(steps=args.steps, seeds=seeds, rounds=args.rounds, versions=versions())
    out.mkdir(parents=True, exist_ok=True)
    (out / "tts.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    table = Table(title=f"TTS: baseline vs search, {args.steps} steps, seeds {seeds}")
    for col in ("model", "params", "MCD dB", "judge CER", "ms / 3.2 s", "int8 ms", "RTF"):
        table.add_column(col, justify="right")
    for key in models:
        r = result[key]
        cer = f"{100 * r['tts_cer']:.2f}%" if "tts_cer" in r else "-"
        table.add_row(f"{key}: {r['label']}", f"{r['params']:,}", f"{r['mcd']:.2f}", cer,
                      f"{r['latency_ms']:.1f}", f"{r['latency_int8_ms']:.1f}",
                      f"{r['rtf']:.4f}")  # fmt: skip
    Console().print(table)
    Console().print(
        f"size {c['size_ratio']:.1f}x smaller, speed {c['speed_ratio']:.1f}x "
        f"({c['speed_ratio_range'][0]:.1f}-{c['speed_ratio_range'][1]:.1f}), MCD "
        f"{c['mcd_diff_db']:+.2f} dB, CER {c['cer_diff_points']:+.2f} points; goal met: "
        f"{c['goal_met']}"
    )


if __name__ == "__main__":
    main()
