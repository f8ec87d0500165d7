"""One trial: train an architecture at a fidelity and measure it.

The same function serves the search, the retraining of its selection and the tabular benchmark,
so every number in a study comes out of one code path.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechnas.evaluate.streaming import emission_delays
from speechnas.nn.cost import analytic_macs, count_parameters
from speechnas.nn.spec import decode
from speechnas.space import Arch
from speechnas.train.config import TrainConfig
from speechnas.train.trainer import Trainer


@dataclass(frozen=True, slots=True)
class Fidelity:
    """How much training a trial gets: wall-clock minutes on a share of the training data.

    ``steps``, when set, also caps the optimizer steps (a total counted from the start of
    training, so a promoted trial's steps include those of its lower rung). Minutes depend on
    the machine's speed; a step budget does not, which makes small runs reproducible.
    """

    minutes: float
    fraction: float = 1.0
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.minutes <= 0:
            raise ValueError(f"fidelity.minutes: expected > 0, got {self.minutes!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fidelity.fraction: {self.fraction!r} is not in (0, 1]")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"fidelity.steps: expected >= 1 or None, got {self.steps!r}")

    @property
    def label(self) -> str:
        steps = "" if self.steps is None else f",{self.steps}steps"
        return f"{self.minutes:g}min@{self.fraction:g}{steps}"

    def to_dict(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)


def trial_config(
    arch: Arch, *, base: TrainConfig, fidelity: Fidelity, output_dir: Path, seed: int
) -> TrainConfig:
    """``base`` with the architecture, the fidelity's budget and data share, and the seed."""
    budget = dataclasses.replace(
        base.budget,
        max_minutes=fidelity.minutes,
        max_steps=fidelity.steps if fidelity.steps is not None else base.budget.max_steps,
        eval_at_minutes=(),
        checkpoint_every_minutes=1e9,
    )
    return base.replace(
        arch=arch.to_json(),
        seed=seed,
        output_dir=str(output_dir),
        budget=budget,
        data=dataclasses.replace(base.data, fraction=fidelity.fraction),
    )


def run_trial(
    arch: Arch,
    *,
    base: TrainConfig,
    fidelity: Fidelity,
    output_dir: str | Path,
    seed: int,
    resume_from: str | Path | None = None,
    show_progress: bool = False,
    plots: bool = False,
) -> dict[str, Any]:
    """Trains ``arch`` for ``fidelity`` and returns its metrics.

    ``resume_from`` is the output folder of the same architecture at a lower fidelity with the
    same data share: training continues from its last checkpoint instead of starting afresh
    (successive halving then costs only the extra minutes). ``plots``: draw the training
    curves (``training.png``); a search's trials skip them, their ``result.json`` has the
    curves. Metrics: ``dev_wer``, ``wer:NAME``,
    ``cer:NAME`` and ``rtf:NAME`` per test set (PyTorch eager, the training threads),
    ``params``, ``macs`` (one 5-second utterance), ``train_minutes``, ``steps``, ``stop_reason``,
    ``peak_lr`` (the peak learning rate it trained at, see ``optim.lr_scale``).
    Raises :class:`speechnas.train.trainer.Diverged` when the loss stops being finite.
    """
    out = Path(output_dir)
    if resume_from is not None and not (out / "last").exists():
        src = Path(resume_from) / "last"
        if src.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, out / "last")
            if (Path(resume_from) / "best").is_dir():
                shutil.copytree(Path(resume_from) / "best", out / "best")
    cfg = trial_config(arch, base=base, fidelity=fidelity, output_dir=out, seed=seed)
    trainer = Trainer.from_config(cfg, show_progress=show_progress, plots=plots)
    result = trainer.fit(resume=True)
    vocab = trainer.tokenizer.vocab_size
    final = trainer.arch  # differs from ``arch`` after a DMAO reallocation
    metrics: dict[str, Any] = {
        "dev_wer": result.best_dev_wer,
        "params": count_parameters(final, vocab_size=vocab),
        "macs": analytic_macs(final, vocab_size=vocab).total,
        "train_minutes": result.train_seconds / 60,
        "steps": result.steps,
        "stop_reason": result.stop_reason,
        "peak_lr": trainer.peak_lr,
    }
    for name, rates in result.test.items():
        metrics[f"wer:{name}"] = rates["wer"]
        metrics[f"cer:{name}"] = rates["cer"]
        metrics[f"rtf:{name}"] = rates["rtf"]
    if decode(final).streaming:
        metrics.update(_streaming_metrics(trainer, metrics))
    return metrics


def _streaming_metrics(trainer: Trainer, metrics: dict[str, Any]) -> dict[str, Any]:
    """A streaming model's streaming WERs (those of its chunk-masked evaluation, which computes
    the streamed frames exactly), and its emission delay on dev (greedy CTC, or a hybrid's CTC
    head; none for a transducer)."""
    out: dict[str, Any] = {"stream_dev_wer": metrics["dev_wer"]}
    for key in [k for k in metrics if k.startswith("wer:")]:
        out[f"stream_{key}"] = metrics[key]
    model = trainer.model
    if model.spec.decoder != "rnnt":
        _, last = emission_delays(model, trainer.dev_set)
        out["emission_delay"] = last.mean
    return out


def reallocated_arch(output_dir: str | Path) -> dict[str, Any]:
    """``{"arch_trained": JSON}`` when a DMAO training changed the architecture of the trial's
    last checkpoint (a user attribute of the trial), else ``{}``."""
    meta = Path(output_dir) / "last" / "meta.json"
    if not meta.is_file():
        return {}
    saved = json.loads(meta.read_text())
    return {"arch_trained": saved["arch"]} if saved.get("dmao") else {}


__all__ = ["Fidelity", "reallocated_arch", "run_trial", "trial_config"]
