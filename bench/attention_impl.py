"""Attention implementations measured: latency of each ``attention_impl`` / ``qkv`` choice as a
ratio to today's (``sdpa``, ``packed``), on ONNX Runtime and PyTorch, one thread.

For every architecture, one set of random weights runs under every implementation (they share
their parameters), each exported and run the way ``speechnas profile`` runs a model
(``hardware.program.load_program`` and the target's backend and clock), on the same input at
every length. Rounds interleave the implementations (the order rotates each round) and each
round's medians are divided by that round's default, so that drift of a shared machine cancels;
a ratio is reported as the median over rounds with its range. ``--ops`` adds ONNX Runtime's
per-op profile of the first architecture at one length: milliseconds per op type and
implementation, and how much of it is outside MatMul/Gemm.

    .venv/bin/python bench/attention_impl.py --rounds 7 --out runs/bench-attention
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from speechnas.hardware.backends import backend_for_target
from speechnas.hardware.profiler import runtime_versions
from speechnas.hardware.program import load_program, random_input, utterance_length
from speechnas.hardware.target import load_target
from speechnas.nn.build import build
from speechnas.nn.presets import preset
from speechnas.space import Arch

VARIANTS: dict[str, dict[str, str]] = {
    "sdpa": {},  # today's: the reference of every ratio
    "matmul": {"attention_impl": "matmul"},
    "einsum": {"attention_impl": "einsum"},
    "split_heads": {"attention_impl": "split_heads"},
    "sdpa+qkv_split": {"qkv": "split"},
    "split_heads+qkv_split": {"attention_impl": "split_heads", "qkv": "split"},
}
TRANSFORMER = {"frontend": "fbank80", "encoder": "transformer", "d_model": 144, "layers": 6,
               "heads": 4, "attention": "abs", "ffn_dim": 576, "decoder": "ctc"}  # fmt: skip


def architectures() -> dict[str, Arch]:
    return {
        "small": preset("small"),
        "base": preset("base"),
        "small-rel": preset("small", attention="rel"),
        "transformer": Arch(TRANSFORMER),
    }


def _models(arch: Arch) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    ref = build(arch, vocab_size=32).eval()
    out = {}
    for name, change in VARIANTS.items():
        model = build(Arch({**arch, **change}), vocab_size=32).eval()
        model.load_state_dict(ref.state_dict())
        out[name] = model
    return out


def measure(
    archs: dict[str, Arch], targets: list[str], seconds: list[float], rounds: int, reps: int,
    work: Path,
) -> dict[str, Any]:  # fmt: skip
    """{arch: {target: {seconds: {variant: {median, min, max, ms}}}}}: ratios to "sdpa"."""
    report: dict[str, Any] = {}
    names = list(VARIANTS)
    for arch_name, arch in archs.items():
        models = _models(arch)
        report[arch_name] = {}
        for target_name in targets:
            target = load_target(target_name)
            backend = backend_for_target(target)
            programs = {
                v: load_program(m, target, work / arch_name / target_name / v)
                for v, m in models.items()
            }
            rng = np.random.default_rng(0)
            first = programs["sdpa"]
            feeds = {
                s: first.feeds(
                    random_input(first.features, utterance_length(first.features, s), rng)
                )
                for s in seconds
            }
            times = {s: {v: list[float]() for v in names} for s in seconds}
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for s in seconds:
                    for v in order:
                        p = programs[v]
                        t = backend.time(p.parts[p.first], [feeds[s]], warmup=1, repeats=reps,
                                         clock=target.clock)  # fmt: skip
                        times[s][v].append(float(np.median(t)))
            per_s = {}
            for s in seconds:
                ref = np.array(times[s]["sdpa"])
                per_s[f"{s:g}"] = {
                    v: _ratio(np.array(times[s][v]) / ref, np.array(times[s][v])) for v in names
                }
            report[arch_name][target_name] = per_s
            print(f"{arch_name} {target_name}: done", flush=True)
    return report


def _ratio(ratios: np.ndarray, seconds: np.ndarray) -> dict[str, float]:
    return {
        "median": float(np.median(ratios)),
        "min": float(ratios.min()),
        "max": float(ratios.max()),
        "ms": float(np.median(seconds) * 1e3),
    }


def op_profile(arch: Arch, seconds: float, runs: int, work: Path) -> dict[str, Any]:
    """ONNX Runtime's per-op profile (one thread) of every implementation of ``arch``: ms per
    run by op type (mean over ``runs`` runs, the implementations' runs interleaved), and the
    time outside the matrix products (MatMul, FusedMatMul, Gemm, Einsum)."""
    import onnxruntime as ort

    target = load_target("cpu-ort-1t")
    sessions: dict[str, Any] = {}
    feeds: dict[str, Any] = {}
    for v, model in _models(arch).items():
        program = load_program(model, target, work / "ops" / v)
        path = program.parts[program.first]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(work / "ops" / f"{v}-profile")
        sessions[v] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        n = utterance_length(program.features, seconds)
        feeds[v] = program.feeds(random_input(program.features, n, np.random.default_rng(0)))
    for _ in range(runs):
        for v, session in sessions.items():
            session.run(None, feeds[v])
    out: dict[str, Any] = {}
    for v, session in sessions.items():
        events = json.loads(Path(session.end_profiling()).read_text())
        by_op: collections.Counter[str] = collections.Counter()
        nodes: collections.Counter[str] = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                by_op[e["args"]["op_name"]] += e["dur"]
                nodes[e["args"]["op_name"]] += 1
        total = sum(by_op.values())
        matmul = sum(us for op, us in by_op.items() if "MatMul" in op or op in ("Gemm", "Einsum"))
        out[v] = {
            "total_ms": total / runs / 1e3,
            "outside_matmul_ms": (total - matmul) / runs / 1e3,
            "ops": {op: {"ms": us / runs / 1e3, "nodes": nodes[op] // runs}
                    for op, us in by_op.most_common()},
        }  # fmt: skip
    return out


def _table(report: dict[str, Any], seconds: list[float]) -> Table:
    table = Table(title="latency / today's (sdpa, packed): median over rounds [min-max]")
    for col in ("arch", "target", "implementation", *(f"{s:g} s" for s in seconds)):
        table.add_column(col, justify="left" if col in ("arch", "target", "implementation")
                         else "right")  # fmt: skip
    for arch_name, per_target in report.items():
        for target_name, per_s in per_target.items():
            for v in VARIANTS:
                cells = []
                for s in seconds:
                    r = per_s[f"{s:g}"][v]
                    cells.append(
                        f"{r['ms']:.1f} ms" if v == "sdpa"
                        else f"{r['median']:.3f} [{r['min']:.2f}-{r['max']:.2f}]"
                    )  # fmt: skip
                table.add_row(arch_name, target_name, v, *cells)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(architectures()))
    ap.add_argument("--targets", default="cpu-ort-1t,cpu-torch-1t")
    ap.add_argument("--seconds", default="2,5,10")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per round (median)")
    ap.add_argument("--ops", action="store_true", help="add the per-op profile (ONNX Runtime)")
    ap.add_argument("--ops-seconds", type=float, default=5.0)
    ap.add_argument("--out", default="runs/bench-attention")
    args = ap.parse_args()
    torch.set_num_threads(1)
    known = architectures()
    archs = {a: known[a] for a in args.archs.split(",")}
    seconds = [float(s) for s in args.seconds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"variants": VARIANTS, "rounds": args.rounds,
                              "repeats": args.repeats, "ratios": {},
                              "versions": runtime_versions()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, arch in archs.items():  # one architecture at a time, saved as it ends
            result["ratios"].update(measure({name: arch}, args.targets.split(","), seconds,
                                            args.rounds, args.repeats, work))  # fmt: skip
            (out / "report.json").write_text(json.dumps(result, indent=1))
        if args.ops:
            first = next(iter(archs))
            ops = op_profile(archs[first], args.ops_seconds, 60, work)
            result["ops"] = {"arch": first, "seconds": args.ops_seconds, "variants": ops}
    (out / "report.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    console = Console(width=170)
    console.print(_table(result["ratios"], seconds))
    if args.ops:
        ops = result["ops"]["variants"]
        t = Table(title=f"{result['ops']['arch']} at {args.ops_seconds:g} s, ONNX Runtime op "
                        "profile: ms per run")  # fmt: skip
        ref = ops["sdpa"]["ops"]
        kinds = sorted({op for v in ops.values() for op in v["ops"]},
                       key=lambda op: -ref.get(op, {"ms": 0})["ms"])[:14]  # fmt: skip
        for col in ("implementation", "total", "outside MatMul", *kinds):
            t.add_column(col, justify="left" if col == "implementation" else "right")
        for v, r in ops.items():
            t.add_row(v, f"{r['total_ms']:.2f}", f"{r['outside_matmul_ms']:.2f}",
                      *(f"{r['ops'].get(op, {'ms': 0})['ms']:.2f}" for op in kinds))  # fmt: skip
        console.print(t)


if __name__ == "__main__":
    main()
