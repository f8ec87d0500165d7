"""Shared by the benchmarks that train models: one training of an architecture (reused when its
folder already holds the result) and its hypotheses on test sets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
        return json.loads(done.read_text())
    minutes = budget.pop("minutes")
    metrics = retrain(arch, base, minutes, out / "train", **budget)
    result = {"metrics": metrics, "hypotheses": hypotheses(metrics["checkpoint"], tests)}
    done.write_text(json.dumps(result))
    return result
