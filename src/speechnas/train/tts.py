"""Training a FastSpeech-style acoustic model (:mod:`speechnas.nn.tts`) on a TTS corpus.

One frozen config (:class:`TtsTrainConfig`), one trainer. The budget is wall-clock minutes,
optimizer steps, or both (whichever ends first), counted from the start of training, so a run
continued from its own ``last`` checkpoint with a larger budget (a promoted trial of the search)
only trains the difference. The batches follow a seeded sampler whose position is saved, so a
resumed run sees the same batches an uninterrupted one would.

At the end the model is scored on dev: ``mcd`` (dB, mel-cepstral distortion with the reference
durations, so frames align one to one: it measures the spectra the model predicts, not its
timing), ``duration_error`` (mean absolute error of the predicted durations, frames) and the
masked L1 of the log-mels.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechnas.data.tts import (
    MelConfig,
    PhonemeVocab,
    TtsDataset,
    TtsUtterance,
    collate_tts,
    load_tts_manifest,
    tts_batches,
)
from speechnas.evaluate.tts import mcd
from speechnas.nn.tts import FastSpeech, decode_tts, tts_loss, tts_parameters, tts_preset
from speechnas.space import Arch
from speechnas.train.checkpoint import load_state, save_checkpoint
from speechnas.versions import versions

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TtsTrainConfig:
    """Everything one TTS training needs: data, architecture, optimiser, budget.

    ``arch`` (an architecture mapping) wins over ``preset``. ``fraction`` trains on that share
    of the training utterances (the first of a seeded shuffle)."""

    train: str = ""  # manifests (JSONL, speechnas.data.tts) and the phoneme inventory
    dev: str = ""
    test: str = ""
    vocab: str = ""
    mel: dict[str, Any] = field(default_factory=dict)  # MelConfig fields; {} = its defaults
    voice: str = ""  # the eSpeak voice whose phonemes the corpus holds (synthesis needs it)
    arch: dict[str, Any] | None = None
    preset: str = "lightspeech"
    dropout: float = 0.1
    seed: int = 0
    output_dir: str = "runs/tts"
    threads: int = 1
    lr: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 1e-6
    clip_norm: float = 1.0
    max_batch_frames: int = 4000
    max_minutes: float | None = None
    max_steps: int | None = None
    fraction: float = 1.0
    dev_utterances: int = 60  # dev utterances scored at the end (all of them when fewer)
    init_from: str | None = None  # a checkpoint folder whose weights start the training

    def __post_init__(self) -> None:
        for name in ("lr", "clip_norm", "max_batch_frames", "threads", "dev_utterances"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ValueError(f"train.{name}: expected a number > 0, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"train.dropout: {self.dropout!r} is not in [0, 1)")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"train.fraction: {self.fraction!r} is not in (0, 1]")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"train.max_steps: expected >= 0 or null, got {self.max_steps!r}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"train.max_minutes: expected > 0 or null, got {self.max_minutes}")
        if self.warmup_steps < 1:
            raise ValueError(f"train.warmup_steps: expected >= 1, got {self.warmup_steps!r}")
        MelConfig(**self.mel)  # names a bad field

    def architecture(self) -> Arch:
        return Arch.from_json(self.arch) if self.arch is not None else tts_preset(self.preset)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TtsTrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "train") -> TtsTrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


def _lr_factor(step: int, warmup: int) -> float:
    """Linear warm-up, then inverse-square-root decay (no total needed: a minute budget may
    stop anywhere)."""
    step = max(step, 1)
    return min(step / warmup, math.sqrt(warmup / step))


def _subset(n: int, fraction: float, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[: max(1, round(fraction * n))])


@dataclass(frozen=True, slots=True)
class TtsTrainResult:
    steps: int
    train_seconds: float
    stop_reason: str
    dev: dict[str, float]
    checkpoint: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TtsTrainer:
    """Trains the architecture of a :class:`TtsTrainConfig` (see the module docstring)."""

    def __init__(self, cfg: TtsTrainConfig, *, show_progress: bool = False) -> None:
        for name in ("train", "dev", "vocab"):
            path = getattr(cfg, name)
            if not path or not Path(path).is_file():
                raise ValueError(f"train.{name}: {path!r} is not a file (a TTS corpus gives it)")
        self.cfg = cfg
        self.show_progress = show_progress
        self.mel = MelConfig(**cfg.mel)
        self.vocab = PhonemeVocab.load(cfg.vocab)
        self.arch = cfg.architecture()
        self.spec = decode_tts(self.arch)
        train = load_tts_manifest(cfg.train)
        train = [train[i] for i in _subset(len(train), cfg.fraction, cfg.seed)]
        self.train_set = TtsDataset(train, self.vocab, self.mel)
        self.dev_set = TtsDataset(load_tts_manifest(cfg.dev), self.vocab, self.mel)
        torch.manual_seed(cfg.seed)
        self.model = FastSpeech(
            self.spec, n_phonemes=len(self.vocab), n_mels=self.mel.n_mels, dropout=cfg.dropout
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
        )
        self._cache: dict[int, dict[str, Any]] = {}  # training items: mels computed once
        self.step = 0
        self.epoch = 0
        self.consumed = 0  # batches of the current epoch already trained
        self.train_seconds = 0.0
        self.out = Path(cfg.output_dir)

    # -- checkpoints ------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "task": "tts",
            "arch": self.arch.to_json(),
            "phonemes": list(self.vocab.symbols),
            "mel": dataclasses.asdict(self.mel),
            "voice": self.cfg.voice,
            "config": self.cfg.to_dict(),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "params": tts_parameters(self.spec, len(self.vocab), self.mel.n_mels),
            "versions": versions(),
        }

    def save(self) -> None:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "train_seconds": self.train_seconds,
            "torch_rng": torch.get_rng_state(),
        }
        save_checkpoint(self.out / "last", self.model, self.meta(), state)

    def _resumable(self, meta: dict[str, Any]) -> bool:
        mine = {k: v for k, v in self.cfg.to_dict().items() if k not in _BUDGET_KEYS}
        theirs = {k: v for k, v in meta.get("config", {}).items() if k not in _BUDGET_KEYS}
        return json.dumps(mine, sort_keys=True) == json.dumps(theirs, sort_keys=True)

    def try_resume(self) -> bool:
        folder = self.out / "last"
        if not (folder / "state.pt").is_file():
            return False
        meta = json.loads((folder / "meta.json").read_text())
        if not self._resumable(meta):
            log.info("%s: a different config; training from scratch", folder)
            return False
        self._load_weights(folder)
        state = load_state(folder)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.consumed = int(state["consumed"])
        self.train_seconds = float(state["train_seconds"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at step %d", folder, self.step)
        return True

    def _load_weights(self, folder: Path) -> None:
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(folder / "model.safetensors")))

    # -- training ---------------------------------------------------------------------------
    def _budget_left(self) -> bool:
        cfg = self.cfg
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return False
        return cfg.max_minutes is None or self.train_seconds < 60 * cfg.max_minutes

    def _epoch_batches(self) -> list[list[int]]:
        rng = random.Random(self.cfg.seed * 1_000_003 + self.epoch)
        return list(tts_batches(self.train_set, max_frames=self.cfg.max_batch_frames, rng=rng))

    def _item(self, i: int) -> dict[str, Any]:
        if i not in self._cache:
            self._cache[i] = self.train_set[i]
        return self._cache[i]

    def _train_step(self, indices: list[int]) -> float:
        batch = collate_tts([self._item(i) for i in indices])
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * _lr_factor(self.step + 1, self.cfg.warmup_steps)
        # reference durations and energies drive the decoder (teacher forcing, as in FastSpeech 2)
        out = self.model(batch.phonemes, batch.phoneme_lengths, batch.durations, batch.energy)
        loss, _ = tts_loss(out, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
        self.optimizer.step()
        self.step += 1
        return float(loss.item())

    def fit(self, *, resume: bool = True) -> TtsTrainResult:
        cfg = self.cfg
        torch.set_num_threads(cfg.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        if not (resume and self.try_resume()) and cfg.init_from:
            self._load_weights(Path(cfg.init_from))
        log.info(
            "training %d parameters on %d utterances, dev %d",
            sum(p.numel() for p in self.model.parameters()),
            len(self.train_set),
            len(self.dev_set),
        )
        self.model.train()
        last_log = time.perf_counter()
        while self._budget_left():
            batches = self._epoch_batches()
            for indices in batches[self.consumed :]:
                if not self._budget_left():
                    break
                start = time.perf_counter()
                loss = self._train_step(indices)
                self.consumed += 1
                self.train_seconds += time.perf_counter() - start
                if self.show_progress and time.perf_counter() - last_log > 10:
                    print(f"step {self.step}: loss {loss:.3f} ({self.train_seconds / 60:.1f} min)")
                    last_log = time.perf_counter()
            else:
                self.epoch += 1
                self.consumed = 0
        self.save()
        dev = self.evaluate()
        (self.out / "dev.json").write_text(json.dumps(dev, indent=1))
        # the only way out of the loop is the budget (no epoch limit or early stopping)
        return TtsTrainResult(self.step, self.train_seconds, "budget", dev, str(self.out / "last"))

    def evaluate(self, utterances: list[TtsUtterance] | None = None) -> dict[str, float]:
        """``mcd`` (dB, reference durations), ``duration_error`` (frames per phoneme) and
        ``mel_l1`` over the first ``dev_utterances`` of ``utterances`` (default: dev)."""
        data = self.dev_set if utterances is None else TtsDataset(utterances, self.vocab, self.mel)
        n = min(self.cfg.dev_utterances, len(data))
        scores = utterance_scores(self.model, [data[i] for i in range(n)])
        self.model.train()
        return {k: float(np.mean(v)) for k, v in scores.items()} | {"utterances": n}


@torch.no_grad()
def utterance_scores(model: FastSpeech, items: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per utterance (items of a :class:`TtsDataset`): ``mcd`` (dB) of the mel generated with
    the reference durations, ``mel_l1`` of the same, and ``duration_error`` (mean absolute
    frames per phoneme) of the predicted durations. Leaves ``model`` in eval mode."""
    model.eval()
    out: dict[str, list[float]] = {"mcd": [], "mel_l1": [], "duration_error": []}
    for k in range(0, len(items), 8):
        batch = collate_tts(items[k : k + 8])
        forced = model(batch.phonemes, batch.phoneme_lengths, batch.durations)
        free = model(batch.phonemes, batch.phoneme_lengths, None)
        for b in range(batch.phonemes.shape[0]):
            t = int(batch.mel_lengths[b])
            ref = batch.mel[b, :t].numpy()
            syn = forced.mel_post[b, :t].numpy()
            out["mcd"].append(mcd(ref, syn))
            out["mel_l1"].append(float(np.abs(ref - syn).mean()))
            m = int(batch.phoneme_lengths[b])
            ref_d = batch.durations[b, :m].float()
            pred_d = torch.clamp(torch.round(torch.exp(free.log_durations[b, :m]) - 1), min=0)
            out["duration_error"].append(float((pred_d - ref_d).abs().mean()))
    return out


_BUDGET_KEYS = ("max_minutes", "max_steps", "output_dir", "init_from")


def load_tts_model(folder: str | Path) -> tuple[FastSpeech, dict[str, Any]]:
    """The acoustic model of a TTS checkpoint folder (eval mode) and its ``meta.json``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file() or not (folder / "model.safetensors").is_file():
        raise ValueError(f"{folder} is not a speechnas TTS checkpoint (meta.json, weights)")
    meta = json.loads(meta_path.read_text())
    if meta.get("task") != "tts":
        raise ValueError(f"{folder} holds an ASR model, not a TTS acoustic model")
    spec = decode_tts(Arch.from_json(meta["arch"]))
    model = FastSpeech(spec, n_phonemes=len(meta["phonemes"]), n_mels=meta["mel"]["n_mels"])
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), meta


__all__ = ["TtsTrainConfig", "TtsTrainResult", "TtsTrainer", "load_tts_model", "utterance_scores"]
