"""The trainer: AdamW with warm-up, clipping, budgets, early stopping, checkpoints and resume.

Training is deterministic on the CPU for a given config and seed: the sampler's order and every
augmentation depend on (seed, epoch, index), and the dropout generator is re-seeded from
(seed, step) before each step, so a run resumed from a checkpoint continues exactly as the
uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechnas.data.dataset import SpeechDataset
from speechnas.data.loading import TrainingData, load_training_data
from speechnas.data.sampler import DurationBatchSampler
from speechnas.data.tokenizer import Tokenizer
from speechnas.evaluate.decode import evaluate_dataset
from speechnas.nn.build import SpeechModel, build, feature_config
from speechnas.nn.quant import load_plain_state, plain_state_dict
from speechnas.nn.spec import decode
from speechnas.nn.supernet import Supernet, largest, supernet_space
from speechnas.space import Arch, load_space
from speechnas.train.checkpoint import load_state, save_checkpoint
from speechnas.train.config import DynamicChunkConfig, TrainConfig, config_from_dict
from speechnas.train.dmao import Dmao, carry_optimizer
from speechnas.train.dmao_plots import plot_allocation
from speechnas.train.plots import plot_training
from speechnas.versions import versions

log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    output_dir: Path
    best_dev_wer: float
    epochs: int
    steps: int
    train_seconds: float
    audio_seconds: float
    stop_reason: str
    parameters: int
    history: list[dict[str, Any]] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # manifest → problems

    @property
    def throughput(self) -> float:
        """Seconds of training audio processed per second of training."""
        return self.audio_seconds / max(self.train_seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["output_dir"] = str(self.output_dir)
        d["throughput"] = self.throughput
        return d


def _cmvn(dataset: SpeechDataset, limit: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mean and std of the features of up to ``limit`` training utterances."""
    idx = np.random.default_rng([dataset.seed, 11]).permutation(len(dataset))[:limit]
    total = torch.zeros(dataset.features.dim, dtype=torch.float64)
    sq = torch.zeros_like(total)
    frames = 0
    for i in idx.tolist():
        f, _ = dataset.extractor(torch.from_numpy(dataset.audio(i)))
        f = f[0].double()
        total += f.sum(0)
        sq += f.square().sum(0)
        frames += f.shape[0]
    mean = total / frames
    std = (sq / frames - mean.square()).clamp(min=1e-8).sqrt()
    return mean.float(), std.float()


def _resumable(config: dict[str, Any]) -> dict[str, Any]:
    """What must match for a run to resume: everything but the budget, the output folder and
    the test sets (which only score the result), so a finished run can be continued with a
    larger budget (the search promotes trials so) and scored on other sets. The config is read
    back first, so a run stored before a field existed compares with that field's default
    rather than as a different config."""
    with contextlib.suppress(TypeError, ValueError):  # else compared as stored
        config = config_from_dict(config).to_dict()
    d = json.loads(json.dumps(config, default=str))
    d.pop("budget", None)
    d.pop("output_dir", None)
    if isinstance(d.get("data"), dict):
        d["data"].pop("test", None)
    return d


def _lr_lambda(warmup: int) -> Callable[[int], float]:
    """Linear warm-up to the peak, then inverse-square-root decay (no total step count needed,
    so a wall-clock budget can stop training at any point of the schedule)."""

    def f(step: int) -> float:
        step = max(step, 1)
        return min(step / warmup, math.sqrt(warmup / step))

    return f


