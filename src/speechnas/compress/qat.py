"""Quantization-aware training: a trained float model fine-tuned with its weights fake-quantized.

The model is rebuilt from its checkpoint, every sub-module gets its bit width
(:func:`speechnas.nn.quant.apply_bits`), and the ordinary :class:`~speechnas.train.trainer.Trainer`
trains it from the checkpoint's weights with the checkpoint's own data, tokenizer and
augmentation, for a step budget at a small learning rate. The straight-through estimator lets
the latent float weights move while the forward pass sees only quantized ones. The result is an
ordinary checkpoint folder whose weights are stored on their grid with their widths in
``meta.json`` (``bits``), so it scores, exports and transcribes like any other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from speechnas.data.loading import load_training_data
from speechnas.nn.build import build, feature_config
from speechnas.nn.quant import apply_bits
from speechnas.space.arch import Arch
from speechnas.train.config import BudgetConfig, TrainConfig, config_from_dict
from speechnas.train.trainer import Trainer, TrainResult

__all__ = ["checkpoint_config", "qat"]


def checkpoint_config(checkpoint: str | Path) -> TrainConfig:
    """The training config a checkpoint was trained with, its architecture made explicit."""
    meta_path = Path(checkpoint) / "meta.json"
    if not meta_path.is_file():
        raise ValueError(f"{checkpoint} is not a speechnas checkpoint: meta.json is missing")
    meta = json.loads(meta_path.read_text())
    if "config" not in meta or meta.get("arch") is None:
        raise ValueError(f"{meta_path}: holds no training config or architecture")
    return config_from_dict(meta["config"]).replace(arch=meta["arch"], supernet=None, space=None)


def qat(
    checkpoint: str | Path,
    bits: Mapping[str, int],
    output_dir: str | Path,
    *,
    steps: int = 300,
    lr: float = 5e-4,
    warmup_steps: int = 10,
    seed: int = 0,
    threads: int | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Fine-tunes ``checkpoint`` for ``steps`` steps with its sub-modules at ``bits`` (name ->
    width; names left out stay float); the quantized model is ``output_dir/best``. A rerun
    with the same arguments resumes from ``output_dir/last``."""
    if steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps}")
    base = checkpoint_config(checkpoint)
    cfg = base.replace(
        seed=seed,
        output_dir=str(output_dir),
        init_from=str(checkpoint),
        threads=threads if threads is not None else base.threads,
        optim=base.optim.fixed(lr, warmup_steps=warmup_steps),
        budget=BudgetConfig(max_steps=steps, patience=None, checkpoint_every_minutes=2.0),
    )
    arch = Arch.from_json(cfg.arch)
    data = load_training_data(
        cfg.data, tokenizer=cfg.tokenizer, features=feature_config(arch), augment=cfg.augment,
        seed=cfg.seed,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = build(arch, vocab_size=data.tokenizer.vocab_size, dropout=cfg.model.dropout)
    apply_bits(model, bits)  # before the optimiser sees the (latent) weights
    trainer = Trainer(cfg, data=data, model=model, show_progress=show_progress)
    return trainer.fit(resume=True)
