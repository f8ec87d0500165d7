"""The ``speechnas`` command: a thin layer over the library."""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

if TYPE_CHECKING:
    from speechnas.hardware.predictor import LatencyPredictor
    from speechnas.search.config import SearchConfig
    from speechnas.space import Arch, SearchSpace

app = typer.Typer(
    help="Hardware-aware architecture search for speech models.", no_args_is_help=True
)
data_app = typer.Typer(help="Corpora: the built-in synthetic one, and checks of your own.")
app.add_typer(data_app, name="data")
space_app = typer.Typer(help="Search spaces: list their choices, count and sample them.")
app.add_typer(space_app, name="space")
latency_app = typer.Typer(help="Latency: calibrate a per-target predictor, predict with it.")
app.add_typer(latency_app, name="latency")
compress_app = typer.Typer(help="Compression of a trained model: FFN widths and ranks, bit widths.")
app.add_typer(compress_app, name="compress")
console = Console()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
        force=True,
    )


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(2)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    _setup_logging(verbose)


def default_config_path() -> Path:
    return Path(str(resources.files("speechnas") / "configs" / "baseline.yaml"))


def _parse_sizes(sizes: list[str]) -> dict[str, int]:
    out = {}
    for s in sizes:
        name, _, n = s.partition("=")
        if not n.isdigit():
            raise _fail(f"--size {s!r}: expected SPLIT=COUNT, e.g. train=2000")
        out[name] = int(n)
    return out


def _parse_engines(text: str) -> dict[str, float] | str:
    if text == "auto":
        return text
    out = {}
    for item in filter(None, text.split(",")):
        name, sep, share = item.partition("=")
        try:
            out[name] = float(share) if sep else 1.0
        except ValueError:
            raise _fail(f"--engines {text!r}: expected auto or ENGINE[=SHARE],...") from None
    return out


@data_app.command("tts-import")
def data_tts_import(
    ljspeech: Annotated[Path, typer.Argument(help="an LJSpeech-layout folder with durations")],
    out: Annotated[Path, typer.Option(help="folder that receives the manifests")],
    dev: Annotated[int, typer.Option(help="dev utterances")] = 100,
    test: Annotated[int, typer.Option(help="test utterances")] = 100,
    seed: int = 0,
) -> None:
    """Your TTS corpus (LJSpeech layout: metadata.csv, wavs/, durations.jsonl) as the manifests
    a TTS search reads (corpus: null, train: {train, dev, test, vocab} under OUT)."""
    from speechnas.data.tts import load_ljspeech, write_tts_corpus

    try:
        info = write_tts_corpus(load_ljspeech(ljspeech), out, dev=dev, test=test, seed=seed)
    except ValueError as e:
        raise _fail(str(e)) from None
    console.print_json(data={"manifests": {k: str(v) for k, v in info.manifests.items()},
                             "vocab": str(info.vocab_path), **info.stats})  # fmt: skip


@data_app.command("synth")
def data_synth(
    task: Annotated[str, typer.Option(help="digits or phrases")] = "digits",
    lang: Annotated[str, typer.Option(help="en, de, es or fr (phrases: en)")] = "en",
    out: Annotated[Path, typer.Option(help="folder that receives <task>-<lang>/")] = Path(
        "corpora"
    ),
    seed: int = 0,
    size: Annotated[list[str], typer.Option(help="SPLIT=COUNT, repeatable")] = [],  # noqa: B006
    workers: int = 2,
    force: bool = False,
    engines: Annotated[
        str,
        typer.Option(help="training engines: auto, or ENGINE[=SHARE],... of espeak, flite"),
    ] = "auto",
    unseen_engine: Annotated[
        str, typer.Option(help="engine of test-unseen-engine: auto, festival, ... or none")
    ] = "auto",
    train_devices: Annotated[
        float,
        typer.Option(help="share of training utterances also through a recording device (0-1)"),
    ] = 0.0,
    babble_pool: Annotated[
        int | None,
        typer.Option(help="utterances per voice group that babble noise is mixed from [48]"),
    ] = None,
) -> None:
    """Generate (or reuse) the built-in synthetic corpus: FLAC audio and JSONL manifests."""
    from speechnas.data.synth.corpus import CorpusConfig, build_corpus
    from speechnas.data.synth.engines import EngineUnavailable

    try:
        defaults = CorpusConfig().sizes
        cfg = CorpusConfig(
            task=task,
            lang=lang,
            seed=seed,
            sizes={**defaults, **_parse_sizes(size)},
            engines=_parse_engines(engines),
            unseen_engine=None if unseen_engine == "none" else unseen_engine,
            train_devices=train_devices,
            **({} if babble_pool is None else {"babble_pool": babble_pool}),
        )
        info = build_corpus(cfg, out, workers=workers, force=force)
    except (ValueError, EngineUnavailable) as e:
        raise _fail(str(e)) from None
    table = Table(title=f"{info.folder} ({'cached' if info.cached else 'built'})")
    for col in ("split", "utterances", "hours", "manifest"):
        table.add_column(col)
    for split, path in info.manifests.items():
        table.add_row(
            split,
            str(info.stats["counts"][split]),
            f"{info.stats['hours'][split]:.2f}",
            str(path),
        )
    console.print(table)
    console.print(f"{info.stats['utterances_per_second']:.1f} utterances/s when built")
    unseen = info.stats.get("unseen_engine") or "none"
    console.print(f"engines: {info.stats.get('engines')}; unseen engine: {unseen}")


