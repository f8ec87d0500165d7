"""Tabular benchmark: train every architecture of a small space once and record its metrics.

The table lets search strategies be compared by lookup instead of training (bench/strategies.py).
Every architecture goes through `speechnas.search.trial.run_trial`, the code path of the search
itself, with one short fidelity and one seed. Each result is written as soon as it is done and
architectures already in the file are skipped, so the script can be stopped and resumed:

    .venv/bin/python bench/make_table.py                 # the full 64-architecture table
    .venv/bin/python bench/make_table.py --limit 1       # a smoke test on one architecture

Architectures are trained in a seeded shuffled order, so a partial table is a uniform sample of
the space rather than one corner of it. Checkpoints go to a scratch folder under runs/ and are
deleted after each architecture.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from speechnas.cli import default_config_path
from speechnas.search.trial import Fidelity, run_trial
from speechnas.space import Arch, load_space
from speechnas.train.config import TrainConfig, load_config
from speechnas.train.trainer import Diverged
from speechnas.versions import versions

HERE = Path(__file__).resolve().parent
SPACE = HERE / "tabular" / "space.yaml"
TABLE = HERE / "tabular" / "conformer64.json"
FIDELITY = Fidelity(minutes=0.5, fraction=0.5)
SEED = 0


def base_config() -> TrainConfig:
    """The baseline training config made cheap: one thread, short warm-up, one test set."""
    base = load_config(default_config_path())
    return base.replace(
        threads=1,
        optim=dataclasses.replace(
            base.optim, warmup_steps=25, lr=3e-3, lr_scale=None, max_batch_seconds=60.0
        ),  # the recipe the checked-in table was built with: one peak rate for every model
        data=dataclasses.replace(base.data, test={"test": base.data.test["test"]}),
    )


def corpus_digest(base: TrainConfig) -> str | None:
    """The digest of the synthetic corpus the training manifest belongs to (None if unknown)."""
    stamp = Path(base.data.train).parent / "corpus.json"
    if not stamp.is_file():
        return None
    return json.loads(stamp.read_text(encoding="utf-8")).get("digest")


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _save(path: Path, table: dict[str, Any]) -> None:
    """Write via a temporary file and a rename, so an interrupted write leaves the old table."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default=str(SPACE))
    ap.add_argument("--out", default=str(TABLE))
    ap.add_argument("--scratch", default="runs/tabular-scratch", help="trial output folders")
    ap.add_argument("--limit", type=int, default=None, help="train at most this many new archs")
    args = ap.parse_args()
    torch.set_num_threads(1)

    space = load_space(args.space)
    base = base_config()
    base_json = json.loads(json.dumps(base.to_dict()))  # tuples as lists, as in the file
    out = Path(args.out)
    table = _load(out) or {
        "space": space.to_dict(),
        "fidelity": FIDELITY.to_dict(),
        "seed": SEED,
        "base_config": base_json,
        "corpus_digest": corpus_digest(base),
        "rows": [],
    }
    if table["base_config"] != base_json:
        sys.exit(f"{out} was made with another base config; move it away to start afresh")
    if table.get("corpus_digest") != corpus_digest(base):
        sys.exit(f"{out} was made on another corpus; move it away to start afresh")
    done = {row["key"] for row in table["rows"]}
    archs = list(space.enumerate())
    random.Random(SEED).shuffle(archs)
    todo = [a for a in archs if a.key() not in done][: args.limit]
    print(f"{len(done)} of {len(archs)} architectures tabulated; {len(todo)} to train", flush=True)

    scratch = Path(args.scratch)
    for arch in tqdm(todo, desc="tabulating", unit="arch", file=sys.stderr):
        row = train_one(arch, base, scratch / arch.hash())
        table["rows"].append(row)
        _save(out, table)


def train_one(arch: Arch, base: TrainConfig, folder: Path) -> dict[str, Any]:
    """A table row: the arch, its key and hash, metrics (None if training diverged), provenance."""
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    try:
        metrics: dict[str, Any] | None = run_trial(
            arch, base=base, fidelity=FIDELITY, output_dir=folder, seed=SEED
        )
        error = None
    except Diverged as e:
        metrics, error = None, f"diverged: {e}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "arch": arch.to_json(),
        "key": arch.key(),
        "hash": arch.hash(),
        "metrics": metrics,
        "error": error,
        "fidelity": FIDELITY.to_dict(),
        "seed": SEED,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "versions": versions(),
    }


if __name__ == "__main__":
    main()
