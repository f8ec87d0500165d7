"""Compression of a trained fp32 model: uniform and KL-sensitivity mixed-precision quantization
with QAT (and, with ``--darts``, differentiable architecture compression first), each tested
for "lossless" against the fp32 model with MAPSSWE and a paired bootstrap.

Rows: PTQ (weights quantized, no training) and QAT at uniform 8 and 4 bits; KL mixed precision
(dynamic programming under a size budget) with QAT at budgets given in average bits
(``--kl-bits``, 4 = the uniform 4-bit size); with ``--darts``, the DARTS-compressed model alone
(fine-tuned) and followed by KL mixed precision with QAT. Every row: model bytes (packed
weights + per-channel scales + float parameters), compression ratio to fp32, WER on every test
set and the p-values of the difference to fp32. "Lossless" on a test set: not significantly
worse (MAPSSWE p >= 0.05, or no worse at all). The headline is the largest lossless ratio on
``test``. Writes ``compress.json``, ``allocations.png`` and prints a table. Trainings are step
budgets and are reused on a rerun.

    .venv/bin/python bench/compress.py --baseline runs/compress/baseline/best
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from speechnas.compress.allocate import allocate, uniform_allocation
from speechnas.compress.mixed import average_bits_budget, float_bytes, sensitivity_of
from speechnas.compress.plots import plot_allocations
from speechnas.compress.qat import checkpoint_config, qat
from speechnas.data.dataset import SpeechDataset
from speechnas.data.loading import load_utterances
from speechnas.evaluate.decode import evaluate_dataset, prepare_batches
from speechnas.evaluate.significance import compare_systems
from speechnas.hardware.cpu import missing_features
from speechnas.nn.quant import apply_bits, remove_bits, weight_bytes
from speechnas.nn.spec import decode
from speechnas.train.checkpoint import LoadedModel, load_model
from speechnas.versions import versions

log = logging.getLogger("bench.compress")


class Scorer:
    """Test sets prepared once (features extracted), decoded by many models."""

    def __init__(self, loaded: LoadedModel, tests: dict[str, str]) -> None:
        self.sets = {}
        for name, manifest in tests.items():
            ds = SpeechDataset(
                load_utterances(manifest, skip_invalid=False), loaded.tokenizer, loaded.features
            )
            self.sets[name] = (ds, prepare_batches(ds))

    def __call__(
        self, model: torch.nn.Module, cache: Path | None = None
    ) -> dict[str, dict[str, Any]]:
        """WER, references and hypotheses per test set; read from ``cache`` (a JSON file) when
        it exists, written there otherwise, so a rerun only decodes new rows."""
        if cache is not None and cache.is_file():
            return json.loads(cache.read_text())
        out = {}
        for name, (ds, batches) in self.sets.items():
            ev = evaluate_dataset(model, ds, batches=batches)  # type: ignore[arg-type]
            out[name] = {"wer": ev.rates.wer, "refs": ev.references, "hyps": ev.hypotheses}
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(out))
        return out


def test_sets(checkpoint: Path) -> dict[str, str]:
    """The checkpoint's test sets, plus the held-out-engine set of its corpus when present."""
    cfg = checkpoint_config(checkpoint)
    tests = dict(cfg.data.test)
    if "test" in tests and "test-unseen-engine" not in tests:
        unseen = Path(tests["test"]).with_name("test-unseen-engine.jsonl")
        if unseen.is_file():
            tests["test-unseen-engine"] = str(unseen)
    return tests


