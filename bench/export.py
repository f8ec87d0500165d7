"""Deployment benchmark: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8.

Trains the foundation baseline (Conformer-CTC, src/speechnas/configs/baseline.yaml) on the
built-in digits corpus for ``--minutes`` (or takes ``--checkpoint``), exports it to ONNX (fp32
and dynamic int8), and transcribes every built-in test set one utterance at a time on one thread
with each runtime. Prints JSON: WER/CER and RTF per runtime and test set, the absolute WER
difference of each ONNX runtime to PyTorch, file sizes and the int8/fp32 size ratio.

Every runtime is timed the same way: from the waveform to the text (features, network, greedy
CTC), batch 1, one thread. Run by hand:

    .venv/bin/python bench/export.py                          # 10 min of training first
    .venv/bin/python bench/export.py --checkpoint runs/baseline/best
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from speechnas.cli import default_config_path
from speechnas.data.audio import read_audio
from speechnas.data.features import FeatureExtractor
from speechnas.data.manifest import load_corpus
from speechnas.data.synth.corpus import CorpusConfig, build_corpus
from speechnas.data.synth.text import normalize_text
from speechnas.evaluate.metrics import error_rates
from speechnas.export.onnx import export_model
from speechnas.export.transcribe import Transcriber, score_manifest
from speechnas.train.checkpoint import LoadedModel, load_model
from speechnas.train.config import load_config
from speechnas.train.trainer import Trainer
from speechnas.versions import versions


def train_baseline(args: argparse.Namespace, manifests: dict[str, Path]) -> Path:
    base = load_config(default_config_path())
    data = base.data.with_corpus(manifests)
    cfg = base.replace(
        data=data,
        threads=args.threads,
        output_dir=f"{args.out}/baseline",
        budget=dataclasses.replace(base.budget, max_minutes=args.minutes),
    )
    Trainer.from_config(cfg, show_progress=False).fit(resume=False)
    return Path(cfg.output_dir) / "best"


@torch.no_grad()
def score_torch(loaded: LoadedModel, manifest: Path, limit: int | None) -> dict[str, Any]:
    """PyTorch eager, batch 1: read, features, greedy decode, as the ONNX transcriber does."""
    extract = FeatureExtractor(loaded.features)
    utts = list(load_corpus(manifest).utterances)[:limit]
    hyps, audio, compute = [], 0.0, 0.0
    for u in utts:
        wave = read_audio(
            u.audio_path,
            sample_rate=loaded.features.sample_rate,
            offset=u.offset,
            duration=u.duration,
        )
        start = time.perf_counter()
        feats, n = extract(torch.from_numpy(wave)[None])
        ids = loaded.model.decode(feats, n)[0]
        hyps.append(loaded.tokenizer.decode(ids))
        compute += time.perf_counter() - start
        audio += len(wave) / loaded.features.sample_rate
    rates = error_rates([normalize_text(u.text) for u in utts], hyps)
    return {**rates.to_dict(), "rtf": compute / audio, "hypotheses": hyps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget")
    ap.add_argument("--threads", type=int, default=2, help="training threads")
    ap.add_argument("--checkpoint", type=Path, default=None, help="skip training, use this")
    ap.add_argument("--corpora", default="corpora")
    ap.add_argument("--out", default="runs/bench-export")
    ap.add_argument("--limit", type=int, default=None, help="utterances per test set")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)

    info = build_corpus(CorpusConfig(), args.corpora)
    tests = {k: v for k, v in info.manifests.items() if k.startswith("test")}
    checkpoint = args.checkpoint or train_baseline(args, info.manifests)
    torch.set_num_threads(1)  # training set its own thread count
    loaded = load_model(checkpoint)
    exported = export_model(
        loaded.model,
        Path(args.out) / "onnx",
        tokenizer=loaded.tokenizer,
        features=loaded.features,
        int8=True,
    )
    runtimes = {
        "ort_fp32": Transcriber(exported.files["model"], threads=1),
        "ort_int8": Transcriber(exported.int8_files["model"], threads=1),
    }
    results: dict[str, dict[str, Any]] = {"torch": {}, "ort_fp32": {}, "ort_int8": {}}
    agreement: dict[str, dict[str, float]] = {"ort_fp32": {}, "ort_int8": {}}
    for name, manifest in tests.items():
        ref = score_torch(loaded, manifest, args.limit)
        results["torch"][name] = ref
        for rt, transcriber in runtimes.items():
            res = score_manifest(transcriber, manifest, limit=args.limit)
            results[rt][name] = res
            same = sum(a == b for a, b in zip(res["hypotheses"], ref["hypotheses"], strict=True))
            agreement[rt][name] = same / len(ref["hypotheses"])
    fp32_bytes = exported.sizes["model.onnx"]
    int8_bytes = exported.sizes["model.int8.onnx"]
    keys = ("wer", "cer", "rtf", "utterances")
    report = {
        "checkpoint": str(checkpoint),
        "parity_max_abs_log_prob": exported.max_parity,
        "results": {
            rt: {name: {k: r[k] for k in keys} for name, r in per.items()}
            for rt, per in results.items()
        },
        "abs_wer_diff_vs_torch": {
            rt: {
                name: abs(results[rt][name]["wer"] - results["torch"][name]["wer"])
                for name in tests
            }
            for rt in runtimes
        },
        "same_text_as_torch": agreement,
        "sizes_bytes": {"fp32": fp32_bytes, "int8": int8_bytes},
        "int8_over_fp32_size": int8_bytes / fp32_bytes,
        "threads": 1,
        "versions": {**versions(), "onnxruntime": __import__("onnxruntime").__version__},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
