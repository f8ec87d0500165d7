"""What a trial does for each task, behind one small contract the worker pool calls.

The pool (:mod:`speechnas.search.drivers.pool`) claims slots, checks candidates against the
constraints, reuses evaluations and records results the same way for every task; only these
four steps differ between speech recognisers (``asr``) and text-to-speech acoustic models
(``tts``, :mod:`speechnas.search.tts`):

``check_builds(arch)``
    builds the model and runs it once on a tiny input (raises what the model raises);
``predicted(arch)``
    the metrics known before training (``params``, ``macs``, ``memory``, ``latency``...);
``run_trial(arch, base=..., fidelity=..., output_dir=..., seed=..., resume_from=...)``
    trains and measures, returning the trial's metrics;
``trained_attrs(output_dir)``
    extra trial attributes read from the trained folder; ``checkpoint`` names its model folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from speechnas.search.objectives import (
    LatencyModel,
    check_builds,
    latency_model,
    predicted_metrics,
)
from speechnas.search.trial import Fidelity, reallocated_arch, run_trial

if TYPE_CHECKING:
    from speechnas.search.config import SearchConfig
    from speechnas.space import Arch


class TrialTask(Protocol):
    checkpoint: str  # the model folder inside a trial's output folder
    measured: bool  # whether ``predicted`` measures latency (else it predicts it)

    def check_builds(self, arch: Arch) -> None: ...

    def predicted(self, arch: Arch) -> dict[str, float]: ...

    def run_trial(
        self,
        arch: Arch,
        *,
        base: Any,
        fidelity: Fidelity,
        output_dir: Path,
        seed: int,
        resume_from: str | Path | None = None,
    ) -> dict[str, Any]: ...

    def trained_attrs(self, output_dir: Path) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AsrTrials:
    """Speech recognisers: :func:`speechnas.search.trial.run_trial`, latency from ``latency``."""

    vocab_size: int
    latency: LatencyModel
    seconds: float
    checkpoint: str = "best"

    @property
    def measured(self) -> bool:
        return self.latency.measured

    def check_builds(self, arch: Arch) -> None:
        check_builds(arch, self.vocab_size)

    def predicted(self, arch: Arch) -> dict[str, float]:
        return predicted_metrics(
            arch, vocab_size=self.vocab_size, latency=self.latency, seconds=self.seconds
        )

    def run_trial(self, arch: Arch, **kwargs: Any) -> dict[str, Any]:
        return run_trial(arch, **kwargs)

    def trained_attrs(self, output_dir: Path) -> dict[str, Any]:
        return reallocated_arch(output_dir)


def trials_for(cfg: SearchConfig, vocab_size: int) -> TrialTask:
    """The trial steps of ``cfg.task`` (``vocab_size``: the tokenizer's, or the phonemes')."""
    if cfg.task == "tts":
        from speechnas.search.tts import TtsTrials

        return TtsTrials.create(cfg, vocab_size)
    return AsrTrials(vocab_size, latency_model(cfg.target), cfg.latency_seconds)


__all__ = ["AsrTrials", "TrialTask", "trials_for"]
