"""sherpa-onnx next to ``speechnas transcribe``: WER and real-time factor on the same test sets.

Exports a checkpoint (a ``frontend: knf80`` CTC model) for sherpa-onnx
(``speechnas.export.sherpa``), then decodes every utterance of each manifest twice, one at a
time and greedily: with sherpa-onnx's ``OfflineRecognizer`` and with speechnas's torch-free
``Transcriber``, on the same ``model.onnx`` (and ``model.int8.onnx`` with ``--int8``) with the
same number of threads. RTF is compute time over audio time, features included, audio reading
excluded, for both. Also counts the utterances whose two texts differ. Prints JSON and a table.

``--streaming`` (a streaming ``knf80`` Conformer): sherpa-onnx's ``OnlineRecognizer`` on the
WeNet-format export (``speechnas.export.sherpa_online``) against speechnas's own
``StreamingTranscriber`` on ``stream.onnx``, chunk by chunk with states; both get each utterance
followed by one window of silence (sherpa-onnx runs whole chunks only), and RTF counts the
utterance's own audio.

    .venv/bin/python bench/sherpa.py --checkpoint runs/knf80-small/best \\
        --manifest corpora/digits-en/test.jsonl --manifest corpora/digits-en/test-noisy.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
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
    ap.add_argument("--streaming", action="store_true", help="a streaming model, chunk by chunk")
    ap.add_argument("--chunk", type=int, default=None, help="--streaming: encoder frames/chunk")
    args = ap.parse_args()
    out = Path(args.out)
    if args.streaming:
        exported, decoders = _streaming(args, out)
    else:
        exported, decoders = _offline(args, out)
    rate = exported.sample_rate
    rows: dict[str, dict[str, Any]] = {}
    for precision, with_speechnas, with_sherpa in decoders:
        for manifest in args.manifest:
            name = Path(manifest).stem
            ours, ours_hyps = score(with_speechnas, manifest, rate, args.limit)
            theirs, their_hyps = score(with_sherpa, manifest, rate, args.limit)
            differ = sum(a != b for a, b in zip(ours_hyps, their_hyps, strict=True))
            rows[f"{name}/{precision}"] = {
                "speechnas_transcribe": ours, "sherpa_onnx": theirs, "texts_differ": differ,
            }  # fmt: skip
    report = {
        "checkpoint": args.checkpoint, "threads": args.threads, "streaming": args.streaming,
        "export": {"files": {p.name: p.stat().st_size for p in (exported.model,
                                                               exported.int8_model) if p},
                   "parity_max_abs": max(exported.parity.values(), default=0.0)},
        "results": rows, "versions": versions(),
    }  # fmt: skip
    if args.streaming:
        report["export"]["sherpa_metadata"] = exported.metadata
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    how = "streamed chunk by chunk" if args.streaming else "one at a time"
    table = Table(title=f"{args.checkpoint}: greedy CTC, {args.threads} thread(s), {how}")
    for col in ("test set", "runtime", "WER %", "CER %", "RTF", "texts differ"):
        table.add_column(col, justify="left" if col in ("test set", "runtime") else "right")
    for key, row in rows.items():
        for runtime in ("speechnas_transcribe", "sherpa_onnx"):
            r = row[runtime]
            cells = [f"{100 * r['wer']:.2f}", f"{100 * r['cer']:.2f}", f"{r['rtf']:.4f}"]
            table.add_row(key, runtime, *cells, f"{row['texts_differ']}/{r['utterances']}")
    Console(width=120).print(table)


Decoders = list[tuple[str, Callable[[Any], str], Callable[[Any], str]]]


def _offline(args: argparse.Namespace, out: Path) -> tuple[Any, Decoders]:
    """The offline export, and (precision, speechnas, sherpa-onnx) decoders per precision."""
    exported = export_sherpa(args.checkpoint, out / "sherpa")
    rate = exported.sample_rate
    decoders: Decoders = []
    for int8 in (False, True) if args.int8 else (False,):
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

        decoders.append(("int8" if int8 else "fp32", with_speechnas, with_sherpa))
    return exported, decoders


def _streaming(args: argparse.Namespace, out: Path) -> tuple[Any, Decoders]:
    """The streaming exports (sherpa-onnx's and speechnas's own) and their decoders."""
    from speechnas.export.sherpa_online import export_sherpa_streaming, sherpa_online_recognizer
    from speechnas.export.stream_transcribe import StreamingTranscriber
    from speechnas.export.streaming import export_streaming
    from speechnas.train.checkpoint import load_model

    loaded = load_model(args.checkpoint)
    model = loaded.model
    geo = model.spec.stream_geometry
    model.configure_streaming(chunk=args.chunk or geo.chunk, lookahead=geo.lookahead)
    exported = export_sherpa_streaming(model, out / "sherpa-stream", tokenizer=loaded.tokenizer)
    own = export_streaming(model, out / "stream", tokenizer=loaded.tokenizer, int8=args.int8)
    geo = model.stream_geometry()
    silence = np.zeros(exported.sample_rate * (geo.window + geo.hop) // 100, dtype=np.float32)
    rate = exported.sample_rate
    decoders: Decoders = []
    for int8 in (False, True) if args.int8 else (False,):
        recognizer = sherpa_online_recognizer(exported, threads=args.threads, int8=int8)
        transcriber = StreamingTranscriber(
            own.int8_path if int8 else own.path, threads=args.threads
        )

        def with_sherpa(wave: Any, recognizer: Any = recognizer) -> str:
            stream = recognizer.create_stream()
            stream.accept_waveform(rate, wave)
            stream.accept_waveform(rate, silence)
            stream.input_finished()
            while recognizer.is_ready(stream):
                recognizer.decode_stream(stream)
            return str(recognizer.get_result(stream)).replace("\u2581", " ").strip()

        def with_speechnas(wave: Any, transcriber: Any = transcriber) -> str:
            transcriber.accept(wave)
            transcriber.accept(silence)
            return str(transcriber.finish().text).strip()

        decoders.append(("int8" if int8 else "fp32", with_speechnas, with_sherpa))
    return exported, decoders


if __name__ == "__main__":
    main()