class Trainer:
    """Trains the model a :class:`TrainConfig` describes.

    ``on_mark`` is called at each ``budget.eval_at_minutes`` mark with the minutes and the test
    results; the search later uses the same hooks for fidelity decisions.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        data: TrainingData,
        model: SpeechModel,
        show_progress: bool = True,
        plots: bool = True,
    ) -> None:
        """``data`` and ``model`` as :meth:`from_config` makes them from ``cfg``; the trainer
        only trains (``cfg`` gives the seed, optimiser, budget and output folder). ``plots``:
        draw ``training.png`` at the end (``result.json`` has the same curves either way)."""
        if model.features != data.features:
            raise ValueError(
                f"model: reads {model.features} features but the datasets give {data.features}"
            )
        if model.vocab_size != data.tokenizer.vocab_size:
            raise ValueError(
                f"model: vocab_size {model.vocab_size} != the tokenizer's "
                f"{data.tokenizer.vocab_size}"
            )
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.show_progress = show_progress
        self.plots = plots
        self.skipped = data.skipped
        self.tokenizer: Tokenizer = data.tokenizer
        self.features = data.features
        self.train_set = data.train
        self.dev_set = data.dev
        self.test_sets = data.tests
        self.model = model
        self.arch = model.arch
        self.sampler = DurationBatchSampler(
            self.train_set.durations(), max_seconds=cfg.optim.max_batch_seconds, seed=cfg.seed
        )
        self.optimizer, self.scheduler = self._optimizer(model)
        self.dmao = Dmao(cfg.dmao, model) if cfg.dmao is not None else None
        if cfg.dynamic_chunk is not None and not model.spec.streaming:
            raise ValueError(
                "dynamic_chunk: the architecture does not stream; set streaming: true (with "
                "chunk_size and left_chunks) or drop the dynamic_chunk section"
            )
        self.step = 0
        self.train_seconds = 0.0
        self.audio_seconds = 0.0
        self.best_wer = math.inf
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.marks: list[dict[str, Any]] = []

    def _optimizer(
        self, model: SpeechModel
    ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
        o = self.cfg.optim
        spec = decode(model.arch)  # a supernet's: its largest path, whose loss dominates
        self.peak_lr = o.peak_lr(spec.d_model, spec.layers, spec.encoder)
        decay = [p for n, p in model.named_parameters() if p.dim() > 1]
        no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": o.weight_decay},
                {"params": no_decay, "weight_decay": 0},
            ],
            lr=self.peak_lr,
            betas=o.betas,
        )
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(o.warmup_steps))

    @classmethod
    def from_config(
        cls, cfg: TrainConfig, *, show_progress: bool = True, plots: bool = True
    ) -> Trainer:
        """The trainer of ``cfg``: its corpora loaded, the tokenizer built on the training
        texts, and its model (or supernet) created, seeded by ``cfg.seed``."""
        shared = None
        if cfg.supernet is not None:
            assert cfg.space is not None  # TrainConfig checks it
            shared = supernet_space(load_space(cfg.space), cfg.supernet.fixed)
            arch = largest(shared)  # the supernet checkpoint loads as this model
        else:
            arch = cfg.architecture()
        features = feature_config(arch)
        if cfg.features is not None and cfg.features != features:
            raise ValueError(
                f"features: {cfg.features.to_dict()} differ from those of the architecture's "
                f"frontend {arch.get('frontend', 'fbank80')!r} ({features.to_dict()}); drop "
                "`features` or choose the frontend in the architecture"
            )
        data = load_training_data(
            cfg.data, tokenizer=cfg.tokenizer, features=features, augment=cfg.augment,
            seed=cfg.seed,
        )  # fmt: skip
        torch.manual_seed(cfg.seed)
        vocab = data.tokenizer.vocab_size
        model: SpeechModel
        if shared is not None:
            assert cfg.supernet is not None
            model = Supernet(
                shared,
                vocab_size=vocab,
                dropout=cfg.model.dropout,
                random_subnets=cfg.supernet.random_subnets,
                distill=cfg.supernet.distill,
                path_draw=cfg.supernet.path_draw,
                shrink=cfg.supernet.shrink,
                shrink_order=cfg.supernet.shrink_order,
            )
        else:
            model = build(arch, vocab_size=vocab, dropout=cfg.model.dropout)
        return cls(cfg, data=data, model=model, show_progress=show_progress, plots=plots)

    # ----------------------------------------------------------------------------- state
    def meta(self) -> dict[str, Any]:
        extra = {}
        if isinstance(self.model, Supernet):
            extra["supernet"] = {
                "space": self.model.space.to_dict(),
                "random_subnets": self.model.random_subnets,
                "distill": self.model.distill,
                "path_draw": self.model.path_draw,
                "shrink": self.model.shrink,
                "shrink_order": self.model.shrink_order,
            }
        return {
            **extra,
            "model": self.cfg.model.to_dict(),
            "arch": self.arch.to_json(),
            "features": self.features.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "config": self.cfg.to_dict(),
            "seed": self.cfg.seed,
            "peak_lr": self.peak_lr,
            "versions": versions(),
            "step": self.step,
            "epoch": self.sampler.epoch,
            "best_dev_wer": self.best_wer,
            "dmao": self.dmao.report if self.dmao is not None else None,
        }

    def state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "audio_seconds": self.audio_seconds,
            "best_wer": self.best_wer,
            "bad_epochs": self.bad_epochs,
            "history": json.dumps(self.history),
            "marks": json.dumps(self.marks),
            **({"dmao": self.dmao.state_dict()} if self.dmao is not None else {}),
        }

    def save(self) -> None:
        save_checkpoint(self.out / "last", self.model, self.meta(), self.state())

    def try_resume(self) -> bool:
        folder = self.out / "last"
        if not (folder / "state.pt").is_file():
            return False
        from safetensors.torch import load_file

        meta = json.loads((folder / "meta.json").read_text())
        if _resumable(meta["config"]) != _resumable(self.cfg.to_dict()):
            raise ValueError(
                f"{folder} was written by a different config; use another output_dir "
                "or delete it to start afresh (only the budget may change on resume)"
            )
        if meta["arch"] != self.arch.to_json():  # reallocated by DMAO before the kill
            if not (self.dmao is not None and meta.get("dmao")):
                raise ValueError(f"{folder} holds another architecture than this config's")
            self._use_model(build(Arch.from_json(meta["arch"]), vocab_size=self.model.vocab_size,
                                  dropout=self.cfg.model.dropout))  # fmt: skip
            self.optimizer, self.scheduler = self._optimizer(self.model)
        load_plain_state(self.model, load_file(str(folder / "model.safetensors")))
        st = load_state(folder)
        if self.dmao is not None:
            self.dmao.load_state_dict(st["dmao"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.sampler.load_state_dict(st["sampler"])
        self.step = int(st["step"])
        self.train_seconds = float(st["train_seconds"])
        self.audio_seconds = float(st["audio_seconds"])
        self.best_wer = float(st["best_wer"])
        self.bad_epochs = int(st["bad_epochs"])
        self.history = json.loads(st["history"])
        self.marks = json.loads(st["marks"])
        log.info("resumed from %s at epoch %d step %d", folder, self.sampler.epoch, self.step)
        return True

    def _init_from(self, folder: Path) -> None:
        """Starts from the weights (and normalisation) of a checkpoint of the same model."""
        from speechnas.train.checkpoint import load_model

        loaded = load_model(folder)
        mine = self.arch.to_json()
        if loaded.model.arch.to_json() != mine:
            raise ValueError(
                f"init_from: {folder} holds architecture {loaded.meta.get('arch')}, "
                f"not this config's {mine}"
            )
        if loaded.tokenizer.to_dict() != self.tokenizer.to_dict():
            raise ValueError(f"init_from: {folder} was trained with another tokenizer")
        load_plain_state(self.model, plain_state_dict(loaded.model))
        log.info("initialised from %s", folder)

    # ----------------------------------------------------------------------------- loop
    def _train_step(self, indices: list[int]) -> float:
        torch.manual_seed(self.cfg.seed * 1_000_003 + self.step)  # dropout, resumable
        batch = self.train_set.batch(indices)
        if self.cfg.dynamic_chunk is not None:
            self._draw_chunk(self.cfg.dynamic_chunk)
        if isinstance(self.model, Supernet):  # progressive shrinking follows the budget
            self.model.set_progress(
                self.cfg.budget.used(self.step, self.train_seconds, len(self.sampler))
            )
        loss = self.model.loss(batch.feats, batch.feat_lens, batch.tokens, batch.token_lens)
        if self.cfg.dynamic_chunk is not None:  # evaluation sees the architecture's own
            self.model.configure_streaming(chunk=self.model.spec.chunk_size)
        if not torch.isfinite(loss):
            raise Diverged(f"loss is {loss.item()} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_norm)
        if self.dmao is not None:
            self.dmao.observe(self.model, loss.item())
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.audio_seconds += batch.seconds
        return loss.item()

    def _draw_chunk(self, dyn: DynamicChunkConfig) -> None:
        """This step's chunk size and look-ahead, drawn from the seed and the step (resumable)."""
        rng = np.random.default_rng([self.cfg.seed, self.step, 7])
        full = rng.random() < dyn.full_context
        chunk = None if full else int(rng.choice(dyn.chunks))
        lookahead = 0
        if rng.random() < dyn.lookahead:
            lookahead = min(chunk or self.model.spec.lookahead, self.model.spec.lookahead)
        self.model.configure_streaming(chunk=chunk, lookahead=lookahead)

    def _use_model(self, model: SpeechModel) -> None:
        self.model = model
        self.arch = model.arch

    def _reallocate(self) -> None:
        """DMAO's grow-and-drop: the new model, its optimizer with the kept units' state, and
        the allocation report (``dmao.json``, ``dmao.png``) in the output folder."""
        assert self.dmao is not None
        old_model, old_opt, old_sched = self.model, self.optimizer, self.scheduler
        new, remap = self.dmao.reallocate(old_model, step=self.step, seed=self.cfg.seed)
        self._use_model(new)
        self.optimizer, self.scheduler = self._optimizer(new)
        self.scheduler.load_state_dict(old_sched.state_dict())
        carry_optimizer(old_opt, old_model, self.optimizer, new, remap)
        report = self.dmao.report
        assert report is not None
        log.info(
            "DMAO at step %d: %d groups dropped, %d duplicated, %d -> %d parameters",
            self.step, len(report["dropped"]), len(report["duplicated"]),
            report["params_before"], report["params_after"],
        )  # fmt: skip
        (self.out / "dmao.json").write_text(json.dumps(report, indent=1))
        self._plot_dmao()

    def _plot_dmao(self) -> None:
        if self.dmao is not None and self.dmao.report is not None:
            plot_allocation(self.dmao.report, self.dmao.losses, self.out / "dmao.png")

    def evaluate_tests(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, ds in self.test_sets.items():
            ev = evaluate_dataset(self.model, ds)
            out[name] = {**ev.rates.to_dict(), "rtf": ev.rtf}
        return out

    def _budget_left(self) -> bool:
        b = self.cfg.budget
        if b.max_minutes is not None and self.train_seconds >= b.max_minutes * 60:
            return False
        return not (b.max_steps is not None and self.step >= b.max_steps)

    def _check_marks(self) -> None:
        for m in self.cfg.budget.eval_at_minutes:
            done = {x["minutes"] for x in self.marks}
            if m not in done and self.train_seconds >= m * 60:
                results = {"dev": evaluate_dataset(self.model, self.dev_set).rates.to_dict()}
                results.update(self.evaluate_tests())
                self.marks.append({"minutes": m, "step": self.step, "results": results})
                log.info("at %.1f min: %s", m, {k: round(v["wer"], 4) for k, v in results.items()})

    def fit(self, *, resume: bool = True) -> TrainResult:
        cfg = self.cfg
        torch.set_num_threads(cfg.threads)
        torch.use_deterministic_algorithms(True)
        self.out.mkdir(parents=True, exist_ok=True)
        if not (resume and self.try_resume()):
            if cfg.init_from:
                self._init_from(Path(cfg.init_from))
            else:
                self.model.set_cmvn(*_cmvn(self.train_set))
        log.info(
            "training %d parameters on %d utterances (%.1f h), dev %d, tests %s",
            self.model.num_parameters(),
            len(self.train_set),
            sum(self.train_set.durations()) / 3600,
            len(self.dev_set),
            list(self.test_sets),
        )
        stop_reason = "max_epochs"
        last_save = self.train_seconds
        self.model.train()
        while self.sampler.epoch < cfg.budget.max_epochs:
            if not self._budget_left():
                stop_reason = "budget"
                break
            epoch = self.sampler.epoch
            self.train_set.set_epoch(epoch)
            total = len(self.sampler)
            bar = tqdm(
                total=total,
                initial=self.sampler.consumed,
                desc=f"epoch {epoch + 1}",
                disable=not self.show_progress,
                leave=False,
                dynamic_ncols=True,
            )
            losses: list[float] = []
            for indices in self.sampler:
                start = time.perf_counter()
                losses.append(self._train_step(indices))
                if self.dmao is not None and self.dmao.due(
                    self.step, self.train_seconds, cfg.budget, len(self.sampler)
                ):
                    self._reallocate()
                self.train_seconds += time.perf_counter() - start
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", min=f"{self.train_seconds / 60:.1f}")
                self._check_marks()
                if self.train_seconds - last_save >= cfg.budget.checkpoint_every_minutes * 60:
                    self.save()
                    last_save = self.train_seconds
                if not self._budget_left():
                    break
            bar.close()
            epoch_done = self.sampler.epoch > epoch
            if self._end_of_epoch(epoch, losses, complete=epoch_done):
                stop_reason = "early_stopping"
                break
            if not epoch_done:
                stop_reason = "budget"
                break
        if not self.history:  # no step fitted in the budget: score the starting weights
            self._end_of_epoch(self.sampler.epoch, [], complete=False)
        self._check_marks()  # a mark that coincides with the end of the budget
        self.save()
        return self._finish(stop_reason)

    def _end_of_epoch(self, epoch: int, losses: list[float], *, complete: bool) -> bool:
        """Scores dev, keeps the best model, and says whether early stopping fires."""
        ev = evaluate_dataset(self.model, self.dev_set)
        wer = ev.rates.wer
        row = {
            "epoch": epoch + 1,
            "complete": complete,
            "step": self.step,
            "minutes": self.train_seconds / 60,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": self.scheduler.get_last_lr()[0],
            "dev_wer": wer,
            "dev_cer": ev.rates.cer,
        }
        self.history.append(row)
        improved = wer < self.best_wer
        if improved:
            self.best_wer, self.bad_epochs = wer, 0
            save_checkpoint(self.out / "best", self.model, self.meta())
        else:
            self.bad_epochs += 1
        log.info(
            "epoch %d  step %d  %.1f min  loss %.3f  dev WER %.2f%%  CER %.2f%%%s",
            row["epoch"], self.step, row["minutes"], row["loss"], 100 * wer,
            100 * ev.rates.cer, "  (best)" if improved else "",
        )  # fmt: skip
        self.save()
        p = self.cfg.budget.patience
        return p is not None and self.bad_epochs >= p

    def _finish(self, stop_reason: str) -> TrainResult:
        from speechnas.train.checkpoint import load_model

        best = load_model(self.out / "best").model if (self.out / "best").exists() else self.model
        tests = {}
        for name, ds in self.test_sets.items():
            ev = evaluate_dataset(best, ds)
            tests[name] = {**ev.rates.to_dict(), "rtf": ev.rtf}
        result = TrainResult(
            output_dir=self.out,
            best_dev_wer=self.best_wer,
            epochs=self.sampler.epoch,
            steps=self.step,
            train_seconds=self.train_seconds,
            audio_seconds=self.audio_seconds,
            stop_reason=stop_reason,
            parameters=self.model.num_parameters(),
            history=self.history,
            marks=self.marks,
            test=tests,
            skipped=self.skipped,
        )
        payload = {**result.to_dict(), "config": self.cfg.to_dict(), "peak_lr": self.peak_lr,
                   "versions": versions()}  # fmt: skip
        (self.out / "result.json").write_text(json.dumps(payload, indent=1, default=str))
        if self.history and self.plots:
            plot_training(self.history, self.marks, self.out / "training.png")
        self._plot_dmao()  # again, with the loss of every step to the end
        return result