def _results_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    chunked = any("chunk_ms_p90" in r for r in rows.values())
    cols = ["test set", "utterances", "WER %", "CER %", "SER %", "RTF"]
    for col in cols + (["chunk p50 ms", "chunk p90 ms"] if chunked else []):
        table.add_column(col, justify="right" if col != "test set" else "left")
    for name, r in rows.items():
        cells = [
            name,
            str(r["utterances"]),
            f"{100 * r['wer']:.2f}",
            f"{100 * r['cer']:.2f}",
            f"{100 * r['sentence_errors'] / r['utterances']:.1f}",
            f"{r['rtf']:.4f}",
        ]
        if chunked:
            cells += [f"{r['chunk_ms_p50']:.2f}", f"{r['chunk_ms_p90']:.2f}"]
        table.add_row(*cells)
    return table


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(help="training YAML")] = None,
    output_dir: Annotated[str | None, typer.Option(help="overrides the config's")] = None,
    minutes: Annotated[float | None, typer.Option(help="overrides budget.max_minutes")] = None,
    resume: Annotated[bool, typer.Option(help="continue from output_dir/last if present")] = True,
    skip_invalid: Annotated[
        bool, typer.Option(help="drop bad manifest entries (and say which) instead of stopping")
    ] = False,
    steps: Annotated[int | None, typer.Option(help="overrides budget.max_steps")] = None,
) -> None:
    """Train a model from a YAML config (default: the Conformer-CTC baseline)."""
    import dataclasses

    from speechnas.data.manifest import ManifestError
    from speechnas.train.config import load_config
    from speechnas.train.trainer import Trainer

    try:
        cfg = load_config(config or default_config_path())
        if output_dir:
            cfg = cfg.replace(output_dir=output_dir)
        if minutes is not None:
            cfg = cfg.replace(budget=dataclasses.replace(cfg.budget, max_minutes=minutes))
        if steps is not None:
            cfg = cfg.replace(budget=dataclasses.replace(cfg.budget, max_steps=steps))
        if skip_invalid:
            cfg = cfg.replace(data=dataclasses.replace(cfg.data, skip_invalid=True))
        result = Trainer.from_config(cfg).fit(resume=resume)
    except (ValueError, ManifestError) as e:
        raise _fail(str(e)) from None
    for path, problems in result.skipped.items():
        console.print(f"[yellow]skipped {len(problems)} invalid entries in {path}[/]")
        for p in problems:
            console.print(f"  {p}", soft_wrap=True)
    console.print(_results_table(f"best model: {result.output_dir / 'best'}", result.test))
    console.print(
        f"{result.parameters:,} parameters, {result.epochs} epochs, {result.steps} steps, "
        f"{result.train_seconds / 60:.1f} min, {result.throughput:.0f} s audio/s, "
        f"stopped by {result.stop_reason}"
    )


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="a checkpoint folder, e.g. runs/x/best")],
    manifest: Annotated[list[str], typer.Option(help="manifest or Kaldi dir; repeatable")],
    skip_invalid: bool = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write JSON here")] = None,
) -> None:
    """WER/CER of a checkpoint on one or more test sets: one row each."""
    from speechnas.data.manifest import ManifestError
    from speechnas.train.score import score_checkpoint

    try:
        scores = score_checkpoint(checkpoint, {m: m for m in manifest}, skip_invalid=skip_invalid)
        rows = {m: {**ev.rates.to_dict(), "rtf": ev.rtf} for m, ev in scores.items()}
    except (ValueError, ManifestError) as e:
        raise _fail(str(e)) from None
    console.print(_results_table(str(checkpoint), rows))
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


@app.command()
def compare(
    checkpoint_a: Annotated[Path, typer.Argument(help="checkpoint folder A")],
    checkpoint_b: Annotated[Path, typer.Argument(help="checkpoint folder B")],
    manifest: Annotated[list[str], typer.Option(help="manifest or Kaldi dir; repeatable")],
    samples: Annotated[int, typer.Option(help="bootstrap resamples")] = 10_000,
    seed: int = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write JSON here")] = None,
) -> None:
    """Is A's WER different from B's? Both WERs, A - B, and paired tests (MAPSSWE, bootstrap)."""
    from speechnas.data.manifest import ManifestError
    from speechnas.evaluate.significance import compare_systems
    from speechnas.train.score import score_checkpoint

    sets = {m: m for m in manifest}
    try:
        a = score_checkpoint(checkpoint_a, sets)
        b = score_checkpoint(checkpoint_b, sets)
        rows = {
            m: compare_systems(
                a[m].references, a[m].hypotheses, b[m].hypotheses, samples=samples, seed=seed
            )
            for m in sets
        }
    except (ValueError, ManifestError) as e:
        raise _fail(str(e)) from None
    table = Table(title=f"A = {checkpoint_a}   B = {checkpoint_b}")
    for col in ("test set", "WER A %", "WER B %", "A - B", "95% CI", "p MAPSSWE", "p bootstrap"):
        table.add_column(col, justify="left" if col == "test set" else "right")
    for m, r in rows.items():
        table.add_row(
            m, f"{100 * r['wer_a']:.2f}", f"{100 * r['wer_b']:.2f}", f"{100 * r['delta']:+.2f}",
            f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]",
            f"{r['p_mapsswe']:.3g}", f"{r['p_bootstrap']:.3g}",
        )  # fmt: skip
    console.print(table)
    console.print("A differs from B at alpha 0.05 where a p-value is below 0.05.")
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


