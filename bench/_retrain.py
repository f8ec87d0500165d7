"""Shared by the benchmarks that train models: one training of an architecture (reused when its
folder already holds the result) and its hypotheses on test sets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _jobs import map_jobs

from speechnas.search.select import retrain
from speechnas.space import Arch
from speechnas.train.config import TrainConfig
from speechnas.train.score import score_checkpoint


def hypotheses(checkpoint: str, tests: Mapping[str, str]) -> dict[str, list[str]]:
    """Test set name -> the checkpoint's greedy transcripts of it."""
    return {k: list(ev.hypotheses) for k, ev in score_checkpoint(checkpoint, tests).items()}


def trained(
    out: Path, base: TrainConfig, arch: Arch, tests: Mapping[str, str], **budget: Any
) -> dict[str, Any]:
    """``{"metrics", "hypotheses"}`` of ``arch`` trained by the search's retraining code under
    ``out/train`` (``budget``: ``minutes``, ``seed``, ``steps``, ``threads``), cached in
    ``out/result.json`` so a rerun of a benchmark reuses every finished training."""
    done = out / "result.json"
    if done.is_file():
        result = json.loads(done.read_text())
        missing = {k: v for k, v in tests.items() if k not in result["hypotheses"]}
        if missing:  # a test set added since: score the cached checkpoint on it
            result["hypotheses"].update(hypotheses(result["metrics"]["checkpoint"], missing))
            done.write_text(json.dumps(result))
        return result
    minutes = budget.pop("minutes")
    metrics = retrain(arch, base, minutes, out / "train", **budget)
    result = {"metrics": metrics, "hypotheses": hypotheses(metrics["checkpoint"], tests)}
    done.write_text(json.dumps(result))
    return result


def train_job(job: dict[str, Any]) -> dict[str, Any]:
    """One training of :func:`train_on_corpora` (a top-level function: a spawned pool runs it)."""
    import dataclasses
    import logging
    import sys

    from speechnas.search.config import load_search_config
    from speechnas.search.runner import prepare_base

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    base = prepare_base(load_search_config(job["config"])).replace(space=None)  # any arch
    data = dataclasses.replace(base.data.with_corpus(job["manifests"]), test={})
    return trained(Path(job["out"]), base.replace(data=data), Arch.from_json(job["arch"]),
                   job["tests"], minutes=1e6, seed=job["seed"], steps=job["steps"],
                   threads=job["threads"])  # fmt: skip


def train_on_corpora(
    manifests: Mapping[str, Mapping[str, Any]],
    arch: Arch,
    tests: Mapping[str, str],
    out: Path,
    *,
    config: str,
    seeds: list[int],
    steps: int,
    threads: int,
    workers: int,
) -> dict[str, list[dict[str, Any]]]:
    """``arch`` trained once per seed on each corpus (name -> its split manifests), scored on
    ``tests``; cached under ``out/<name>-<arch key>/seed<N>``. Name -> results in seed order."""
    jobs = [
        {"config": config, "arch": arch.to_json(), "seed": seed, "steps": steps,
         "threads": threads, "tests": dict(tests), "label": name,
         "manifests": {k: str(v) for k, v in splits.items()},
         "out": str(out / f"{name}-{arch.hash()[:8]}" / f"seed{seed}")}
        for name, splits in manifests.items() for seed in seeds
    ]  # fmt: skip
    done = map_jobs(train_job, jobs, workers)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in manifests}
    for job, res in zip(jobs, done, strict=True):
        runs[job["label"]].append(res)
    return runs
