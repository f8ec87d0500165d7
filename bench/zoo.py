"""Model zoo benchmark: contrasting architectures of `speech-all`, one short training budget each.

Every encoder family and every decoder type appears at least once. Prints JSON (stdout) and a
table (stderr): WER per test set, parameters, analytic MACs for 5 s of audio, CPU latency to
decode 5 s of audio on one thread (feature extraction included), training throughput.

    .venv/bin/python bench/zoo.py                     # 3 minutes of training per architecture
    .venv/bin/python bench/zoo.py --minutes 1 --only conformer-ctc,cnn-ctc
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from speechnas.cli import default_config_path
from speechnas.data.features import FeatureExtractor
from speechnas.data.synth.corpus import CorpusConfig, build_corpus
from speechnas.nn.cost import analytic_macs, count_parameters
from speechnas.space import Arch, load_space
from speechnas.train.checkpoint import load_model
from speechnas.train.config import load_config
from speechnas.train.trainer import Trainer
from speechnas.versions import versions

_FRONT = {"subsampling": "conv2d", "subsampling_factor": 4, "frontend": "fbank80"}
_ATT = {"heads": 4, "attention": "rel", "streaming": False, "ffn_lowrank": (0,) * 4}
ZOO: dict[str, dict] = {
    "conformer-ctc": {
        **_FRONT, **_ATT, "encoder": "conformer", "d_model": 144, "layers": 4,
        "ffn_dim": (512,) * 4, "macaron": True, "conv_kernel": (15,) * 4,
        "module_order": ("mhsa_first",) * 4, "decoder": "ctc",
    },
    "conformer-stream-local-ctc": {
        **_FRONT, **_ATT, "subsampling": "dwconv2d", "encoder": "conformer", "d_model": 144,
        "layers": 4, "attention": "local", "attention_window": 16, "streaming": True,
        "chunk_size": 16, "left_chunks": 4, "ffn_dim": (256, 512, 512, 256),
        "ffn_lowrank": (0, 64, 64, 0), "macaron": False, "conv_kernel": (7, 15, 15, 7),
        "module_order": ("mhsa_first", "conv_first", "mhsa_first", "conv_first"),
        "decoder": "ctc",
    },
    "transformer-attention": {
        **_FRONT, **_ATT, "attention": "abs", "encoder": "transformer", "d_model": 144,
        "layers": 4, "ffn_dim": (512,) * 4, "decoder": "attention", "ctc_weight": 0.3,
        "decoder_layers": 1,
    },
    "ebranchformer-ctc": {
        **_FRONT, **_ATT, "frontend": "fbank64", "subsampling": "dwconv2d",
        "encoder": "ebranchformer", "d_model": 144, "layers": 4, "ffn_dim": (512,) * 4,
        "conv_kernel": (15,) * 4, "decoder": "ctc",
    },
    "lstm-rnnt": {
        **_FRONT, "encoder": "lstm", "d_model": 144, "layers": 2, "lstm_hidden": 256,
        "streaming": True, "chunk_size": 16, "left_chunks": 4, "decoder": "rnnt",
        "pred_dim": 128,
    },
    "blstm-ctc-mfcc-x6": {
        **_FRONT, "frontend": "mfcc40", "subsampling_factor": 6, "encoder": "blstm",
        "d_model": 144, "layers": 2, "lstm_hidden": 256, "decoder": "ctc",
    },
    "cnn-ctc-learnable": {
        **_FRONT, "frontend": "learnable", "subsampling": "dwconv2d", "encoder": "cnn",
        "d_model": 144, "layers": 6, "conv_kernel": (15,) * 6, "cnn_se": True,
        "cnn_dilation": 1, "streaming": False, "decoder": "ctc",
    },
}  # fmt: skip


def latency_5s(checkpoint: str, *, repeats: int = 7) -> float:
    """Median seconds to turn 5 s of audio into tokens on one thread, features included."""
    loaded = load_model(checkpoint)
    extractor = FeatureExtractor(loaded.features)
    wave = torch.randn(
        1, 5 * loaded.features.sample_rate, generator=torch.Generator().manual_seed(0)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):
            start = time.perf_counter()
            feats, n = extractor(wave)
            loaded.model.decode(feats, n)
            if i >= 2:  # two warm-up runs
                times.append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--only", default="", help="comma-separated names from the zoo")
    ap.add_argument("--out", default="runs/bench-zoo")
    args = ap.parse_args()
    space = load_space("speech-all")
    info = build_corpus(CorpusConfig(), "corpora")
    base = load_config(default_config_path())
    m = info.manifests
    data = base.data.with_corpus(m)
    names = [n for n in ZOO if not args.only or n in args.only.split(",")]
    rows = {}
    for name in names:
        arch = space.validate(Arch(ZOO[name]))
        cfg = base.replace(
            data=data, arch=arch.to_json(), space="speech-all", output_dir=f"{args.out}/{name}",
            budget=dataclasses.replace(base.budget, max_minutes=args.minutes, patience=None),
        )  # fmt: skip
        result = Trainer.from_config(cfg, show_progress=False).fit(resume=False)
        vocab = load_model(f"{args.out}/{name}/best").tokenizer.vocab_size
        macs = analytic_macs(arch, seconds=5.0, vocab_size=vocab)
        rows[name] = {
            "arch": arch.to_json(),
            "parameters": count_parameters(arch, vocab_size=vocab),
            "macs_5s": macs.total,
            "latency_5s_ms": 1000 * latency_5s(f"{args.out}/{name}/best"),
            "throughput_audio_s_per_s": result.throughput,
            "steps": result.steps,
            "dev_wer": result.best_dev_wer,
            **{f"wer_{k}": v["wer"] for k, v in result.test.items()},
        }
        print(json.dumps({name: rows[name]["wer_test"]}), file=sys.stderr)
    table = Table(title=f"zoo after {args.minutes:g} min of training each")
    cols = ["model", "params", "MMACs/5s", "ms/5s", "dev", "test", "noisy", "tel"]
    for c in cols:
        table.add_column(c, justify="left" if c == "model" else "right")
    for name, r in rows.items():
        table.add_row(
            name, f"{r['parameters'] / 1e6:.2f}M", f"{r['macs_5s'] / 1e6:.0f}",
            f"{r['latency_5s_ms']:.0f}", *(f"{100 * r[k]:.1f}" for k in
            ("dev_wer", "wer_test", "wer_test-noisy", "wer_test-tel")),
        )  # fmt: skip
    Console(stderr=True).print(table)
    print(json.dumps({"minutes": args.minutes, "versions": versions(), "models": rows}, indent=1))


if __name__ == "__main__":
    main()