@app.command("export")
def export_onnx(
    checkpoint: Annotated[Path, typer.Option(help="a checkpoint folder, e.g. runs/x/best")],
    output: Annotated[Path, typer.Option(help="folder that receives the ONNX files")],
    int8: Annotated[bool, typer.Option("--int8", help="also write int8-quantised copies")] = False,
    check: Annotated[bool, typer.Option(help="compare ONNX Runtime with PyTorch")] = True,
    kernels: Annotated[
        str,
        typer.Option(
            help="quantized checkpoints: exact (float compute, low-bit storage), fast (int8 "
            "compute, low-bit storage) or int8 (every linear on the int8 kernels, stored in 8 "
            "bits; the fastest here)"
        ),
    ] = "exact",
    attention_impl: Annotated[
        str | None,
        typer.Option(
            help="export under this attention implementation (sdpa, matmul, einsum, "
            "split_heads): same weights and outputs, another graph; matmul is the fastest on "
            "ONNX Runtime here"
        ),
    ] = None,
    reduce_range: Annotated[
        str,
        typer.Option(
            help="quantized checkpoints, fast/int8 kernels: 7-bit int8 weights for CPUs without "
            "VNNI, whose int8 kernels saturate with 8-bit ones: auto (this CPU), on or off"
        ),
    ] = "auto",
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx (speechnas transcribe), sherpa (sherpa-onnx offline CTC: model.onnx, "
            "model.int8.onnx, tokens.txt; with --streaming its online WeNet-CTC format) or "
            "coreml (OUTPUT/model.mlpackage)",
        ),
    ] = "onnx",
    precision: Annotated[str, typer.Option(help="coreml: fp16 or fp32 compute")] = "fp16",
    max_seconds: Annotated[float, typer.Option(help="coreml: longest utterance")] = 30.0,
    streaming: Annotated[
        bool, typer.Option("--streaming", help="a streaming model: OUTPUT/stream.onnx with states")
    ] = False,
    chunk: Annotated[
        int | None, typer.Option(help="--streaming: encoder frames per chunk (default: the arch's)")
    ] = None,
    lookahead: Annotated[
        int | None, typer.Option(help="--streaming: look-ahead frames (default: the arch's)")
    ] = None,
) -> None:
    """Export a checkpoint to self-describing ONNX files and check them against PyTorch.
    A quantized checkpoint (``speechnas compress quantize``) is written with its weights in
    low-bit integer storage, each sub-module at its own width. ``--format sherpa`` writes
    what sherpa-onnx loads as it is (a ``frontend: knf80`` CTC model); ``--format coreml`` an
    ML program for Core ML, checked here without Apple's runtime. ``--format sherpa
    --streaming``: a streaming Conformer for sherpa-onnx's online recogniser."""
    from speechnas.export.onnx import export_checkpoint
    from speechnas.train.checkpoint import load_model

    if fmt not in ("onnx", "sherpa", "coreml"):
        raise _fail(f"--format: {fmt!r} is not one of 'onnx', 'sherpa', 'coreml'")
    if streaming and fmt == "coreml":
        raise _fail("--streaming: Core ML export is of full-utterance models; drop --streaming")
    if attention_impl is not None and (streaming or fmt != "onnx"):
        raise _fail(
            "--attention-impl: applies to full-utterance --format onnx exports only; drop it "
            "or export with --format onnx"
        )
    if reduce_range not in ("auto", "on", "off"):
        raise _fail(f"--reduce-range: {reduce_range!r} is not one of 'auto', 'on', 'off'")
    if streaming:
        try:
            _export_streaming(checkpoint, output, int8, check, chunk, lookahead, fmt)
        except ValueError as e:
            raise _fail(str(e)) from None
        return
    if fmt != "onnx":
        try:
            _export_runtime(checkpoint, output, fmt, check, precision, max_seconds)
        except ValueError as e:
            raise _fail(str(e)) from None
        return
    try:
        loaded = load_model(checkpoint)
        if loaded.meta.get("bits"):
            _export_lowbit(loaded, output, kernels, attention_impl, reduce_range)
            return
        result = export_checkpoint(
            checkpoint, output, int8=int8, check=check, attention_impl=attention_impl
        )
    except ValueError as e:
        raise _fail(str(e)) from None
    table = Table(title=f"{checkpoint} → {output}")
    for col in ("file", "KiB", "max |ORT - torch|"):
        table.add_column(col, justify="left" if col == "file" else "right")
    paths = [*result.files.items(), *result.int8_files.items()]
    for graph, path in paths:
        diffs = [v for k, v in result.parity.items() if k.startswith(f"{graph}/")]
        shown = f"{max(diffs):.2e}" if diffs and path in result.files.values() else "-"
        table.add_row(path.name, f"{result.sizes[path.name] / 1024:.1f}", shown)
    console.print(table)