def deploy(
    out: Path, loaded: LoadedModel, chosen: dict[str, Any] | None, tests: dict[str, str],
    rounds: int,
) -> dict[str, Any]:  # fmt: skip
    """The fp32 model and ``chosen`` (a QAT row) exported, transcribed without PyTorch on every
    test set (each compared with the fp32 export's hypotheses: MAPSSWE and bootstrap), and timed
    at 5 s on the ONNX Runtime targets (and the fp32 model on the int8, QDQ and bf16 paths) in
    ``rounds`` interleaved rounds; ratios to fp32 ``cpu-ort-1t`` per round.

    The chosen model is written three ways (``speechnas.export.lowbit``): ``exact`` and
    ``fast`` keep its low-bit storage, ``int8`` runs every linear on the int8 kernels under the
    ``matmul`` attention implementation. The fp32 model is also exported under ``matmul``, so
    the part of the gain that is the graph, not the precision, is shown on its own."""
    from speechnas.evaluate.significance import compare_systems
    from speechnas.export.lowbit import export_lowbit
    from speechnas.export.onnx import export_model
    from speechnas.export.transcribe import Transcriber, score_manifest
    from speechnas.hardware.profiler import profile
    from speechnas.nn.build import with_attention_impl
    from speechnas.nn.cost import analytic_macs

    def onnx_of(model: torch.nn.Module, folder: str) -> Path:
        return export_model(model, out / folder, tokenizer=loaded.tokenizer,
                            features=loaded.features).files["model"]  # fmt: skip

    fp32 = onnx_of(loaded.model, "onnx-fp32")
    files: dict[str, Path] = {"fp32": fp32}
    attention = decode(loaded.model.arch).attention_based
    if attention:
        files["fp32, matmul attention"] = onnx_of(
            with_attention_impl(loaded.model, "matmul"), "onnx-fp32-matmul"
        )
    info: dict[str, Any] = {n: {"file_bytes": p.stat().st_size} for n, p in files.items()}
    if chosen is not None:
        q = load_model(chosen["checkpoint"])
        for kernels in ("exact", "fast", "int8"):
            impl = "matmul" if kernels == "int8" and attention else None
            r = export_lowbit(
                q.model, q.meta["bits"], out / f"onnx-{kernels}" / "model.onnx",
                kernels=kernels, tokenizer=q.tokenizer, features=q.features, attention_impl=impl,
                reduce_range=bool(missing_features("int8-static")),  # this CPU's int8 kernels
            )  # fmt: skip
            name = f"{chosen['label']} ({kernels}{', matmul attention' if impl else ''})"
            files[name] = r.path
            info[name] = r.summary()
    hyps: dict[str, dict[str, Any]] = {}
    for name, path in files.items():
        tr = Transcriber(path)
        hyps[name] = {t: score_manifest(tr, m) for t, m in tests.items()}
        info[name]["wer"] = hyps[name]["test"]["wer"]
        info[name]["tests"] = {}
        for t, sc in hyps[name].items():
            row = {"wer": sc["wer"], "rtf": sc["rtf"]}
            if name != "fp32":
                cmp = compare_systems(sc["references"], sc["hypotheses"],
                                      hyps["fp32"][t]["hypotheses"], samples=5000)  # fmt: skip
                row.update(delta_vs_fp32=cmp["delta"], p_mapsswe=cmp["p_mapsswe"],
                           p_bootstrap=cmp["p_bootstrap"])  # fmt: skip
            info[name]["tests"][t] = row
    jobs = [("fp32", fp32, "cpu-ort-1t"), ("fp32 on int8 dynamic", fp32, "cpu-ort-int8-1t"),
            ("fp32 on int8 static QDQ", fp32, "cpu-ort-qdq-1t"),
            ("fp32 on torch bf16", loaded.model, "cpu-torch-bf16-1t")]  # fmt: skip
    jobs += [(n, p, "cpu-ort-1t") for n, p in files.items() if n != "fp32"]
    times: dict[str, list[float]] = {n: [] for n, _, _ in jobs}
    for _ in range(rounds):
        for name, model, target in jobs:
            prof = profile(model, target, seconds=[5.0], memory=False)
            times[name].append(prof.latency_ms(5.0))
    macs = analytic_macs(loaded.model.arch, seconds=5.0, vocab_size=loaded.model.vocab_size)
    chosen_macs = macs
    if chosen is not None:  # a DARTS-compressed model computes less
        arch = load_model(chosen["checkpoint"]).model.arch
        chosen_macs = analytic_macs(arch, seconds=5.0, vocab_size=loaded.model.vocab_size)
    latency = {}
    for name, _, target in jobs:
        t = sorted(times[name])
        ratios = sorted(a / b for a, b in zip(times[name], times["fp32"], strict=True))
        latency[name] = {
            "target": target, "median_ms": t[len(t) // 2], "min_ms": t[0], "max_ms": t[-1],
            "ratio_to_fp32": ratios[len(ratios) // 2], "ratio_min": ratios[0],
            "ratio_max": ratios[-1],
            "gmac_per_s": (macs if name.startswith("fp32") else chosen_macs).total
            / t[len(t) // 2] / 1e6,
        }  # fmt: skip
    return {"files": info, "latency": latency, "macs_5s": macs.total,
            "chosen_macs_5s": chosen_macs.total, "rounds": rounds}  # fmt: skip


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in label.lower())


def darts_finetuned(run: Path, folder: Path, steps: int) -> Path:
    """The model of a DARTS run (``speechnas compress darts``) fine-tuned for ``steps``."""
    from speechnas.compress.darts import DartsResult, finetune_config
    from speechnas.train.trainer import Trainer

    best = folder / "best"
    if not (folder / "result.json").is_file():
        result = DartsResult(**json.loads((run / "darts.json").read_text()))
        Trainer.from_config(finetune_config(result, folder, steps=steps), show_progress=False).fit()
    return best


def row(
    label: str, kind: str, model: torch.nn.Module, bits: dict[str, int], fp32_bytes: int,
    scores: dict[str, dict[str, Any]], ref: dict[str, dict[str, Any]], numel: dict[str, int],
    extra: dict[str, Any] | None = None, control: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    size = weight_bytes(model, {k: v for k, v in bits.items() if k in numel})
    quant = {m: b for m, b in bits.items() if m in numel}
    avg = (
        sum(numel[m] * b for m, b in quant.items()) / sum(numel[m] for m in quant) if quant else 32
    )
    tests = {}
    for name, sc in scores.items():
        cmp = compare_systems(sc["refs"], sc["hyps"], ref[name]["hyps"], samples=5000)
        worse = cmp["delta"] > 0 and cmp["p_mapsswe"] < 0.05
        tests[name] = {
            "wer": sc["wer"], "delta": cmp["delta"], "p_mapsswe": cmp["p_mapsswe"],
            "p_bootstrap": cmp["p_bootstrap"], "lossless": not worse,
        }  # fmt: skip
        if control is not None:  # against fp32 fine-tuned for the same steps
            c = compare_systems(sc["refs"], sc["hyps"], control[name]["hyps"], samples=5000)
            tests[name].update(
                delta_vs_control=c["delta"], p_vs_control=c["p_mapsswe"],
                lossless_vs_control=not (c["delta"] > 0 and c["p_mapsswe"] < 0.05),
            )  # fmt: skip
    return {"label": label, "kind": kind, "bytes": size, "ratio": fp32_bytes / size,
            "average_bits": avg, "tests": tests, "bits": bits, **(extra or {})}  # fmt: skip


def table(rows: list[dict[str, Any]], tests: list[str]) -> Table:
    t = Table(
        title="compression against the fp32 baseline (p: MAPSSWE; * significantly worse "
        "than fp32, + than fp32 fine-tuned as long)"
    )
    for col in ("row", "KiB", "ratio", "avg bits", *(f"{n} WER %" for n in tests)):
        t.add_column(col, justify="left" if col == "row" else "right")
    for r in rows:
        cells = []
        for n in tests:
            x = r["tests"][n]
            mark = ("" if x["lossless"] else "*") + (
                "" if x.get("lossless_vs_control", True) else "+"
            )
            cells.append(f"{100 * x['wer']:.2f} (p {x['p_mapsswe']:.2f}){mark}")
        t.add_row(r["label"], f"{r['bytes'] / 1024:.0f}", f"{r['ratio']:.1f}x",
                  f"{r['average_bits']:.2f}", *cells)  # fmt: skip
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="runs/compress/baseline/best", help="fp32 checkpoint")
    ap.add_argument("--out", default="runs/compress/bench")
    ap.add_argument("--qat-steps", type=int, default=400)
    ap.add_argument("--qat-lr", type=float, default=5e-4)
    ap.add_argument("--kl-bits", default="4,3,2.5", help="KL budgets in average bits")
    ap.add_argument("--uniform", default="8,4", help="uniform bit widths")
    ap.add_argument("--dev-utts", type=int, default=60, help="held-out utterances for KL")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    ap.add_argument(
        "--darts", default="", help="DARTS run folders (compress darts), comma-separated"
    )
    ap.add_argument("--darts-kl-bits", default="3,2.5", help="KL budgets for the DARTS models")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    baseline = Path(args.baseline)
    loaded = load_model(baseline)
    tests = test_sets(baseline)
    scorer = Scorer(loaded, tests)
    fp32 = scorer(loaded.model, out / "scores-fp32.json")
    fp32_bytes = weight_bytes(loaded.model)
    s = sensitivity_of(baseline, utterances=args.dev_utts, cache=out / "sensitivity.json")
    fixed = float_bytes(loaded, s)
    rows = [row("fp32", "baseline", loaded.model, {}, fp32_bytes, fp32, fp32, s.numel)]
    # Control: the fp32 model fine-tuned with the QAT recipe and steps, so that a quantized
    # model is also compared with what the extra training alone gives.
    Plan = tuple[str, str, Path, dict[str, int], dict[str, Any], dict[str, int]]
    plans: list[Plan] = [
        (f"fp32 + {args.qat_steps} steps (control)", "control", baseline, {}, {}, s.numel)
    ]
    control = None
    for b in (int(x) for x in args.uniform.split(",")):
        bits = uniform_allocation(s, b, fixed_bytes=fixed).bits
        apply_bits(loaded.model, bits)
        ptq = scorer(loaded.model, out / f"scores-ptq-{b}.json")
        rows.append(row(f"PTQ uniform {b}-bit", "ptq", loaded.model, bits, fp32_bytes, ptq,
                        fp32, s.numel))  # fmt: skip
        remove_bits(loaded.model)
        plans.append((f"QAT uniform {b}-bit", "qat-uniform", baseline, bits, {}, s.numel))
    for avg in (float(x) for x in args.kl_bits.split(",")):
        budget = average_bits_budget(s, avg, fixed)
        alloc = allocate(s, budget, fixed_bytes=fixed)
        extra = {"budget_bytes": budget, "sensitivity": alloc.sensitivity}
        plans.append((f"QAT KL mixed {avg:g}-bit budget", "qat-kl", baseline, alloc.bits, extra,
                      s.numel))  # fmt: skip
    darts_models: list[tuple[str, Path, Any]] = []
    darts_steps = 0  # the extra training a DARTS + QAT model had: stage 1, fine-tuning, QAT
    for run in [Path(x) for x in args.darts.split(",") if x]:
        name = f"DARTS {run.name}"
        tuned = darts_finetuned(run, out / _slug(name), args.qat_steps)
        ds = sensitivity_of(tuned, utterances=args.dev_utts, cache=tuned.parent / "sens.json")
        darts_models.append((f"{name} + {args.qat_steps} steps", tuned, ds))
        stage1 = json.loads((run / "darts.json").read_text())["config"]["weight_steps"]
        darts_steps = max(darts_steps, stage1 + 2 * args.qat_steps)
        dfixed = float_bytes(load_model(tuned), ds)
        for avg in (float(x) for x in args.darts_kl_bits.split(",") if x):
            alloc = allocate(ds, average_bits_budget(ds, avg, dfixed), fixed_bytes=dfixed)
            plans.append((f"{name} + QAT KL {avg:g}-bit", "darts-kl", tuned, alloc.bits,
                          {"sensitivity": alloc.sensitivity}, ds.numel))  # fmt: skip
    if darts_steps:  # a control with as much extra training as the DARTS rows had
        plans.insert(1, (f"fp32 + {darts_steps} steps (DARTS control)", "control-darts", baseline,
                         {}, {"steps": darts_steps}, s.numel))  # fmt: skip
    darts_control = None
    for label, kind, source, bits, extra, numel in plans:
        folder = out / _slug(label)
        start = time.perf_counter()
        steps = extra.get("steps", args.qat_steps)
        res = qat(source, bits, folder, steps=steps, lr=args.qat_lr, seed=args.seed,
                  threads=args.threads, show_progress=False)  # fmt: skip
        q = load_model(folder / "best")
        extra = {**extra, "qat_steps": res.steps, "qat_seconds": time.perf_counter() - start,
                 "checkpoint": str(folder / "best")}  # fmt: skip
        scores = scorer(q.model, folder / "scores.json")
        against = darts_control if kind == "darts-kl" and darts_control else control
        rows.append(row(label, kind, q.model, bits, fp32_bytes, scores, fp32, numel, extra,
                        against))  # fmt: skip
        if kind == "control":
            control = scores
        elif kind == "control-darts":
            darts_control = scores
        log.info("%s: ratio %.1f, test WER %.2f%%", label, rows[-1]["ratio"],
                 100 * rows[-1]["tests"]["test"]["wer"])  # fmt: skip
    for label, tuned, ds in darts_models:  # scored once the control exists
        model = load_model(tuned).model
        rows.append(row(label, "darts", model, {}, fp32_bytes,
                        scorer(model, tuned.parent / "scores.json"), fp32, ds.numel,
                        {"checkpoint": str(tuned)}, darts_control or control))  # fmt: skip
    compressed = [r for r in rows if r["kind"] not in ("baseline", "control", "control-darts")]
    lossless = [r for r in compressed if r["tests"]["test"]["lossless"]]
    headline = max(lossless, key=lambda r: r["ratio"]) if lossless else None
    strict = [r for r in lossless if r["tests"]["test"].get("lossless_vs_control", True)]
    strict_headline = max(strict, key=lambda r: r["ratio"]) if strict else None
    same = [r for r in compressed if r["bits"] and set(r["bits"]) == set(s.numel)]
    plot_allocations({r["label"]: r["bits"] for r in same}, out / "allocations.png")
    for r in compressed:
        if r["bits"] and r not in same:  # another architecture: its own figure
            plot_allocations({r["label"]: r["bits"]}, out / f"allocations-{_slug(r['label'])}.png")
    trained_lossless = [r for r in lossless if "checkpoint" in r and r["bits"]]
    chosen = max(trained_lossless, key=lambda r: r["ratio"]) if trained_lossless else None
    deployed = deploy(out, loaded, chosen, tests, args.rounds)
    payload = {
        "deploy": deployed,
        "baseline": str(baseline), "fp32_bytes": fp32_bytes, "tests": list(tests),
        "headline_vs_control": None if strict_headline is None else {
            "label": strict_headline["label"], "ratio": strict_headline["ratio"],
        },
        "headline": None if headline is None else {
            "label": headline["label"], "ratio": headline["ratio"],
            "test_wer": headline["tests"]["test"]["wer"],
            "p_mapsswe": headline["tests"]["test"]["p_mapsswe"],
        },
        "rows": [{k: v for k, v in r.items() if k != "bits"} for r in rows],
        "allocations": {r["label"]: r["bits"] for r in rows},
        "args": vars(args), "versions": versions(),
    }  # fmt: skip
    (out / "compress.json").write_text(json.dumps(payload, indent=1))
    print(json.dumps({k: payload[k] for k in ("headline", "headline_vs_control", "fp32_bytes")},
                     indent=1))  # fmt: skip
    console = Console(width=200)
    console.print(table(rows, list(tests)))
    lat = Table(title="deployed: 5-s utterance, one thread, ratio to fp32 cpu-ort-1t per round")
    for col in ("model / path", "target", "ms", "ratio [min-max]", "GMAC/s", "WER %", "KiB"):
        lat.add_column(col, justify="left" if col in ("model / path", "target") else "right")
    for name, x in deployed["latency"].items():
        f = deployed["files"].get(name, {})
        lat.add_row(name, x["target"], f"{x['median_ms']:.2f}",
                    f"{x['ratio_to_fp32']:.2f} [{x['ratio_min']:.2f}-{x['ratio_max']:.2f}]",
                    f"{x['gmac_per_s']:.1f}", f"{100 * f['wer']:.2f}" if f else "",
                    f"{f['file_bytes'] / 1024:.0f}" if f else "")  # fmt: skip
    console.print(lat)
    dep = Table(title="deployed, transcribed without PyTorch: WER % on every test set (difference "
                "to the fp32 export in points, MAPSSWE p)")  # fmt: skip
    dep.add_column("model / path")
    for t in tests:
        dep.add_column(t, justify="right")
    for name, f in deployed["files"].items():
        cells = []
        for t in tests:
            x = f["tests"][t]
            p = (f" ({100 * x['delta_vs_fp32']:+.2f}, p {x['p_mapsswe']:.2g})"
                 if "p_mapsswe" in x else "")  # fmt: skip
            cells.append(f"{100 * x['wer']:.2f}{p}")
        dep.add_row(name, *cells)
    console.print(dep)


if __name__ == "__main__":
    main()
