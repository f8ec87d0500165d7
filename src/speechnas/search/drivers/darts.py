"""Differentiable compression as a search (the driver of ``strategy: {name: darts}``).

The search's one seed architecture is trained at the top rung's budget (trial 0, an ordinary
trial); then :func:`speechnas.compress.darts.darts_front` searches every layer's feed-forward
width and low-rank bottleneck on that checkpoint with a Gumbel-softmax (or softmax) mixture,
pipelined (weights, then architecture logits on dev with the weights frozen) or joint, once per
size penalty η of ``etas`` (stage 1 is shared by the sweep). Each η's argmax architecture is an
ordinary ``Arch``: it is fine-tuned from its inherited weights for ``finetune_steps`` (or
``finetune_minutes``), scored on the search test set, measured on the target, and recorded as a
trial of the same study with its η and per-layer choice. So the front, plots, selection,
retraining (from the fine-tuned weights) and export are those of every strategy, and the
compressed models sit beside the seed they came from.

A killed search resumes: the seed's trial and each finished η are kept; the compression runs
again only for what is missing (its stage 1 is cheap next to the trainings).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from speechnas.search.drivers.base import Driver, parse_options, trained_weights
from speechnas.search.measure import measure_on_target
from speechnas.search.objectives import PREDICTED_METRICS, is_hardware_target, latency_model
from speechnas.search.record import guarded, open_trial, record_metrics
from speechnas.search.study import INTERRUPTED, SearchStudy, set_attrs
from speechnas.search.tasks import AsrTrials
from speechnas.search.trial import Fidelity, run_trial
from speechnas.space import Arch, SearchSpace, load_space

if TYPE_CHECKING:
    from speechnas.compress.darts import DartsResult
    from speechnas.compress.darts_config import DartsConfig
    from speechnas.search.config import SearchConfig
    from speechnas.search.progress import Progress
    from speechnas.search.select import Result
    from speechnas.train.config import TrainConfig

_FFN_ENCODERS = ("conformer", "transformer", "ebranchformer")


@dataclass(frozen=True, slots=True)
class DartsOptions:
    """``strategy.options`` of ``strategy: {name: darts}``; the compression's own settings
    are those of :class:`speechnas.compress.darts_config.DartsConfig`."""

    etas: tuple[float, ...] = (1.0, 5.0)  # the size penalties swept: one trial each
    darts: dict[str, Any] = field(default_factory=dict)  # DartsConfig fields (not eta/seed)
    finetune_minutes: float = 1.0
    finetune_steps: int | None = None
    # Peak learning rate of the fine-tuning (after 10 warm-up steps); None: the recipe's
    finetune_lr: float | None = None

    def __post_init__(self) -> None:
        etas = self.etas
        if not isinstance(etas, tuple | list) or not etas:
            raise ValueError(f"strategy.options.etas: expected a list of η >= 0, got {etas!r}")
        for eta in etas:
            if isinstance(eta, bool) or not isinstance(eta, int | float) or eta < 0:
                raise ValueError(f"strategy.options.etas: {eta!r} is not a number >= 0")
        if len(set(etas)) != len(etas):
            raise ValueError(f"strategy.options.etas: {list(etas)} repeats a value")
        for name in ("eta", "seed"):
            if name in self.darts:
                raise ValueError(
                    f"strategy.options.darts.{name}: set by the search (etas, seed), not here"
                )
        v = self.finetune_minutes
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ValueError(f"strategy.options.finetune_minutes: expected >= 0, got {v!r}")
        s = self.finetune_steps
        if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise ValueError(
                f"strategy.options.finetune_steps: expected an integer >= 1, got {s!r}"
            )
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            raise ValueError(
                f"strategy.options.finetune_lr: expected > 0, got {self.finetune_lr!r}"
            )
        self.config(self.etas[0], 0)  # a bad compression setting is named here

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> DartsOptions:
        values = dict(options)
        if isinstance(values.get("etas"), list):  # YAML gives lists
            values["etas"] = tuple(values["etas"])
        return parse_options(cls, values, "darts")

    def config(self, eta: float, seed: int) -> DartsConfig:
        from speechnas.compress.darts_config import DartsConfig

        try:
            return DartsConfig.from_dict({**self.darts, "eta": float(eta), "seed": seed})
        except (TypeError, ValueError) as e:
            raise ValueError(f"strategy.options.darts: {e}") from None


def tuning_config(base: TrainConfig, opts: DartsOptions) -> TrainConfig:
    """How a compressed architecture is fine-tuned (and the selection retrained): from its
    inherited weights, at ``finetune_lr`` (default the recipe's) after at most 10 warm-up
    steps, without validation against the space (an extracted architecture may lie outside
    it)."""
    recipe = base.optim
    return base.replace(
        space=None,
        optim=recipe.fixed(opts.finetune_lr, warmup_steps=min(recipe.warmup_steps, 10)),
    )


def darts_setup(cfg: SearchConfig) -> tuple[DartsOptions, SearchSpace, Arch]:
    """The options, the space and the seed architecture to compress; a ValueError naming what
    does not fit (no seed or several, a seed without feed-forward layers) before any work."""
    opts = DartsOptions.from_options(cfg.strategy.options)
    space = load_space(cfg.space)
    seeds = cfg.seed_archs(space)
    if len(seeds) != 1:
        raise ValueError(
            f"seeds: the darts strategy compresses one architecture, got {len(seeds)}; give it "
            "as `seeds: [PRESET]` or `seeds: [{...architecture...}]`"
        )
    (seed,) = seeds
    if seed.get("encoder") not in _FFN_ENCODERS:
        raise ValueError(
            f"seeds[0]: encoder {seed.get('encoder')!r} has no feed-forward layers to compress; "
            f"the darts strategy takes one of {list(_FFN_ENCODERS)}"
        )
    return opts, space, seed


def _done(ss: SearchStudy) -> dict[str, Any]:
    """Finished trials by slot (interrupted ones are run again)."""
    from optuna.trial import TrialState

    return {
        t.user_attrs.get("slot"): t
        for t in ss.trials()
        if t.state == TrialState.COMPLETE
        or (t.state == TrialState.FAIL and t.user_attrs.get("status") != INTERRUPTED)
    }


def _train(
    cfg: SearchConfig,
    ss: SearchStudy,
    task: AsrTrials,
    number: int,
    arch: Arch,
    base: TrainConfig,
    fid: Fidelity,
    out: Path,
    extra: Mapping[str, Any],
) -> str:
    """Trains (or fine-tunes, per ``base.init_from``) ``arch`` as trial ``number``; the
    metrics known before training (params, MACs, predicted latency) come from ``task``."""
    set_attrs(ss, number, {"output_dir": str(out)})
    metrics = {
        **task.predicted(arch),
        **run_trial(arch, base=base, fidelity=fid, output_dir=out, seed=cfg.seed),
    }
    if is_hardware_target(cfg.target):  # a real target: export and time the model
        metrics.update(measure_on_target(out / "best", cfg))
    return record_metrics(
        ss, number, cfg, {**metrics, **extra}, predicted=PREDICTED_METRICS,
        checkpoint=str(out / "best"),
    )  # fmt: skip


def run_darts(
    cfg: SearchConfig,
    ss: SearchStudy,
    base: TrainConfig,
    *,
    vocab_size: int,
    console: Console,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The whole compression search into ``ss``; returns its summary (also written to
    ``darts/summary.json`` and the study's user attributes). ``progress`` shows each trial
    as it ends."""
    from speechnas.compress.darts import darts_front

    opts, space, seed = darts_setup(cfg)
    task = AsrTrials(vocab_size, latency_model(cfg.target), cfg.latency_seconds)
    out = Path(cfg.output_dir)
    done = _done(ss)
    top = cfg.fidelity.rungs[-1].fidelity()
    seed_dir = out / "trials" / f"0000-darts-seed-{seed.hash()[:8]}"
    if "darts-seed" not in done:
        console.print(f"darts: training the seed {seed.hash()[:8]} at the top rung's budget")
        number = open_trial(
            ss, space, seed, cfg=cfg, fidelity=top, worker="darts", slot="darts-seed",
            bracket=0, rung=0, position=0,
        )  # fmt: skip
        guarded(ss, number, functools.partial(_train, cfg, ss, task, number, seed, base, top,
                                              seed_dir, {}))  # fmt: skip
        if progress is not None:
            progress.update(ss)
    checkpoint = seed_dir / "best"
    if not (checkpoint / "meta.json").is_file():
        raise RuntimeError(f"darts: the seed's training left no checkpoint in {checkpoint}")
    todo = [eta for eta in opts.etas if f"darts-eta{eta:g}" not in _done(ss)]
    results: list[DartsResult] = []
    if todo:
        configs = [opts.config(eta, cfg.seed) for eta in todo]
        console.print(
            f"darts: {'Gumbel-softmax' if configs[0].gumbel else 'softmax'} compression of the "
            f"seed's feed-forward layers, {configs[0].schedule}, η {[f'{e:g}' for e in todo]}"
        )
        results = darts_front(checkpoint, out / "darts", configs,
                              data=base.data)  # fmt: skip
    tune_base = tuning_config(base, opts)
    lr = tune_base.optim.lr
    fid = Fidelity(opts.finetune_minutes, 1.0, opts.finetune_steps)
    for k, (eta, res) in enumerate(zip(todo, results, strict=True), start=1):
        arch = Arch.from_json(res.arch)
        extra = {"darts_eta": float(eta),
                 "darts_ffn_params_ratio": res.params.get("ffn_ratio", float("nan"))}  # fmt: skip
        number = open_trial(
            ss, space, arch, cfg=cfg, fidelity=fid, worker="darts", slot=f"darts-eta{eta:g}",
            bracket=0, rung=0, position=k, eta=float(eta), darts_choice=res.choice,
            darts_output=res.output_dir,
        )  # fmt: skip
        trial_dir = out / "trials" / f"{number:04d}-darts-eta{eta:g}-{arch.hash()[:8]}"
        tuned = tune_base.replace(init_from=str(Path(res.output_dir) / "model"))
        guarded(ss, number, functools.partial(_train, cfg, ss, task, number, arch, tuned, fid,
                                              trial_dir, extra))  # fmt: skip
        if progress is not None:
            progress.update(ss)
        console.print(
            f"darts η={eta:g}: {arch.hash()[:8]}, FFN widths "
            f"{[c['ffn_dim'] for c in res.choice]}, ranks {[c['ffn_lowrank'] for c in res.choice]}"
        )
    summary = {
        "seed": seed.hash(),
        "etas": list(opts.etas),
        "runs": {f"{eta:g}": {"output_dir": r.output_dir, "params": r.params,
                              "seconds": r.seconds} for eta, r in zip(todo, results, strict=True)},
        "finetune_lr": lr,
    }  # fmt: skip
    earlier = ss.study.user_attrs.get("darts") or {}
    summary["runs"] = {**earlier.get("runs", {}), **summary["runs"]}
    ss.study.set_user_attr("darts", summary)
    (out / "darts").mkdir(parents=True, exist_ok=True)
    (out / "darts" / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


class Darts(Driver):
    """Differentiable FFN compression of the search's seed, one trial per η (see the module
    docstring)."""

    name = "darts"
    strategies = ("darts",)

    def __init__(self, cfg: SearchConfig) -> None:
        super().__init__(cfg)
        self.summary: dict[str, Any] | None = None

    def setup(self) -> SearchSpace:
        _, space, _ = darts_setup(self.cfg)
        return space

    def trial_budget(self) -> int | None:
        return 1 + len(DartsOptions.from_options(self.cfg.strategy.options).etas)

    def budgets_in_minutes(self) -> bool:
        return True  # its own trainings (the options') may stop on the clock

    def header(self) -> str:
        etas = DartsOptions.from_options(self.cfg.strategy.options).etas
        return f"differentiable FFN compression of the seed, η {[f'{e:g}' for e in etas]}"

    def run(
        self,
        ss: SearchStudy,
        base: TrainConfig,
        *,
        vocab_size: int,
        progress: Progress,
        deadline: float | None,
        console: Console,
    ) -> None:
        self.summary = run_darts(
            self.cfg, ss, base, vocab_size=vocab_size, console=console, progress=progress
        )

    def retrain_config(self, base: TrainConfig) -> TrainConfig:
        """Retraining continues from the selection's weights at the fine-tuning's rate; a
        compressed architecture (low-rank FFNs, widths of the trained ones) may lie outside
        the space, so the space does not validate it."""
        return tuning_config(base, DartsOptions.from_options(self.cfg.strategy.options))

    def init_from(self, selected: Result) -> str | None:
        """The selection's retraining continues from its trained (or fine-tuned) weights."""
        return trained_weights(selected)


__all__ = ["Darts", "DartsOptions", "darts_setup", "run_darts", "tuning_config"]