def _export_streaming(
    checkpoint: Path,
    output: Path,
    int8: bool,
    check: bool,
    chunk: int | None,
    lookahead: int | None,
    fmt: str = "onnx",
) -> None:
    """``speechnas export --streaming``: the chunk graph with its states."""
    from speechnas.export.streaming import export_streaming
    from speechnas.train.checkpoint import load_model

    loaded = load_model(checkpoint)
    model = loaded.model
    geo = model.spec.stream_geometry  # a clear error for a model that does not stream
    model.configure_streaming(
        chunk=geo.chunk if chunk is None else chunk,
        lookahead=geo.lookahead if lookahead is None else lookahead,
    )
    if fmt == "sherpa":
        _export_sherpa_streaming(model, loaded.tokenizer, checkpoint, output, check)
        return
    res = export_streaming(model, output, tokenizer=loaded.tokenizer, check=check, int8=int8)
    meta = res.metadata
    table = Table(title=f"{checkpoint} → {output} (streaming)")
    for col in ("file", "KiB", "chunk ms", "look-ahead", "algorithmic latency ms"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for path in (res.path, res.int8_path):
        if path is not None:
            table.add_row(path.name, f"{path.stat().st_size / 1024:.1f}", meta["stream_chunk_ms"],
                          meta["stream_lookahead"], meta["algorithmic_latency_ms"])  # fmt: skip
    console.print(table)
    for name, diff in res.parity.items():
        console.print(f"max |{name}| difference {diff:.2e}")


def _export_sherpa_streaming(
    model: Any, tokenizer: Any, checkpoint: Path, output: Path, check: bool
) -> None:
    from speechnas.export.sherpa_online import export_sherpa_streaming

    res = export_sherpa_streaming(model, output, tokenizer=tokenizer, check=check)
    meta = res.metadata
    table = Table(title=f"{checkpoint} → {output} (sherpa-onnx streaming, WeNet CTC)")
    for col in ("file", "KiB", "chunk ms", "algorithmic latency ms"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for path in (res.model, res.int8_model, res.tokens):
        if path is not None:
            table.add_row(path.name, f"{path.stat().st_size / 1024:.1f}", meta["stream_chunk_ms"],
                          meta["algorithmic_latency_ms"])  # fmt: skip
    console.print(table)
    if res.parity:
        console.print(f"max |ORT - torch| over six chunks {max(res.parity.values()):.2e}")
    _print_call(
        "sherpa_onnx.OnlineRecognizer.from_wenet_ctc", res.recognizer_kwargs(),
        "  # end each stream with a window of silence: it decodes whole chunks",
    )  # fmt: skip


def _print_call(function: str, kwargs: dict[str, Any], comment: str = "") -> None:
    """How to load an export: the call, with its keyword arguments, as Python."""
    console.print(
        f"{function}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")" + comment
    )


def _export_runtime(
    checkpoint: Path, output: Path, fmt: str, check: bool, precision: str, max_seconds: float
) -> None:
    """``speechnas export --format sherpa|coreml``."""
    if fmt == "sherpa":
        from speechnas.export.sherpa import export_sherpa

        res = export_sherpa(checkpoint, output, int8=True, check=check)
        table = Table(title=f"{checkpoint} → {output} (sherpa-onnx offline CTC)")
        for col in ("file", "KiB"):
            table.add_column(col, justify="left" if col == "file" else "right")
        for name, size in res.sizes.items():
            table.add_row(name, f"{size / 1024:.1f}")
        table.add_row(res.tokens.name, f"{res.tokens.stat().st_size / 1024:.1f}")
        console.print(table)
        if res.parity:
            console.print(f"max |ORT - torch| {max(res.parity.values()):.2e}")
        _print_call("sherpa_onnx.OfflineRecognizer.from_zipformer_ctc", res.recognizer_kwargs())
        return
    from speechnas.export.coreml import export_coreml

    cm = export_coreml(
        checkpoint, output / "model.mlpackage", max_seconds=max_seconds, precision=precision,
        check=check,
    )  # fmt: skip
    console.print(
        f"{cm.path}: ML program, {cm.precision}, {json.loads(cm.metadata['features'])['kind']}"
        f" features of {cm.min_frames}..{cm.max_frames} frames → log_probs, out_lengths"
    )
    if check:
        console.print(f"checked: {', '.join(cm.checks)}")
        parity = ", ".join(f"{t} frames {d:.2e}" for t, d in cm.program_parity.items())
        console.print(f"max |MIL program (numpy) - torch|: {parity}")


def _export_lowbit(
    loaded: Any, output: Path, kernels: str, attention_impl: str | None, reduce_range: str
) -> None:
    from speechnas.export.lowbit import export_lowbit
    from speechnas.hardware.cpu import missing_features

    seven = reduce_range == "on" or (
        reduce_range == "auto" and bool(missing_features("int8-static"))
    )
    if seven and kernels != "exact":
        console.print("int8 weights in 7 bits (--reduce-range): without VNNI, 8-bit ones saturate")
    res = export_lowbit(
        loaded.model, loaded.meta["bits"], output / "model.onnx", kernels=kernels,
        tokenizer=loaded.tokenizer, features=loaded.features, attention_impl=attention_impl,
        reduce_range=seven,
    )  # fmt: skip
    table = Table(title=f"{res.path} ({kernels} kernels)")
    for col in ("file KiB", "packed KiB", "stored KiB", "max |ORT - torch|"):
        table.add_column(col, justify="right")
    parity = "-" if res.parity is None else f"{res.parity:.2e}"
    table.add_row(f"{res.file_bytes / 1024:.1f}", f"{res.weight_bytes / 1024:.1f}",
                  f"{res.stored_bytes / 1024:.1f}", parity)  # fmt: skip
    console.print(table)


@app.command()
def transcribe(
    model: Annotated[Path, typer.Argument(help="model.onnx, RNN-T encoder.onnx, or the folder")],
    audio: Annotated[list[Path] | None, typer.Argument(help="audio files")] = None,
    manifest: Annotated[list[str], typer.Option(help="score a manifest; repeatable")] = [],  # noqa: B006
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    streaming: Annotated[
        bool,
        typer.Option(
            "--streaming",
            help="a streaming export (stream.onnx): feed the audio chunk by chunk, print partial "
            "results as they change, per-chunk latency and RTF",
        ),
    ] = False,
) -> None:
    """Transcribe audio with an exported model (no PyTorch): text and real-time factor."""
    from speechnas.export.transcribe import Transcriber, score_manifest

    if streaming:
        _transcribe_streaming(model, audio or [], manifest, threads, json_out)
        return

    try:
        tr = Transcriber(model, threads=threads)
        files = {str(p): tr.transcribe_file(p) for p in audio or []}
        scores = {m: score_manifest(tr, m) for m in manifest}
    except (ValueError, RuntimeError) as e:
        raise _fail(str(e)) from None
    if json_out:
        out = {
            "files": {p: {"text": t.text, "rtf": t.rtf, "seconds": t.audio_seconds}
                      for p, t in files.items()},
            "manifests": _scores_json(scores),
        }  # fmt: skip
        print(json.dumps(out, indent=1))
        return
    for p, t in files.items():
        console.print(f"{p}\t{t.text}\tRTF {t.rtf:.4f}", soft_wrap=True, highlight=False)
    if scores:
        console.print(_results_table(f"{model} ({threads} thread(s))", scores))


def _scores_json(scores: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Manifest scores without the per-utterance lists, for ``--json``."""
    return {
        m: {k: v for k, v in s.items() if k not in ("hypotheses", "ids")} for m, s in scores.items()
    }


def _transcribe_streaming(
    model: Path, audio: list[Path], manifests: list[str], threads: int, json_out: bool
) -> None:
    from speechnas.export.stream_transcribe import StreamingTranscriber, score_stream_manifest

    try:
        tr = StreamingTranscriber(model, threads=threads)
        files = {str(p): tr.transcribe_file(p) for p in audio}
        scores = {m: score_stream_manifest(tr, m) for m in manifests}
    except (ValueError, RuntimeError) as e:
        raise _fail(str(e)) from None
    if json_out:
        out = {
            "files": {p: {"text": t.text, "rtf": t.rtf, "partials": t.partials,
                          "chunk_ms": [1000 * s for s in t.chunk_seconds]}
                      for p, t in files.items()},
            "manifests": _scores_json(scores),
        }  # fmt: skip
        print(json.dumps(out, indent=1))
        return
    for p, t in files.items():
        shown = ""
        for ms, text in t.partials:
            if text != shown:
                console.print(f"{p}\t{ms:7.0f} ms\t{text}", soft_wrap=True, highlight=False)
                shown = text
        ms = sorted(1000 * s for s in t.chunk_seconds)
        console.print(
            f"{p}\t{t.text}\tRTF {t.rtf:.4f}\t{len(ms)} chunks, median "
            f"{ms[len(ms) // 2] if ms else 0:.2f} ms",
            soft_wrap=True,
            highlight=False,
        )
    if scores:
        console.print(_results_table(f"{model} streaming ({threads} thread(s))", scores))


@app.command()
def quickstart(
    minutes: Annotated[float, typer.Option(help="training budget")] = 10.0,
    corpora: Path = Path("corpora"),
    output_dir: str = "runs/quickstart",
) -> None:
    """End to end on built-in data: make the digits corpus, train the baseline, evaluate."""
    import dataclasses

    from speechnas.data.synth.corpus import CorpusConfig, build_corpus
    from speechnas.train.config import load_config
    from speechnas.train.trainer import Trainer

    info = build_corpus(CorpusConfig(), corpora)
    cfg = load_config(default_config_path())
    m = info.manifests
    data = cfg.data.with_corpus(m)
    cfg = cfg.replace(
        data=data,
        output_dir=output_dir,
        budget=dataclasses.replace(cfg.budget, max_minutes=minutes),
    )
    result = Trainer.from_config(cfg).fit()
    console.print(_results_table(f"Conformer-CTC baseline after {minutes:g} min", result.test))
    console.print(
        f"{result.parameters:,} parameters, {result.throughput:.0f} s audio/s; "
        f"model in {result.output_dir / 'best'}, details in {result.output_dir / 'result.json'}"
    )


def _own_data(
    cfg: SearchConfig, train: str | None, dev: str | None, tests: list[str]
) -> SearchConfig:
    """``cfg`` on the user's manifests, each read (and any problem in it reported) before any
    work starts."""
    from speechnas.data.loading import load_utterances
    from speechnas.search.config import with_own_data

    if not (train and dev):
        raise _fail("your own data needs both --train and --dev (and any number of --test)")
    named = {}
    for item in tests:
        name, sep, path = item.partition("=")
        if not (sep and name and path):
            raise _fail(f"--test {item!r}: expected NAME=MANIFEST, e.g. test=data/test.jsonl")
        named[name] = path
    for flag, path in [
        ("--train", train),
        ("--dev", dev),
        *((f"--test {k}", v) for k, v in named.items()),
    ]:
        utts = load_utterances(path, skip_invalid=False)
        console.print(
            f"{flag}: {path}, {len(utts)} utterances, {sum(u.duration for u in utts) / 3600:.2f} h",
            soft_wrap=True,
        )
    return with_own_data(cfg, train, dev, named)


@app.command()
def search(
    config: Annotated[
        Path | None,
        typer.Option(
            help="search YAML, or a packaged one by name: multilingual (default: the built-in)"
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="asr (default) or tts: text-to-speech acoustic models (search-tts.yaml)"),
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue the study in the storage")] = False,
    join: Annotated[
        bool,
        typer.Option(
            "--join",
            help="add this machine's workers to a search running on the same --storage "
            "(same config); the search that started the study selects and retrains",
        ),
    ] = False,
    output_dir: Annotated[str | None, typer.Option(help="overrides output_dir")] = None,
    study_name: Annotated[str | None, typer.Option(help="overrides study_name")] = None,
    trials: Annotated[int | None, typer.Option(help="overrides n_trials")] = None,
    minutes: Annotated[float | None, typer.Option(help="overrides max_minutes")] = None,
    workers: Annotated[int | None, typer.Option(help="overrides workers")] = None,
    strategy: Annotated[str | None, typer.Option(help="overrides strategy.name")] = None,
    seed: Annotated[int | None, typer.Option(help="overrides seed")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL")] = None,
    artifacts: Annotated[
        str | None,
        typer.Option(help="also keep trial checkpoints here: a path or fsspec URL (s3://...)"),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="where workers run: local (processes) or ray")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto or HOST:PORT (default: a local Ray)")
    ] = None,
    train_data: Annotated[
        str | None,
        typer.Option(
            "--train",
            help="your training manifest (JSONL or Kaldi dir) instead of the built-in corpus",
        ),
    ] = None,
    dev_data: Annotated[
        str | None, typer.Option("--dev", help="your dev manifest: trials are judged on it")
    ] = None,
    test_data: Annotated[
        list[str],
        typer.Option("--test", help="NAME=MANIFEST, repeatable: the retrained model's test sets"),
    ] = [],  # noqa: B006
) -> None:
    """Search architectures (multi-fidelity, multi-objective), then retrain the best one."""
    import dataclasses

    from speechnas.data.manifest import ManifestError
    from speechnas.search.config import (
        default_search_path,
        load_search_config,
        search_config_path,
    )
    from speechnas.search.runner import run_search

    if task is not None and task not in ("asr", "tts"):
        raise _fail(f"--task: {task!r} is not one of ['asr', 'tts']")
    if config:
        path = search_config_path(config)
    else:
        path = search_config_path("tts") if task == "tts" else default_search_path()
    try:
        cfg = load_search_config(path)
        if task is not None and cfg.task != task:
            raise ValueError(f"--task {task}: {path} configures a {cfg.task} search")
        changes: dict[str, object] = {
            k: v
            for k, v in {
                "output_dir": output_dir,
                "study_name": study_name,
                "n_trials": trials,
                "max_minutes": minutes,
                "workers": workers,
                "seed": seed,
                "storage": storage,
                "artifacts": artifacts,
                "backend": backend,
                "ray_address": ray_address,
            }.items()
            if v is not None
        }
        if strategy is not None:
            changes["strategy"] = dataclasses.replace(cfg.strategy, name=strategy, options={})
        cfg = cfg.replace(**changes)
        if train_data or dev_data or test_data:
            cfg = _own_data(cfg, train_data, dev_data, test_data)
        run_search(cfg, resume=resume, join=join, console=console)
    except (ValueError, ManifestError) as e:
        raise _fail(str(e)) from None


@app.command()
def synthesize(
    model: Annotated[Path, typer.Argument(help="an exported TTS model folder")],
    text: Annotated[str, typer.Argument(help="what to say")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the WAV file to write")],
    int8: Annotated[bool, typer.Option(help="the int8 graph")] = False,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads")] = 1,
    png: Annotated[bool, typer.Option(help="also write the mel as a PNG beside the WAV")] = False,
) -> None:
    """Speak TEXT with an exported TTS acoustic model (ONNX Runtime and Griffin-Lim, no
    PyTorch)."""
    from speechnas.export.tts_runtime import synthesize_command

    try:
        info = synthesize_command(model, text, output, int8=int8, threads=threads, plot=png)
    except ValueError as e:
        raise _fail(str(e)) from None
    console.print_json(data=info)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a search's output_dir (holds study.db)")],
    output: Annotated[Path | None, typer.Option(help="default: RUN_DIR/report.html")] = None,
    decode: Annotated[
        bool, typer.Option(help="decode the retrained model and the front for error analysis")
    ] = True,
    top: Annotated[int, typer.Option(help="architectures side by side")] = 10,
    max_front: Annotated[int, typer.Option(help="front members decoded and compared")] = 6,
) -> None:
    """Write the search report: one self-contained HTML file (opens without a network)."""
    from speechnas.report.build import write_report

    try:
        path = write_report(run_dir, output, decode=decode, top=top, max_front=max_front,
                            log=console.print)  # fmt: skip
    except ValueError as e:
        raise _fail(str(e)) from None
    console.print(f"report: {path}")
    db = run_dir.resolve() / "study.db"
    console.print(f"the study in optuna-dashboard: optuna-dashboard sqlite:///{db}")


@app.command("select")
def select_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a finished search's output_dir")],
    max_latency_ms: Annotated[float | None, typer.Option(help="latency limit (ms)")] = None,
    max_params: Annotated[float | None, typer.Option(help="parameter limit")] = None,
    max_macs: Annotated[float | None, typer.Option(help="MAC limit")] = None,
    max_memory_mb: Annotated[float | None, typer.Option(help="weights limit (MB)")] = None,
    max_chunk_latency_ms: Annotated[float | None, typer.Option(help="per-chunk limit (ms)")] = None,
    prefer: Annotated[
        str | None, typer.Option(help="metric to minimise (default: the search's own)")
    ] = None,
    retrain: Annotated[
        bool, typer.Option("--retrain", help="retrain the choice like the search's selection")
    ] = False,
    minutes: Annotated[float | None, typer.Option(help="retraining minutes")] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="retrained model (default: RUN_DIR/reselected/KEY)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write JSON here")] = None,
) -> None:
    """Pick the best architecture of a finished study for other limits, without searching."""
    import json

    from speechnas.search.finished import load_run, reselect
    from speechnas.search.select import front_table

    limits = {"max_latency_ms": max_latency_ms, "max_params": max_params,
              "max_macs": max_macs, "max_memory_mb": max_memory_mb,
              "max_chunk_latency_ms": max_chunk_latency_ms}  # fmt: skip
    try:
        run = load_run(run_dir)
        steps = None
        if retrain and minutes is None:
            minutes, steps = run.config.retrain_minutes or None, run.config.retrain_steps
            if minutes is None and steps is None:
                raise ValueError("--retrain: the search retrained for 0 minutes; give --minutes")
        chosen, metrics = reselect(
            run, prefer=prefer, retrain_minutes=minutes if retrain else None,
            retrain_steps=steps if retrain else None, output_dir=output_dir, **limits,
        )  # fmt: skip
    except ValueError as e:
        raise _fail(str(e)) from None
    want = ", ".join(f"{k}={v:g}" for k, v in limits.items() if v is not None) or "no limits"
    console.print(front_table([chosen], run.objectives, f"selected for {want}"))
    console.print(f"trial {chosen.trial}, arch {json.dumps(chosen.arch.to_json())}", soft_wrap=True)
    if metrics is not None:
        console.print(f"model: {metrics['checkpoint']}")
    if json_out is not None:
        payload = {
            "limits": limits,
            "selected": chosen.to_dict(run.objectives),
            "retrained": metrics,
        }
        json_out.write_text(json.dumps(payload, indent=1, default=str))


@app.command()
def extract(
    supernet: Annotated[Path, typer.Argument(help="a supernet checkpoint folder")],
    arch: Annotated[str, typer.Option(help="the path: a JSON architecture or a file of them")],
    output: Annotated[Path, typer.Option(help="the checkpoint folder to write")],
) -> None:
    """Writes one path of a trained supernet as a plain model checkpoint (for evaluate, export,
    or fine-tuning with init_from)."""
    from speechnas.train.checkpoint import load_supernet, save_extracted

    (one, *rest) = _read_archs(arch)
    if rest:
        raise _fail(f"--arch {arch!r}: holds {1 + len(rest)} architectures; give one")
    try:
        loaded = load_supernet(supernet)
        folder = save_extracted(loaded, one, output)
    except ValueError as e:
        raise _fail(str(e)) from None
    params = sum(p.numel() for p in loaded.model.extract(one).parameters())
    console.print(f"extracted {one.hash()[:8]} ({params:,} parameters) to {folder}")


def _read_archs(spec: str) -> list[Arch]:
    """Architectures from a JSON object or a file of JSON lines (``space sample`` output, whose
    lines hold an "arch" entry, or plain architectures)."""
    from speechnas.space import Arch

    path = Path(spec)
    text = path.read_text() if not spec.lstrip().startswith("{") and path.is_file() else spec
    archs = []
    for i, line in enumerate(t for t in text.splitlines() if t.strip()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(f"--arch line {i + 1}: not JSON ({e})") from None
        archs.append(Arch.from_json(data.get("arch", data)))
    if not archs:
        raise _fail(f"--arch {spec!r}: no architecture found")
    return archs


TargetOption = Annotated[
    str, typer.Option("--target", help="a built-in target (cpu-ort-1t, ...) or a YAML file")
]
TableOption = Annotated[Path | None, typer.Option(help="table file (default: in --cache)")]
CacheOption = Annotated[Path | None, typer.Option(help="default ~/.cache/speechnas/latency")]
SecondsOption = Annotated[
    list[float],
    typer.Option("--seconds", help="utterance length; repeatable (default: the target's)"),
]


@app.command("profile")
def profile_model(
    model: Annotated[
        str | None, typer.Argument(help=".onnx file, folder of exported files or checkpoint")
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="instead of MODEL: an architecture (JSON or JSON-lines file)")
    ] = None,
    target: TargetOption = "cpu-ort-1t",
    seconds: SecondsOption = [],  # noqa: B006
    repeats: Annotated[int | None, typer.Option(help="timed runs per input")] = None,
    warmup: Annotated[int | None, typer.Option(help="untimed runs per input")] = None,
    rounds: Annotated[
        int,
        typer.Option(
            min=1, help="time every length this many times over and keep the fastest round"
        ),
    ] = 1,
    memory: Annotated[bool, typer.Option(help="measure peak memory in a child process")] = True,
    vocab_size: Annotated[int, typer.Option(help="for --arch")] = 32,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write JSON here")] = None,
) -> None:
    """Latency (median, p90), RTF, peak memory and size of a model on a target."""
    import torch

    from speechnas.hardware import profile
    from speechnas.nn.build import build

    if (model is None) == (arch is None):
        raise _fail("give either MODEL or --arch")
    torch.set_num_threads(1)
    try:
        if arch is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                models = [build(a, vocab_size=vocab_size).eval() for a in _read_archs(arch)]
        else:
            models = [model]
        results = [
            profile(m, target, seconds=seconds or None, repeats=repeats, warmup=warmup,
                    memory=memory, rounds=rounds)
            for m in models
        ]  # fmt: skip
    except ValueError as e:
        raise _fail(str(e)) from None
    for r in results:
        console.print(r.table())
    if json_out:
        json_out.write_text(json.dumps([r.to_dict() for r in results], indent=1))


def _predictor_for(
    target: str, table: Path | None, cache: Path | None
) -> tuple[LatencyPredictor, Path]:
    from speechnas.hardware.predictor import LatencyPredictor

    if table is not None:
        return LatencyPredictor.load(table), table
    predictor = LatencyPredictor.for_target(target, cache_dir=cache)
    assert predictor.cache_path is not None
    return predictor, predictor.cache_path


def _archs_for(arch: str | None, space: str, n: int, seed: int, *, per_family: bool) -> list[Arch]:
    """The architectures of ``--arch``, else ``n`` drawn from ``space`` (seeded): uniformly, or
    with ``per_family`` each encoder family in turn (a uniform draw from speech-all is mostly
    Conformers, which have the most variants)."""
    import random

    if arch is not None:
        return _read_archs(arch)
    sp, rng = _load_space(space), random.Random(seed)
    families = next((c.values for c in sp.choices if c.name == "encoder"), ()) if per_family else ()
    return [
        sp.repair({"encoder": families[i % len(families)]}, rng) if families else sp.sample(rng)
        for i in range(n)
    ]


@latency_app.command("calibrate")
def latency_calibrate(
    target: TargetOption = "cpu-ort-1t",
    space: Annotated[str, typer.Option(help="a built-in space or a YAML file")] = "speech-all",
    samples: Annotated[int, typer.Option(help="architectures drawn from the space")] = 200,
    arch: Annotated[
        str | None, typer.Option(help="calibrate these architectures instead of the space")
    ] = None,
    vocab_size: int = 32,
    seed: int = 0,
    repeats: Annotated[int | None, typer.Option(help="timed runs per length")] = None,
    warmup: Annotated[int | None, typer.Option(help="untimed runs per length")] = None,
    passes: Annotated[
        int | None,
        typer.Option(
            help="passes over all blocks, each keeping its least median (default 2)", min=1
        ),
    ] = None,
    table: TableOption = None,
    cache: CacheOption = None,
) -> None:
    """Times the building blocks of a space's architectures on a target (reusing the table)."""

    import torch

    torch.set_num_threads(1)
    try:
        predictor, path = _predictor_for(target, table, cache)
        archs = _archs_for(arch, space, samples, seed, per_family=False)
        more = {"passes": passes} if passes else {}
        added = predictor.extend(archs, vocab_size=vocab_size, repeats=repeats, warmup=warmup,
                                 progress=True, **more)  # fmt: skip
    except ValueError as e:
        raise _fail(str(e)) from None
    predictor.save(path)
    console.print(f"{added} blocks measured, {len(predictor.fits)} in the table {path}")


@latency_app.command("correct")
def latency_correct(
    target: TargetOption = "cpu-ort-1t",
    space: Annotated[str, typer.Option(help="a built-in space or a YAML file")] = "speech-all",
    archs: Annotated[
        int, typer.Option(help="whole models to time, drawn per encoder family in turn")
    ] = 12,
    arch: Annotated[
        str | None, typer.Option(help="time these architectures instead of drawing them")
    ] = None,
    seconds: SecondsOption = [],  # noqa: B006
    vocab_size: int = 32,
    seed: int = 1,
    repeats: Annotated[int | None, typer.Option(help="timed runs per length")] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            help="rounds every model is timed in, the models in turn; its latency is "
            "the least of its round medians (default 3)",
            min=1,
        ),
    ] = None,
    table: TableOption = None,
    cache: CacheOption = None,
) -> None:
    """Times whole models and fits the predictor's correction (``measured ≈ scale · block
    sum``, with a scale per encoder family that has two models), saved with the calibration
    table, so that every later prediction, the search's included, applies it."""

    import torch

    from speechnas.hardware.evaluation import measure_archs

    torch.set_num_threads(1)
    try:
        predictor, path = _predictor_for(target, table, cache)
        fitting = _archs_for(arch, space, archs, seed, per_family=True)
        lengths = seconds or list(predictor.target.seconds)
        if predictor.extend(fitting, vocab_size=vocab_size, repeats=repeats, progress=True):
            predictor.save(path)
        rows = measure_archs(fitting, predictor.target, lengths, vocab_size=vocab_size,
                             repeats=repeats, seed=seed, progress=True,
                             **({"rounds": rounds} if rounds else {}))  # fmt: skip
        predictor.fit_correction(rows, vocab_size=vocab_size)
    except ValueError as e:
        raise _fail(str(e)) from None
    predictor.save(path)
    scale, _ = predictor.correction
    fams = ", ".join(f"{k} {v:.3f}" for k, v in predictor.family_scales.items()) or "none"
    bands = ", ".join(f"{k} ±{100 * v:.0f}%" for k, v in predictor.bands.items()) or "none"
    console.print(f"correction from {len(rows)} timings of {len(fitting)} models: scale "
                  f"{scale:.3f}; per family: {fams}; leave-one-out bands: {bands}; saved in "
                  f"{path}")  # fmt: skip


