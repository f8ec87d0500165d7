"""The ``speechnas`` command: a thin layer over the library."""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

if TYPE_CHECKING:
    from speechnas.space import SearchSpace

app = typer.Typer(
    help="Hardware-aware architecture search for speech models.", no_args_is_help=True
)
data_app = typer.Typer(help="Corpora: the built-in synthetic one, and checks of your own.")
app.add_typer(data_app, name="data")
space_app = typer.Typer(help="Search spaces: list their choices, count and sample them.")
app.add_typer(space_app, name="space")
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
) -> None:
    """Generate (or reuse) the built-in synthetic corpus: FLAC audio and JSONL manifests."""
    from speechnas.data.synth.corpus import CorpusConfig, build_corpus

    try:
        defaults = CorpusConfig().sizes
        cfg = CorpusConfig(
            task=task, lang=lang, seed=seed, sizes={**defaults, **_parse_sizes(size)}
        )
        info = build_corpus(cfg, out, workers=workers, force=force)
    except ValueError as e:
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


def _results_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    for col in ("test set", "utterances", "WER %", "CER %", "SER %", "RTF"):
        table.add_column(col, justify="right" if col != "test set" else "left")
    for name, r in rows.items():
        table.add_row(
            name,
            str(r["utterances"]),
            f"{100 * r['wer']:.2f}",
            f"{100 * r['cer']:.2f}",
            f"{100 * r['sentence_errors'] / r['utterances']:.1f}",
            f"{r['rtf']:.4f}",
        )
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
        result = Trainer(cfg).fit(resume=resume)
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
    from speechnas.data.dataset import SpeechDataset
    from speechnas.data.manifest import ManifestError
    from speechnas.evaluate.decode import evaluate_dataset
    from speechnas.train.checkpoint import load_model
    from speechnas.train.trainer import load_utterances

    try:
        loaded = load_model(checkpoint)
        rows = {}
        for m in manifest:
            ds = SpeechDataset(
                load_utterances(m, skip_invalid=skip_invalid), loaded.tokenizer, loaded.features
            )
            ev = evaluate_dataset(loaded.model, ds)
            rows[m] = {**ev.rates.to_dict(), "rtf": ev.rtf}
    except (ValueError, ManifestError) as e:
        raise _fail(str(e)) from None
    console.print(_results_table(str(checkpoint), rows))
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


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
    data = dataclasses.replace(
        cfg.data,
        train=str(m["train"]),
        dev=str(m["dev"]),
        test={k: str(v) for k, v in m.items() if k.startswith("test")},
    )
    cfg = cfg.replace(
        data=data,
        output_dir=output_dir,
        budget=dataclasses.replace(cfg.budget, max_minutes=minutes),
    )
    result = Trainer(cfg).fit()
    console.print(_results_table(f"Conformer-CTC baseline after {minutes:g} min", result.test))
    console.print(
        f"{result.parameters:,} parameters, {result.throughput:.0f} s audio/s; "
        f"model in {result.output_dir / 'best'}, details in {result.output_dir / 'result.json'}"
    )


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
