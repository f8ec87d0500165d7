"""Differentiable architecture compression of a trained model's feed-forward layers.

The DARTS stage of Xu et al., "Lossless 4-bit quantization of architecture compressed Conformer
ASR systems" (Interspeech 2023): starting from a trained fp32 checkpoint, every layer chooses
its FFN hidden width and the rank of a low-rank factorisation of its FFN weights from a mixed
supernet (:mod:`.darts_supernet`) initialised from the trained weights, by gradient descent on
``CTC + η · expected FFN parameters`` (:mod:`.darts_search`). The argmax architecture is an
ordinary :class:`~speechnas.space.Arch`, and its model, extracted with the supernet's weights,
an ordinary checkpoint: fine-tune it with the trainer (``init_from``), score, export or quantize
it like any other.

:func:`darts_front` is the reusable runner: several configs (an η sweep, Gumbel against softmax,
pipelined against joint) share one checkpoint, one data load and, where their stage-1 settings
agree, one stage-1 training. Each run writes ``model/`` (the checkpoint), ``darts.json`` (the
:class:`DartsResult`) and ``darts.png``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from speechnas.compress.darts_config import DartsConfig
from speechnas.compress.darts_search import (
    BatchStream,
    entropy,
    train_arch,
    train_joint,
    train_weights,
)
from speechnas.compress.darts_supernet import DartsSupernet
from speechnas.data.config import DataConfig
from speechnas.data.dataset import SpeechDataset
from speechnas.data.loading import TrainingData, load_training_data
from speechnas.train.checkpoint import LoadedModel, load_model, save_checkpoint
from speechnas.train.config import TrainConfig, config_from_dict
from speechnas.versions import versions

__all__ = [
    "DartsResult",
    "compress_checkpoint",
    "darts_front",
    "data_of",
    "finetune_config",
    "load_compression_data",
    "run_name",
]

log = logging.getLogger(__name__)


@dataclass
class DartsResult:
    """One compression run: what was chosen, how big it is, what it scored (before any
    fine-tuning), and everything needed to repeat it."""

    checkpoint: str  # the trained model compressed
    output_dir: str  # this run's folder: model/, darts.json, darts.png
    config: dict[str, Any]
    seed: int
    candidates: list[str]  # labels of the grid's columns
    probabilities: list[list[float]]  # (layers, candidates); 0 where a layer lacks one
    entropy: list[float]  # per layer, nats
    choice: list[dict[str, Any]]  # per layer: candidate, ffn_dim, ffn_lowrank, probability
    arch: dict[str, Any]
    base_arch: dict[str, Any]
    params: dict[str, float]
    history: dict[str, list[dict[str, float]]]
    seconds: dict[str, float]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # set -> rates
    versions: dict[str, str] = field(default_factory=versions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_name(cfg: DartsConfig) -> str:
    """A folder name for a run of a sweep: ``eta0.5-gumbel-pipelined``."""
    return f"eta{cfg.eta:g}-{'gumbel' if cfg.gumbel else 'softmax'}-{cfg.schedule}"


def _train_config(loaded: LoadedModel, where: str) -> TrainConfig:
    raw = loaded.meta.get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}/meta.json: has no training `config` to take the data from")
    return config_from_dict(raw)


def data_of(checkpoint: str | Path) -> DataConfig:
    """The data section of the training config a checkpoint was trained with."""
    folder = Path(checkpoint)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise ValueError(f"{folder} is not a speechnas checkpoint: meta.json is missing")
    raw = json.loads(meta_path.read_text()).get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"{meta_path}: has no training `config` to take the data from")
    return config_from_dict(raw).data


def load_compression_data(
    loaded: LoadedModel, train_cfg: TrainConfig, data: DataConfig | None, seed: int
) -> TrainingData:
    """The checkpoint's training data (or ``data``) through :func:`load_training_data`, the
    datasets re-tokenised with the checkpoint's own tokenizer when the data's differs."""
    data_cfg = data or train_cfg.data
    out = load_training_data(
        data_cfg, tokenizer=train_cfg.tokenizer, features=loaded.features,
        augment=train_cfg.augment, seed=seed,
    )  # fmt: skip
    if out.tokenizer.to_dict() == loaded.tokenizer.to_dict():
        return out
    tok = loaded.tokenizer

    def re(ds: SpeechDataset, **kw: Any) -> SpeechDataset:
        return SpeechDataset(ds.utterances, tok, loaded.features, seed=seed, **kw)

    return TrainingData(
        tokenizer=tok, features=loaded.features, train=re(out.train, augment=train_cfg.augment),
        dev=re(out.dev), tests={k: re(v) for k, v in out.tests.items()}, skipped=out.skipped,
    )  # fmt: skip


def _params(net: DartsSupernet, model: torch.nn.Module, base: int) -> dict[str, float]:
    choice = net.argmax()
    ffn_after = sum(float(net.params[li, ci]) for li, ci in enumerate(choice))
    total = sum(p.numel() for p in model.parameters())
    return {
        "total_before": base, "total_after": total,
        "ffn_before": net.fp32_ffn_params, "ffn_after": ffn_after,
        "fp32_bytes_before": 4 * base, "fp32_bytes_after": 4 * total,
        "total_ratio": total / base, "ffn_ratio": ffn_after / net.fp32_ffn_params,
    }  # fmt: skip


def _score(folder: Path, sets: Mapping[str, str]) -> dict[str, dict[str, float]]:
    from speechnas.train.score import score_checkpoint

    return {k: {**ev.rates.to_dict(), "rtf": ev.rtf} for k, ev in
            score_checkpoint(folder, sets).items()}  # fmt: skip


def _score_sets(
    train_cfg: TrainConfig, data: DataConfig | None, which: Sequence[str] | None
) -> dict[str, str]:
    d = data or train_cfg.data
    sets = {"dev": d.dev, **d.test}
    if which is None:
        return sets
    unknown = sorted(set(which) - set(sets))
    if unknown:
        raise ValueError(f"score: {unknown} are not sets of the data; allowed: {sorted(sets)}")
    return {k: sets[k] for k in which}


def darts_front(
    checkpoint: str | Path,
    output_dir: str | Path,
    configs: Sequence[DartsConfig],
    *,
    data: DataConfig | None = None,
    score: Sequence[str] | None = (),
    score_baseline: bool = False,
) -> list[DartsResult]:
    """Compresses ``checkpoint`` once per config; returns one :class:`DartsResult` each.

    One config writes to ``output_dir`` itself, several to ``output_dir/<run_name>`` (plus
    ``output_dir/front.json``). ``data`` overrides the checkpoint's training data; ``score``
    names the sets ("dev" and the data's test names; None: all) the extracted models are
    scored on before any fine-tuning, greedy decoding; ``score_baseline`` scores the trained
    model on them too (in ``front.json``). Configs whose :meth:`DartsConfig.stage1_key` agree
    share one stage-1 training (the first config's ``threads`` apply to all).
    """
    if not configs:
        raise ValueError("darts_front: configs is empty; give at least one DartsConfig")
    checkpoint, out = Path(checkpoint), Path(output_dir)
    loaded = load_model(checkpoint)
    if loaded.meta.get("bits"):
        raise ValueError(
            f"checkpoint: {checkpoint} holds a fake-quantized model; compress the fp32 one "
            "(architecture compression comes before quantization)"
        )
    DartsSupernet(loaded.model, configs[0].widths, configs[0].ranks)  # no FFN: fails here
    train_cfg = _train_config(loaded, str(checkpoint))
    sets = _score_sets(train_cfg, data, score)
    torch.set_num_threads(configs[0].threads)
    names = [run_name(c) for c in configs]
    dirs = [out] if len(configs) == 1 else [
        out / (n if names.count(n) == 1 else f"{n}-{i}") for i, n in enumerate(names)
    ]  # fmt: skip
    datas: dict[int, TrainingData] = {}
    stage1: dict[tuple[Any, ...], tuple[dict[str, torch.Tensor], list[dict[str, float]], float]]
    stage1 = {}
    results = []
    for cfg, folder in zip(configs, dirs, strict=True):
        if cfg.seed not in datas:
            datas[cfg.seed] = load_compression_data(loaded, train_cfg, data, cfg.seed)
        td = datas[cfg.seed]
        seconds = cfg.batch_seconds or train_cfg.optim.max_batch_seconds
        net = DartsSupernet(loaded.model, cfg.widths, cfg.ranks)
        key = cfg.stage1_key()
        if key not in stage1:
            start = time.perf_counter()
            stream = BatchStream(td.train, max_seconds=seconds, seed=cfg.seed)
            hist = train_weights(net, stream, cfg, clip_norm=train_cfg.optim.clip_norm)
            state = copy.deepcopy(net.state_dict())
            stage1[key] = (state, hist, time.perf_counter() - start)
        state, w_hist, w_sec = stage1[key]
        net.load_state_dict(state)
        start = time.perf_counter()
        dev = BatchStream(td.dev, max_seconds=seconds, seed=cfg.seed + 1)
        if cfg.schedule == "joint":
            train = BatchStream(td.train, max_seconds=seconds, seed=cfg.seed + 2)
            a_hist = train_joint(net, train, dev, cfg, clip_norm=train_cfg.optim.clip_norm)
        else:
            a_hist = train_arch(net, dev, cfg)
        a_sec = time.perf_counter() - start
        history = {"weights": w_hist, "arch": a_hist}
        timing = {"weights": w_sec, "arch": a_sec}
        results.append(_finish(net, loaded, checkpoint, folder, cfg, history, timing, sets))
    if len(configs) > 1 or score_baseline:
        front: dict[str, Any] = {"checkpoint": str(checkpoint), "versions": versions()}
        if score_baseline and sets:
            front["baseline"] = {"params": loaded.model.num_parameters(),
                                 "scores": _score(checkpoint, sets)}  # fmt: skip
        front["runs"] = [{"output_dir": r.output_dir, "config": r.config, "params": r.params,
                          "scores": r.scores} for r in results]  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        (out / "front.json").write_text(json.dumps(front, indent=1))
    return results


def _finish(
    net: DartsSupernet,
    loaded: LoadedModel,
    checkpoint: Path,
    folder: Path,
    cfg: DartsConfig,
    history: dict[str, list[dict[str, float]]],
    seconds: dict[str, float],
    sets: Mapping[str, str],
) -> DartsResult:
    """Extracts the argmax model, writes model/, darts.json and darts.png, scores it."""
    from speechnas.compress.darts_plots import plot_choices

    model = net.extract().eval()
    probs = net.probabilities().detach()
    choice = net.argmax()
    rows = []
    for li, ci in enumerate(choice):
        width, rank = net.choice_of(li, ci)
        rows.append({"layer": li, "candidate": net.candidates[ci].label(), "ffn_dim": width,
                     "ffn_lowrank": rank, "probability": float(probs[li, ci])})  # fmt: skip
    result = DartsResult(
        checkpoint=str(checkpoint), output_dir=str(folder), config=cfg.to_dict(), seed=cfg.seed,
        candidates=[c.label() for c in net.candidates], probabilities=probs.tolist(),
        entropy=entropy(probs), choice=rows, arch=model.arch.to_json(),
        base_arch=net.base_arch.to_json(),
        params=_params(net, model, loaded.model.num_parameters()), history=history,
        seconds=seconds,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    darts_meta = {k: v for k, v in result.to_dict().items() if k not in ("history", "scores")}
    meta = {**loaded.meta, "arch": model.arch.to_json(), "step": 0, "darts": darts_meta}
    save_checkpoint(folder / "model", model, meta)
    if sets:
        result.scores = _score(folder / "model", sets)
    (folder / "darts.json").write_text(json.dumps(result.to_dict(), indent=1))
    plot_choices(result.to_dict(), folder / "darts.png")
    return result


def finetune_config(
    result: DartsResult, output_dir: str | Path, *, steps: int, lr: float | None = None
) -> TrainConfig:
    """The compressed checkpoint's own training recipe continued from the extracted model:
    its architecture, ``init_from`` its ``model/``, ``steps`` steps (no time limit, no early
    stopping), the recipe's learning rate (or ``lr``) after a 10-step warm-up. Train it with
    ``Trainer.from_config(cfg).fit()``."""
    cfg = config_from_dict(
        json.loads((Path(result.checkpoint) / "meta.json").read_text())["config"]
    )
    budget = dataclasses.replace(
        cfg.budget, max_steps=steps, max_minutes=None, patience=None, eval_at_minutes=()
    )
    optim = cfg.optim.fixed(lr, warmup_steps=min(cfg.optim.warmup_steps, 10))
    return cfg.replace(
        arch=result.arch, space=None, supernet=None, output_dir=str(output_dir), budget=budget,
        optim=optim, init_from=str(Path(result.output_dir) / "model"),
    )  # fmt: skip


def compress_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    config: DartsConfig | None = None,
    *,
    data: DataConfig | None = None,
    score: Sequence[str] | None = (),
) -> DartsResult:
    """One compression run of ``checkpoint`` into ``output_dir`` (see :func:`darts_front`)."""
    return darts_front(checkpoint, output_dir, [config or DartsConfig()], data=data, score=score)[0]