@latency_app.command("predict")
def latency_predict(
    arch: Annotated[str, typer.Option(help="an architecture (JSON) or a JSON-lines file")],
    target: TargetOption = "cpu-ort-1t",
    seconds: SecondsOption = [],  # noqa: B006
    vocab_size: int = 32,
    table: TableOption = None,
    cache: CacheOption = None,
) -> None:
    """Predicted latency (ms) of architectures; blocks missing from the table are measured."""
    import torch

    torch.set_num_threads(1)
    try:
        predictor, path = _predictor_for(target, table, cache)
        archs = _read_archs(arch)
        if predictor.extend(archs, vocab_size=vocab_size, progress=True):
            predictor.save(path)
        lengths = seconds or list(predictor.target.seconds)
        rows = [(a, [predictor.predict(a, s, vocab_size) for s in lengths]) for a in archs]
    except ValueError as e:
        raise _fail(str(e)) from None
    out = Table(title=f"predicted latency (ms) on {predictor.target.name}")
    out.add_column("arch")
    for s in lengths:
        out.add_column(f"{s:g} s", justify="right")
    out.add_column("band")
    out.add_column("confidence")
    for a, values in rows:
        c = predictor.confidence(a, lengths[0], vocab_size)
        word = "low: measure it" if c.low else "ok"
        out.add_row(a.hash(), *(f"{v:.2f}" for v in values), f"±{100 * c.band:.0f}%",
                    f"{word} ({c.basis})")  # fmt: skip
    console.print(out)


