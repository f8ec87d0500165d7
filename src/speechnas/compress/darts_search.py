"""The two optimisations of differentiable FFN compression: supernet weights, then the
architecture logits (or both alternately), on step budgets.

- :func:`train_weights` (stage 1) fine-tunes the shared weights of every candidate on the
  training data: each step draws one candidate per layer uniformly (as cheap as the plain
  model), or mixes them all with equal weights. Dropout is on; its generator is seeded per step
  inside :func:`torch.random.fork_rng`, so the global RNG is left as it was.
- :func:`train_arch` (stage 2) freezes the weights and fits the logits on the dev data to
  ``CTC + η · E[FFN params] / fp32 FFN params``, mixing the candidates with a Gumbel-softmax
  sample whose temperature decays exponentially from ``tau0`` to ``tau_min`` (or with the plain
  softmax of DARTS). The model runs in eval mode: with the weights frozen, dropout noise would
  only blur the comparison between candidates. The penalty uses the noise-free probabilities.
- :func:`train_joint` alternates one weight step (train data, current mixture detached) and
  one architecture step (dev data), first-order DARTS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from speechnas.compress.darts_config import DartsConfig
from speechnas.compress.darts_supernet import DartsSupernet
from speechnas.data.dataset import Batch, SpeechDataset
from speechnas.data.sampler import DurationBatchSampler

__all__ = ["BatchStream", "entropy", "tau_at", "train_arch", "train_joint", "train_weights"]

log = logging.getLogger(__name__)
_LOG_EVERY = 25


class BatchStream:
    """Endless batches of a dataset: the duration-bucketed sampler's epochs one after another,
    the dataset's augmentation following the epoch (as the trainer does)."""

    def __init__(self, dataset: SpeechDataset, *, max_seconds: float, seed: int) -> None:
        self.dataset = dataset
        self.sampler = DurationBatchSampler(dataset.durations(), max_seconds=max_seconds, seed=seed)
        self._it: Any = None

    def next(self) -> Batch:
        for _ in range(2):
            if self._it is None:
                self.dataset.set_epoch(self.sampler.epoch)
                self._it = iter(self.sampler)
            indices = next(self._it, None)
            if indices is not None:
                return self.dataset.batch(indices)
            self._it = None  # the sampler moved on to its next epoch
        raise ValueError("BatchStream: the dataset yields no batches (is it empty?)")


def tau_at(cfg: DartsConfig, step: int, steps: int) -> float:
    """The Gumbel temperature of architecture step ``step`` of ``steps``: tau0 → tau_min."""
    if steps <= 1:
        return cfg.tau0
    return cfg.tau0 * (cfg.tau_min / cfg.tau0) ** (step / (steps - 1))


def _loss(net: DartsSupernet, batch: Batch) -> torch.Tensor:
    return net.model.loss(batch.feats, batch.feat_lens, batch.tokens, batch.token_lens)


