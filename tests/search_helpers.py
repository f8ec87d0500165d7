"""Tiny search configs over the tiny corpus: two-choice spaces and step-sized fidelities."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from conftest import tiny_config

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.config import SearchConfig, search_config_from_dict

TINY_SPACE = """\
name: tiny
doc: one-layer conformers small enough to train in a second
choices:
  - {name: frontend, values: [fbank80]}
  - {name: subsampling, values: [conv2d, dwconv2d]}
  - {name: subsampling_factor, values: [4]}
  - {name: encoder, values: [conformer]}
  - {name: d_model, values: [16, 32]}
  - {name: layers, values: [1]}
  - {name: heads, values: [2]}
  - {name: ffn_dim, values: [32, 64], per_layer: layers}
  - {name: conv_kernel, values: [3, 7], per_layer: layers}
  - {name: macaron, values: [true, false]}
  - {name: decoder, values: [ctc]}
"""


def search_dict(corpus: CorpusInfo, tmp: Path, **changes: Any) -> dict[str, Any]:
    """A search of 4 trials (3 candidates at 2 steps, the best promoted to 4 steps)."""
    space = tmp / "tiny-space.yaml"
    tmp.mkdir(parents=True, exist_ok=True)
    space.write_text(TINY_SPACE)
    train = tiny_config(corpus, tmp / "unused").to_dict()
    for k in ("model", "output_dir", "arch", "space"):
        train.pop(k)
    train["budget"] = {"max_epochs": 100, "patience": None}
    d: dict[str, Any] = {
        "space": str(space),
        "strategy": {"name": "evolution", "options": {"population": 2}},
        "objectives": ["wer:test", "latency"],
        "fidelity": {
            "rungs": [{"minutes": 5, "fraction": 1.0, "steps": 2}, {"minutes": 5, "steps": 4}],
            "eta": 3,
            "candidates": 3,
        },
        "n_trials": 4,
        "workers": 1,
        "seed": 0,
        "output_dir": str(tmp / "search"),
        "corpus": None,
        "train": json.loads(json.dumps(train)),
        "retrain_minutes": 0,
    }
    d.update(changes)
    return d


def search_config(corpus: CorpusInfo, tmp: Path, **changes: Any) -> SearchConfig:
    return search_config_from_dict(search_dict(corpus, tmp, **changes))


def write_search_yaml(corpus: CorpusInfo, tmp: Path, **changes: Any) -> Path:
    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(search_dict(corpus, tmp, **changes)))
    return path


def search_process(config: Path, *args: str) -> subprocess.Popen[str]:
    """``speechnas search --config CONFIG ARGS`` in a child process (output in ``stdout``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "speechnas", "search", "--config", str(config), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip


def study_trials(db: Path, *, poll: bool = False) -> list[Any]:
    """The trials of study "search" in SQLite file ``db``; ``poll``: opened read only, so the
    poll never writes while the search makes the file (a KeyError while it does not exist, an
    Optuna or SQLAlchemy error while its tables or schema stamp are not there yet)."""
    import optuna

    if poll and not db.is_file():
        raise KeyError(db)
    url = f"sqlite:///file:{db}?mode=ro&uri=true" if poll else f"sqlite:///{db}"
    storage = optuna.storages.RDBStorage(
        url,
        engine_kwargs={"connect_args": {"timeout": 60}},
        skip_table_creation=poll,
    )
    return optuna.load_study(study_name="search", storage=storage).get_trials()