def _load_space(name: str) -> SearchSpace:
    from speechnas.space import load_space

    try:
        return load_space(name)
    except ValueError as e:
        raise _fail(str(e)) from None


SpaceOption = Annotated[str, typer.Option("--space", help="a built-in name or a YAML file")]


@space_app.command("show")
def space_show(space: SpaceOption = "speech-all") -> None:
    """The choices of a space: values, when each applies, and which are per layer."""
    from speechnas.space import describe

    sp = _load_space(space)
    table = Table(title=f"search space {sp.name}: {sp.count():,} architectures")
    table.add_column("choice", no_wrap=True)
    for col in ("values", "when", "per layer", "about"):
        table.add_column(col)
    for row in describe(sp):
        table.add_row(
            row["name"],
            ", ".join(str(v) for v in row["values"]),
            row["condition"],
            row["per_layer"],
            row["doc"],
        )
    console.print(table)


@space_app.command("count")
def space_count(space: SpaceOption = "speech-all") -> None:
    """The exact number of valid architectures, counted over the conditional structure."""
    print(_load_space(space).count())


@space_app.command("sample")
def space_sample(
    space: SpaceOption = "speech-all",
    n: Annotated[int, typer.Option(help="how many")] = 3,
    seed: int = 0,
    vocab_size: Annotated[int, typer.Option(help="for the parameter count")] = 32,
) -> None:
    """Uniformly sampled architectures as JSON lines, each with its parameter count."""
    import random

    from speechnas.nn.build import build

    sp = _load_space(space)
    rng = random.Random(seed)
    for _ in range(n):
        arch = sp.sample(rng)
        params = build(arch, vocab_size=vocab_size).num_parameters()
        print(json.dumps({"key": arch.hash(), "parameters": params, "arch": arch.to_json()}))


