"""sherpa-onnx next to ``speechnas transcribe``: WER and real-time factor on the same test sets.

Exports a checkpoint (a ``frontend: knf80`` CTC model) for sherpa-onnx
(``speechnas.export.sherpa``), then decodes every utterance of each manifest twice, one at a
time and greedily: with sherpa-onnx's ``OfflineRecognizer`` and with speechnas's torch-free
``Transcriber``, on the same ``model.onnx`` (and ``model.int8.onnx`` with ``--int8``) with the
same number of threads. RTF is compute time over audio time, features included, audio reading
excluded, for both. Also counts the utterances whose two texts differ. Prints JSON and a table.

    .venv/bin/python bench/sherpa.py --checkpoint runs/knf80-small/best \\
        --manifest corpora/digits-en/test.jsonl --manifest corpora/digits-en/test-noisy.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from speechnas.data.audio import read_audio
from speechnas.data.manifest import load_corpus
from speechnas.data.synth.text import normalize_text
from speechnas.evaluate.metrics import error_rates
from speechnas.export.sherpa import export_sherpa, sherpa_recognizer
from speechnas.export.transcribe import Transcriber
from speechnas.versions import versions


def score(
    decode: Any, manifest: str, sample_rate: int, limit: int | None
) -> tuple[dict[str, Any], list[str]]:
    """WER/CER and RTF of ``decode(wave) -> text`` over a manifest, and the hypotheses."""
    utts = list(load_corpus(manifest).utterances)[:limit]
    refs = [normalize_text(u.text) for u in utts]
    hyps: list[str] = []
    compute = audio = 0.0
    for u in utts:
        wave = read_audio(
            u.audio_path, sample_rate=sample_rate, offset=u.offset, duration=u.duration
        )
        start = time.perf_counter()
        hyps.append(decode(wave))
        compute += time.perf_counter() - start
        audio += len(wave) / sample_rate
    rates = error_rates(refs, hyps).to_dict()
    return {**rates, "rtf": compute / audio, "audio_seconds": audio, "utterances": len(utts)}, hyps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a knf80 CTC checkpoint folder")
    ap.add_argument("--manifest", action="append", required=True, help="repeatable")
    ap.add_argument("--out", default="runs/bench-sherpa", help="export folder and report.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--int8", action="store_true", help="also the int8 model")
    ap.add_argument("--limit", type=int, default=None, help="utterances per manifest")
    args = ap.parse_args()
    out = Path(args.out)
    exported = export_sherpa(args.checkpoint, out / "sherpa")
    rate = exported.sample_rate
    rows: dict[str, dict[str, Any]] = {}
    for int8 in (False, True) if args.int8 else (False,):
        precision = "int8" if int8 else "fp32"
        recognizer = sherpa_recognizer(exported, threads=args.threads, int8=int8)
        model = exported.int8_model if int8 else exported.model
        transcriber = Transcriber(model, threads=args.threads)

        def with_sherpa(wave: Any, recognizer: Any = recognizer) -> str:
            stream = recognizer.create_stream()
            stream.accept_waveform(rate, wave)
            recognizer.decode_stream(stream)
            return stream.result.text.strip()

        def with_speechnas(wave: Any, transcriber: Transcriber = transcriber) -> str:
            return transcriber.transcribe_wave(wave).text

        for manifest in args.manifest:
            name = Path(manifest).stem
            ours, ours_hyps = score(with_speechnas, manifest, rate, args.limit)
            theirs, their_hyps = score(with_sherpa, manifest, rate, args.limit)
            differ = sum(a != b for a, b in zip(ours_hyps, their_hyps, strict=True))
            rows[f"{name}/{precision}"] = {
                "speechnas_transcribe": ours, "sherpa_onnx": theirs, "texts_differ": differ,
            }  # fmt: skip
    report = {
        "checkpoint": args.checkpoint, "threads": args.threads,
        "export": {"files": {k: v for k, v in exported.sizes.items()},
                   "parity_max_abs": max(exported.parity.values(), default=0.0)},
        "results": rows, "versions": versions(),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    table = Table(title=f"{args.checkpoint}: greedy CTC, {args.threads} thread(s), one at a time")
    for col in ("test set", "runtime", "WER %", "CER %", "RTF", "texts differ"):
        table.add_column(col, justify="left" if col in ("test set", "runtime") else "right")
    for key, row in rows.items():
        for runtime in ("speechnas_transcribe", "sherpa_onnx"):
            r = row[runtime]
            cells = [f"{100 * r['wer']:.2f}", f"{100 * r['cer']:.2f}", f"{r['rtf']:.4f}"]
            table.add_row(key, runtime, *cells, f"{row['texts_differ']}/{r['utterances']}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