class _WeightStepper:
    """AdamW over the supernet weights, with clipping and the periodic projection."""

    def __init__(self, net: DartsSupernet, cfg: DartsConfig, clip_norm: float) -> None:
        self.net, self.cfg, self.clip = net, cfg, clip_norm
        self.params = net.weight_parameters()
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr_weights, weight_decay=0.0)
        self.steps = 0

    def __call__(self, batch: Batch) -> float:
        net = self.net
        net.train()
        for p in self.params:
            p.requires_grad_(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed * 1_000_003 + self.steps)  # dropout only
            loss = _loss(net, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"darts: weight loss is {loss.item()} at step {self.steps}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        self.steps += 1
        if self.cfg.semi_orthogonal and self.steps % self.cfg.projection_period == 0:
            net.project_semi_orthogonal()
        return float(loss.detach())


class _ArchStepper:
    """Adam over the logits with the weights frozen; returns the step's numbers."""

    def __init__(self, net: DartsSupernet, cfg: DartsConfig, steps: int) -> None:
        self.net, self.cfg, self.total = net, cfg, steps
        self.opt = torch.optim.Adam([net.alpha], lr=cfg.lr_arch, betas=(0.5, 0.999))
        self.gen = torch.Generator().manual_seed(cfg.seed * 7919 + 1)
        self.steps = 0

    def __call__(self, batch: Batch) -> dict[str, float]:
        net, cfg = self.net, self.cfg
        net.eval()
        for p in net.weight_parameters():
            p.requires_grad_(False)
        tau = tau_at(cfg, self.steps, self.total)
        net.set_mix(net.mixing_weights(gumbel=cfg.gumbel, tau=tau, generator=self.gen))
        ctc = _loss(net, batch)
        penalty = net.penalty(net.probabilities())
        loss = ctc + cfg.eta * penalty
        if not torch.isfinite(loss):
            raise FloatingPointError(f"darts: arch loss is {loss.item()} at step {self.steps}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        return {
            "step": self.steps,
            "ctc": float(ctc.detach()),
            "penalty": float(penalty.detach()),
            "tau": tau,
        }


def train_weights(
    net: DartsSupernet,
    stream: BatchStream,
    cfg: DartsConfig,
    *,
    clip_norm: float = 5.0,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """Stage 1: ``cfg.weight_steps`` weight steps; returns the mean loss every 25 steps."""
    step = _WeightStepper(net, cfg, clip_norm)
    gen = torch.Generator().manual_seed(cfg.seed * 7919)
    history: list[dict[str, float]] = []
    losses: list[float] = []
    for i in range(cfg.weight_steps):
        if cfg.weight_training == "uniform":
            net.set_mix(net.uniform())
        else:
            net.set_mix(net.one_hot(net.sample(gen)))
        losses.append(step(stream.next()))
        if (i + 1) % _LOG_EVERY == 0 or i + 1 == cfg.weight_steps:
            history.append({"step": i + 1, "loss": sum(losses) / len(losses)})
            log.info("darts weights: step %d loss %.3f", i + 1, history[-1]["loss"])
            losses = []
        if progress is not None:
            progress()
    if cfg.semi_orthogonal and cfg.weight_steps:
        net.project_semi_orthogonal()
    return history


def _summarise(rows: list[dict[str, float]], step: int) -> dict[str, float]:
    keys = [k for k in rows[0] if k not in ("step", "tau")]
    out = {"step": float(step), "tau": rows[-1]["tau"]}
    out.update({k: sum(r[k] for r in rows) / len(rows) for k in keys})
    return out


def train_arch(
    net: DartsSupernet,
    stream: BatchStream,
    cfg: DartsConfig,
    *,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """Stage 2: ``cfg.arch_steps`` logit steps on ``stream`` (dev) with the weights frozen;
    returns mean CTC loss and penalty every 25 steps."""
    step = _ArchStepper(net, cfg, cfg.arch_steps)
    history: list[dict[str, float]] = []
    rows: list[dict[str, float]] = []
    for i in range(cfg.arch_steps):
        rows.append(step(stream.next()))
        if (i + 1) % _LOG_EVERY == 0 or i + 1 == cfg.arch_steps:
            history.append(_summarise(rows, i + 1))
            _log_arch(net, history[-1])
            rows = []
        if progress is not None:
            progress()
    return history


def train_joint(
    net: DartsSupernet,
    train: BatchStream,
    dev: BatchStream,
    cfg: DartsConfig,
    *,
    clip_norm: float = 5.0,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """Joint: ``cfg.arch_steps`` rounds of one weight step (train) and one arch step (dev)."""
    wstep = _WeightStepper(net, cfg, clip_norm)
    astep = _ArchStepper(net, cfg, cfg.arch_steps)
    history: list[dict[str, float]] = []
    rows: list[dict[str, float]] = []
    for i in range(cfg.arch_steps):
        tau = tau_at(cfg, i, cfg.arch_steps)
        with torch.no_grad():
            mix = net.mixing_weights(gumbel=cfg.gumbel, tau=tau, generator=astep.gen)
        net.set_mix(mix)
        weight_loss = wstep(train.next())
        rows.append({**astep(dev.next()), "weight_loss": weight_loss})
        if (i + 1) % _LOG_EVERY == 0 or i + 1 == cfg.arch_steps:
            history.append(_summarise(rows, i + 1))
            _log_arch(net, history[-1])
            rows = []
        if progress is not None:
            progress()
    if cfg.semi_orthogonal:
        net.project_semi_orthogonal()
    return history


def _log_arch(net: DartsSupernet, row: dict[str, float]) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    choice = [net.candidates[c].label() for c in net.argmax()]
    share = float(net.penalty(net.probabilities().detach()))
    log.info(
        "darts arch: step %d ctc %.3f expected FFN size %.1f%% tau %.2f argmax %s",
        int(row["step"]), row["ctc"], 100 * share, row["tau"], choice,
    )  # fmt: skip


def entropy(probs: torch.Tensor) -> list[float]:
    """Per layer the entropy (nats) of its choice probabilities (L, C)."""
    p = probs.clamp_min(1e-12)
    return [float(-(r * p_.log()).sum()) for r, p_ in zip(probs, p, strict=True)]