def _numbers(text: str, flag: str, kind: type = float) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise _fail(f"{flag} {text!r}: expected comma-separated {kind.__name__}s") from None


@compress_app.command("darts")
def compress_darts(
    checkpoint: Annotated[Path, typer.Option(help="a trained fp32 checkpoint folder")],
    output_dir: Annotated[Path, typer.Option(help="receives model/, darts.json, darts.png")],
    eta: Annotated[list[float] | None, typer.Option(help="size penalty; repeatable")] = None,
    steps: Annotated[int | None, typer.Option(help="step budget of each stage")] = None,
    weight_steps: Annotated[int | None, typer.Option(help="stage 1 (weights) steps")] = None,
    arch_steps: Annotated[int | None, typer.Option(help="stage 2 (architecture) steps")] = None,
    widths: Annotated[str, typer.Option(help="FFN width fractions")] = "1,0.75,0.5,0.25",
    ranks: Annotated[str, typer.Option(help="low-rank bottlenecks, 0 = full")] = "0,96,64,32",
    softmax: Annotated[bool, typer.Option("--softmax", help="plain softmax, no Gumbel")] = False,
    joint: Annotated[bool, typer.Option("--joint", help="alternate weight/arch steps")] = False,
    semi_orthogonal: Annotated[bool, typer.Option("--semi-orthogonal")] = False,
    seed: int = 0,
    train: Annotated[str | None, typer.Option(help="overrides the checkpoint's train data")] = None,
    dev: Annotated[str | None, typer.Option(help="overrides the checkpoint's dev data")] = None,
    score: Annotated[bool, typer.Option(help="score dev and test sets after extraction")] = True,
) -> None:
    """Differentiable compression of a trained model's FFN widths and ranks: one extracted
    model per --eta, scored before any fine-tuning (fine-tune it with train's init_from)."""
    import dataclasses

    from speechnas.compress.darts import darts_front, data_of
    from speechnas.compress.darts_config import DartsConfig
    from speechnas.data.manifest import ManifestError

    budget = {"weight_steps": weight_steps or steps, "arch_steps": arch_steps or steps}
    try:
        base = DartsConfig(
            widths=_numbers(widths, "--widths"), ranks=_numbers(ranks, "--ranks", int),
            gumbel=not softmax, schedule="joint" if joint else "pipelined",
            semi_orthogonal=semi_orthogonal, seed=seed,
        ).replace(**{k: v for k, v in budget.items() if v is not None})  # fmt: skip
        data = None
        if train or dev:
            d = data_of(checkpoint)
            data = dataclasses.replace(d, train=train or d.train, dev=dev or d.dev)
        configs = [base.replace(eta=e) for e in eta or [base.eta]]
        results = darts_front(checkpoint, output_dir, configs, data=data,
                              score=None if score else ())  # fmt: skip
    except (ValueError, ManifestError) as e:
        raise _fail(str(e)) from None
    table = Table(title=f"{checkpoint} compressed (before fine-tuning)")
    sets = [f"{s} WER %" for s in results[0].scores]
    for col in ("eta", "ffn_dim", "ffn_lowrank", "params", "FFN share", *sets):
        table.add_column(col, justify="left" if col in ("ffn_dim", "ffn_lowrank") else "right")
    for r in results:
        p = r.params
        table.add_row(
            f"{r.config['eta']:g}", ",".join(str(c["ffn_dim"]) for c in r.choice),
            ",".join(str(c["ffn_lowrank"]) for c in r.choice),
            f"{p['total_before']:,} → {p['total_after']:,}", f"{100 * p['ffn_ratio']:.1f}%",
            *[f"{100 * v['wer']:.2f}" for v in r.scores.values()],
        )  # fmt: skip
    console.print(table)
    for r in results:
        console.print(f"eta {r.config['eta']:g}: {r.output_dir}/model", soft_wrap=True)


