"""Attention-decoder search cost: the key/value-cached decoder against recomputing the whole
prefix at every step (what greedy decoding did before), and joint CTC/attention beam search.

A hybrid CTC/attention model with random weights decodes utterances of ``--seconds`` (random
weights never emit the end early, so every search runs its full 2 T + 10 steps: the worst case,
equal for both). Per utterance: greedy time without and with the cache (interleaved rounds,
median), and beam search with CTC weight 0 and 0.3. Prints JSON and a table.

    .venv/bin/python bench/attention_decoding.py --seconds 2 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from speechnas.nn.build import build
from speechnas.nn.decoders.attention import AttentionDecoder
from speechnas.nn.presets import preset
from speechnas.versions import versions


def recompute_greedy(dec: AttentionDecoder, enc: torch.Tensor, lens: torch.Tensor) -> int:
    """Greedy decoding that recomputes the prefix each step; returns the steps taken."""
    ys = torch.full((enc.shape[0], 1), dec.sos_eos, dtype=torch.long)
    for _ in range(int(2 * lens.max() + 10)):
        best = dec._next_log_probs(enc, lens, ys).argmax(dim=-1)
        ys = torch.cat([ys, best[:, None]], dim=1)
    return ys.shape[1] - 1


def timed(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, nargs="+", default=[2.0, 5.0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--beam", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    arch = preset("small", decoder="attention", decoder_layers=2, ctc_weight=0.3)
    model = build(arch, vocab_size=30).eval()
    dec = model.decoder
    assert isinstance(dec, AttentionDecoder)
    rows = []
    with torch.no_grad():
        for s in args.seconds:
            frames = int(100 * s)
            feats = torch.randn(1, frames, 80)
            enc, lens = model.encode(feats, torch.tensor([frames]))
            old, new, beam0, beam3 = [], [], [], []
            for _ in range(args.rounds):
                old.append(timed(recompute_greedy, dec, enc, lens))
                new.append(timed(dec.decode, enc, lens))
                beam0.append(timed(dec.decode, enc, lens, beam=args.beam, ctc_weight=0.0))
                beam3.append(timed(dec.decode, enc, lens, beam=args.beam, ctc_weight=0.3))
            rows.append({
                "seconds": s, "encoder_frames": int(lens[0]), "steps": int(2 * lens[0] + 10),
                "greedy_recompute_s": statistics.median(old),
                "greedy_cached_s": statistics.median(new),
                "speedup": statistics.median(o / n for o, n in zip(old, new, strict=True)),
                f"beam{args.beam}_attention_s": statistics.median(beam0),
                f"beam{args.beam}_joint_ctc0.3_s": statistics.median(beam3),
            })  # fmt: skip
    print(json.dumps({"rows": rows, "versions": versions()}, indent=1))
    t = Table(title="attention decoding, one utterance, 1 thread (s; random weights, full length)")
    for col in rows[0]:
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()))
    Console(stderr=True).print(t)


if __name__ == "__main__":
    main()