@compress_app.command("quantize")
def compress_quantize(
    checkpoint: Annotated[Path, typer.Option(help="a trained float checkpoint folder")],
    output_dir: Annotated[Path, typer.Option(help="folder for the quantized checkpoint")],
    average_bits: Annotated[
        float | None, typer.Option(help="size budget: the size at this mean bit width")
    ] = None,
    budget_kib: Annotated[float | None, typer.Option(help="size budget in KiB")] = None,
    uniform: Annotated[int | None, typer.Option(help="every sub-module at these bits")] = None,
    steps: Annotated[int, typer.Option(help="QAT steps")] = 400,
    lr: Annotated[float, typer.Option(help="QAT learning rate")] = 5e-4,
    utterances: Annotated[int, typer.Option(help="dev utterances for KL sensitivity")] = 60,
    seed: int = 0,
) -> None:
    """Mixed-precision quantization: KL sensitivity per sub-module and bit width, the least
    sensitive allocation under the size budget (dynamic programming), then QAT."""
    from speechnas.compress.mixed import mixed_precision

    try:
        rec = mixed_precision(
            checkpoint, output_dir, average_bits=average_bits, uniform_bits=uniform,
            budget_bytes=None if budget_kib is None else int(budget_kib * 1024),
            steps=steps, lr=lr, utterances=utterances, seed=seed,
        )  # fmt: skip
    except ValueError as e:
        raise _fail(str(e)) from None
    table = Table(title=f"{checkpoint} → {rec['checkpoint']}")
    for col in ("KiB", "fp32 KiB", "ratio", "mean bits", *(f"{t} WER %" for t in rec["test"])):
        table.add_column(col, justify="right")
    table.add_row(
        f"{rec['bytes'] / 1024:.0f}", f"{rec['fp32_bytes'] / 1024:.0f}", f"{rec['ratio']:.1f}x",
        f"{rec['average_bits']:.2f}", *(f"{100 * v['wer']:.2f}" for v in rec["test"].values()),
    )  # fmt: skip
    console.print(table)
    console.print(
        f"bits per sub-module: {output_dir / 'allocation.png'}; compare with the float model: "
        f"speechnas compare {checkpoint} {rec['checkpoint']} --manifest TEST"
    )
