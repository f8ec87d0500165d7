"""One-shot search (the driver of ``strategy: {name: oneshot}``): train a weight-sharing
supernet once, search its paths by inherited weights, then fine-tune and measure the best paths
for real as ordinary trials of the study.

1. The supernet (:class:`speechnas.nn.supernet.Supernet`) over the search space's elastic
   subspace trains for ``supernet_minutes`` by the sandwich rule with in-place distillation;
   the training is resumable (``output_dir/supernet``).
2. An evolutionary strategy of the engine (NSGA-II by default) proposes paths. Each is checked
   against the hard limits with the predicted metrics first (latency from the target's
   predictor), so a path over a limit costs nothing; the rest are scored by their inherited
   weights on a subset of dev. Error-rate objectives are scored as that inherited dev error;
   latency, params, MACs and memory are the predicted values. Every scored path is appended to
   ``oneshot/candidates.jsonl``, so a killed search resumes without scoring any path twice.
3. ``finalists`` paths of the inherited front (spread by crowding distance) are extracted as
   plain models, fine-tuned for ``finetune_minutes`` (0: none; the learning rate continues from
   where the supernet's schedule ended) and scored on the search test set
   like any trial: they become the study's trials, so the front, plots, selection, retraining
   (which continues from the fine-tuned weights) and export are those of every strategy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from speechnas.search.config import SearchConfig
from speechnas.search.drivers.base import Driver, parse_options, trained_weights
from speechnas.search.measure import measure_on_target
from speechnas.search.objectives import (
    CARRIED_METRICS,
    PREDICTED_METRICS,
    Scalarizer,
    is_error_rate,
    is_hardware_target,
    latency_model,
    objective_kind,
    predicted_metrics,
    violations,
)
from speechnas.search.pareto import crowding_distance, non_dominated_sort
from speechnas.search.record import guarded, open_trial, record_metrics
from speechnas.search.strategies import (
    Observation,
    Strategy,
    is_multi_objective,
    make_strategy,
)
from speechnas.search.study import INTERRUPTED, SearchStudy, set_attrs
from speechnas.search.trial import Fidelity, run_trial
from speechnas.space import SAMPLE_BY, Arch, SearchSpace, load_space
from speechnas.train.config import SHRINK_ORDERS, SupernetConfig, TrainConfig

if TYPE_CHECKING:
    from speechnas.search.progress import Progress
    from speechnas.search.select import Result

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OneShotOptions:
    """``strategy.options`` of ``strategy: {name: oneshot}``."""

    supernet_minutes: float = 6.0  # training of the supernet (wall-clock minutes)
    supernet_steps: int | None = None  # an optional step cap (tests; reproducible runs)
    threads: int = 2  # torch threads for the supernet, the scoring and the fine-tuning
    random_subnets: int = 2  # sandwich rule: random paths per step besides largest/smallest
    path_draw: str = "choice"  # how those are drawn: per choice, or uniform over the paths
    shrink: float = 0.0  # progressive shrinking over this share of the supernet's budget
    shrink_order: str = "together"  # every choice at once, or staged: kernel, depth, width
    distill: float = 0.5  # weight of in-place distillation for the smaller paths
    fixed: dict[str, Any] = field(default_factory=dict)  # values of the non-elastic choices
    inner: str = "nsga2"  # the strategy proposing paths
    inner_options: dict[str, Any] = field(default_factory=lambda: {"population_size": 12})
    evaluations: int = 200  # paths proposed (those over a hard limit are not scored)
    dev_utterances: int = 150  # the dev subset inherited weights are scored on (0 = all)
    finalists: int = 4  # paths fine-tuned and measured as trials
    finetune_minutes: float = 0.5
    finetune_steps: int | None = None
    # Peak learning rate of the fine-tuning (after 10 warm-up steps); None: the rate the
    # supernet ended with, so fine-tuning continues its schedule rather than restarting it.
    finetune_lr: float | None = None

    def __post_init__(self) -> None:
        positive = ("supernet_minutes", "threads", "evaluations", "finalists")
        for name in positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ValueError(f"strategy.options.{name}: expected > 0, got {v!r}")
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            raise ValueError(
                f"strategy.options.finetune_lr: expected > 0, got {self.finetune_lr!r}"
            )
        for name in ("dev_utterances", "finetune_minutes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"strategy.options.{name}: expected >= 0, got {v!r}")
        if self.inner == "oneshot":
            raise ValueError("strategy.options.inner: a strategy other than oneshot")
        if self.path_draw not in SAMPLE_BY:
            raise ValueError(
                f"strategy.options.path_draw: {self.path_draw!r} is not one of {list(SAMPLE_BY)}"
            )
        if isinstance(self.shrink, bool) or not 0.0 <= self.shrink < 1.0:
            raise ValueError(
                f"strategy.options.shrink: {self.shrink!r} is not in [0, 1) (the share of the "
                "supernet's budget over which its paths open up; 0 for none)"
            )
        if self.shrink_order not in SHRINK_ORDERS:
            raise ValueError(
                f"strategy.options.shrink_order: {self.shrink_order!r} is not one of "
                f"{list(SHRINK_ORDERS)}"
            )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> OneShotOptions:
        return parse_options(cls, options, "oneshot")

    def supernet_config(self) -> SupernetConfig:
        return SupernetConfig(
            random_subnets=self.random_subnets,
            distill=self.distill,
            fixed=dict(self.fixed),
            path_draw=self.path_draw,
            shrink=self.shrink,
            shrink_order=self.shrink_order,
        )


def oneshot_setup(cfg: SearchConfig) -> tuple[OneShotOptions, SearchSpace, SearchSpace]:
    """The options, the search space and the supernet's subspace of a one-shot search; a
    ValueError naming the option or choice when they do not fit."""
    from speechnas.nn.supernet import supernet_space

    opts = OneShotOptions.from_options(cfg.strategy.options)
    search_space = load_space(cfg.space)
    return opts, search_space, supernet_space(search_space, opts.fixed)


def check_objectives(cfg: SearchConfig) -> None:
    """A ValueError for an objective a supernet path cannot be scored by (a real-time factor:
    paths are never timed on their own)."""
    for o in cfg.objectives:
        if objective_kind(o) == "speed":
            raise ValueError(f"objectives: {o} cannot be estimated from a supernet path")


def inner_strategy(cfg: SearchConfig, opts: OneShotOptions, space: SearchSpace) -> Strategy:
    """The strategy proposing paths of ``space``; a ValueError naming a bad inner option."""
    multi = is_multi_objective(opts.inner, opts.inner_options)
    return make_strategy(
        opts.inner, space, seed=cfg.seed, n_objectives=len(cfg.objectives) if multi else 1,
        scalarize=Scalarizer(cfg.objectives, cfg.latency_lambda), **opts.inner_options,
    )  # fmt: skip


def train_supernet(
    base: TrainConfig,
    space: str,
    opts: OneShotOptions,
    output_dir: Path,
    *,
    seed: int,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Trains (or resumes) the supernet over ``space``'s elastic subspace on all the training
    data; returns the trainer's result as a dict."""
    from speechnas.train.trainer import Trainer

    budget = dataclasses.replace(
        base.budget,
        max_minutes=opts.supernet_minutes,
        max_steps=opts.supernet_steps,
        patience=None,
        eval_at_minutes=(),
    )
    cfg = base.replace(
        arch=None,
        space=space,
        supernet=opts.supernet_config(),
        seed=seed,
        threads=opts.threads,
        output_dir=str(output_dir),
        budget=budget,
        data=dataclasses.replace(base.data, fraction=1.0),
    )
    return Trainer.from_config(cfg, show_progress=show_progress).fit(resume=True).to_dict()


class PathScorer:
    """Inherited-weight error rates of supernet paths on a fixed dev subset, features computed
    once."""

    def __init__(self, checkpoint: Path, dev: str, *, utterances: int, seed: int) -> None:
        import numpy as np

        from speechnas.data.dataset import SpeechDataset
        from speechnas.data.loading import load_utterances
        from speechnas.evaluate.decode import prepare_batches
        from speechnas.train.checkpoint import load_supernet

        self.loaded = loaded = load_supernet(checkpoint)
        self.net = loaded.model
        utts = load_utterances(dev, skip_invalid=True)
        if 0 < utterances < len(utts):
            keep = np.sort(np.random.default_rng([seed, 13]).permutation(len(utts))[:utterances])
            utts = [utts[i] for i in keep]
        self.dataset = SpeechDataset(utts, loaded.tokenizer, loaded.features, seed=seed)
        self.batches = prepare_batches(self.dataset)

    def __call__(self, arch: Arch) -> dict[str, float]:
        from speechnas.evaluate.decode import evaluate_dataset

        self.net.set_active(arch)
        ev = evaluate_dataset(self.net, self.dataset, batches=self.batches)
        return {"dev_wer": ev.rates.wer, "dev_cer": ev.rates.cer}


def inherited_metric(objective: str) -> str:
    """The metric a path is scored by for ``objective``: an error rate becomes the inherited
    dev error of its kind (``dev_cer`` for ``cer:T``, else ``dev_wer``); the rest are
    themselves (predicted)."""
    if not is_error_rate(objective):
        return objective
    return "dev_cer" if objective.startswith("cer:") else "dev_wer"


def inherited_values(metrics: Mapping[str, float], objectives: list[str]) -> tuple[float, ...]:
    """The objective vector of a scored path: error rates as its inherited dev error."""
    return tuple(float(metrics[inherited_metric(o)]) for o in objectives)


def _read_candidates(path: Path) -> list[dict[str, Any]]:
    """The complete records of an earlier run; a line cut short by a kill is dropped from the
    file (that path is scored again)."""
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    if len(rows) < len(lines):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)
    return rows


def search_paths(
    cfg: SearchConfig,
    space: SearchSpace,
    scorer: PathScorer,
    opts: OneShotOptions,
    folder: Path,
    *,
    vocab_size: int,
    console: Console,
) -> list[dict[str, Any]]:
    """Proposes ``evaluations`` paths with the inner strategy and scores the feasible ones;
    returns every candidate record (index, arch, metrics, values or the rejection)."""
    from tqdm import tqdm

    objectives = list(cfg.objectives)
    check_objectives(cfg)
    path = folder / "candidates.jsonl"
    done = _read_candidates(path)
    latency = latency_model(cfg.target)
    strategy = inner_strategy(cfg, opts, space)
    constraints = cfg.constraints.to_dict()
    history: list[Observation] = []
    records: list[dict[str, Any]] = []
    scored: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=opts.evaluations, desc="scoring paths", dynamic_ncols=True, leave=False)
    folder.mkdir(parents=True, exist_ok=True)
    with path.open("a") as sink:
        for i in range(opts.evaluations):
            arch = strategy.propose(history, i)
            if i < len(done):
                rec = done[i]
                if rec["key"] != arch.hash():
                    raise ValueError(
                        f"{path}: candidate {i} is {rec['key']}, but this search proposes "
                        f"{arch.hash()}; it was written by another search (delete the file "
                        "or use another output_dir)"
                    )
            else:
                rec = _score(arch, i, scorer, scored, latency, constraints, objectives, cfg,
                             vocab_size)  # fmt: skip
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
            scored.setdefault(rec["key"], rec)
            values = None if rec["values"] is None else tuple(rec["values"])
            history.append(Observation(arch, values))
            records.append(rec)
            bar.update(1)
            best = min((r["values"][0] for r in records if r["values"]), default=math.nan)
            bar.set_postfix(best=f"{best:.3f}", rejected=sum(not r["values"] for r in records))
    bar.close()
    distinct = len({r["key"] for r in records if r["values"]})
    rejected = sum(1 for r in records if r["values"] is None)
    console.print(
        f"{len(records)} paths proposed: {distinct} distinct ones scored by inherited weights, "
        f"{rejected} over a limit, {sum(1 for r in records if r.get('repeat'))} repeats"
    )
    return records


def _score(
    arch: Arch,
    index: int,
    scorer: PathScorer,
    scored: dict[str, dict[str, Any]],
    latency: Any,
    constraints: dict[str, float | None],
    objectives: list[str],
    cfg: SearchConfig,
    vocab_size: int,
) -> dict[str, Any]:
    key = arch.hash()
    rec: dict[str, Any] = {"index": index, "key": key, "arch": arch.to_json()}
    if key in scored:  # the same path again: same numbers, no second scoring
        return {**scored[key], "index": index, "repeat": True}
    pre = predicted_metrics(
        arch, vocab_size=vocab_size, latency=latency, seconds=cfg.latency_seconds
    )
    bad = violations(pre, constraints, predicted=True)
    if bad:
        return {**rec, "metrics": pre, "values": None, "status": "rejected: " + "; ".join(bad)}
    start = time.perf_counter()
    metrics = {**pre, **scorer(arch)}
    metrics["score_seconds"] = time.perf_counter() - start
    return {**rec, "metrics": metrics, "values": list(inherited_values(metrics, objectives))}


def pick_finalists(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` distinct scored paths: the inherited front first, spread by crowding
    distance (extremes first), then the next fronts."""
    unique: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["values"] and r["key"] not in unique:
            unique[r["key"]] = r
    rows = list(unique.values())
    points = [tuple(r["values"]) for r in rows]
    out: list[dict[str, Any]] = []
    for fr in non_dominated_sort(points) if rows else []:
        dist = crowding_distance(points, fr)
        order = sorted(range(len(fr)), key=lambda k: (-dist[k], points[fr[k]]))
        out.extend(rows[fr[k]] for k in order[: n - len(out)])
        if len(out) >= n:
            break
    return out


def run_oneshot(
    cfg: SearchConfig,
    ss: SearchStudy,
    base: TrainConfig,
    *,
    vocab_size: int,
    console: Console,
) -> dict[str, Any]:
    """The whole one-shot search into ``ss``; returns its summary (also in the study's user
    attributes and ``oneshot/summary.json``)."""
    from optuna.trial import TrialState

    from speechnas.search.plots import plot_pareto

    opts, search_space, space = oneshot_setup(cfg)
    out = Path(cfg.output_dir)
    folder = out / "oneshot"
    console.print(
        f"one-shot: supernet over {space.count():,} paths of {cfg.space} "
        f"(fixed: {_fixed(space)}), training {opts.supernet_minutes:g} min"
        + (f" or {opts.supernet_steps} steps" if opts.supernet_steps else "")
        + f" on {opts.threads} thread(s)"
    )
    clock = time.process_time()
    start = time.perf_counter()
    trained = train_supernet(
        base, cfg.space, opts, out / "supernet", seed=cfg.seed, show_progress=console.is_terminal
    )
    console.print(
        f"supernet: {trained['steps']} steps in {trained['train_seconds'] / 60:.1f} min, "
        f"largest path dev WER {100 * trained['best_dev_wer']:.2f}%"
    )
    supernet_cpu = time.process_time() - clock
    clock, t_score = time.process_time(), time.perf_counter()
    scorer = PathScorer(
        out / "supernet" / "last", base.data.dev, utterances=opts.dev_utterances, seed=cfg.seed
    )
    records = search_paths(cfg, space, scorer, opts, folder, vocab_size=vocab_size,
                           console=console)  # fmt: skip
    scoring_cpu, scoring_wall = time.process_time() - clock, time.perf_counter() - t_score
    finalists = pick_finalists(records, opts.finalists)
    ok = [r for r in records if r["values"]]
    plot_pareto(
        [{"trial": r["index"], "rung": 0, "values": r["values"]} for r in ok],
        [{"values": r["values"]} for r in finalists],
        [_inherited_name(o) for o in cfg.objectives],
        folder / "candidates.png",
        title=f"{len(ok)} supernet paths by inherited weights; finalists as the staircase",
    )
    clock, t_fine = time.process_time(), time.perf_counter()
    done = {
        t.user_attrs.get("arch_key")
        for t in ss.trials()
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL
                                              and t.user_attrs.get("status") != INTERRUPTED)
    }  # fmt: skip
    # the supernet's last rate; without a history, its peak rate (the recipe's, scaled)
    history = trained.get("history") or [{}]
    lr = opts.finetune_lr or float(history[-1].get("lr") or trained.get("peak_lr") or base.optim.lr)
    tune_base = base.replace(
        optim=base.optim.fixed(lr, warmup_steps=min(base.optim.warmup_steps, 10))
    )
    fid = Fidelity(opts.finetune_minutes, 1.0, opts.finetune_steps)
    for k, rec in enumerate(finalists):
        arch = Arch.from_json(rec["arch"])
        if arch.hash() in done:
            continue
        number = open_trial(
            ss, search_space, arch, cfg=cfg, fidelity=fid, worker="oneshot",
            slot=f"oneshot-{k}", bracket=0, rung=0, position=k,
            inherited=rec["metrics"], candidate=rec["index"],
        )  # fmt: skip
        tune = functools.partial(_finalist, cfg, ss, number, arch, rec, scorer, tune_base, fid,
                                 opts, console)  # fmt: skip
        guarded(ss, number, tune)
    finetune_cpu = time.process_time() - clock
    summary = {
        "paths": space.count(),
        "subspace": space.to_dict(),
        "supernet": {k: trained[k] for k in ("steps", "train_seconds", "best_dev_wer", "epochs")},
        "proposed": len(records),
        "scored": len({r["key"] for r in ok}),
        "finalists": [r["key"] for r in finalists],
        "finetune_lr": lr,
        "cpu_seconds": {
            "supernet": supernet_cpu,
            "scoring": scoring_cpu,
            "finetune": finetune_cpu,
        },
        "wall_seconds": {
            "supernet_and_setup": t_score - start,
            "scoring": scoring_wall,
            "finetune": time.perf_counter() - t_fine,
        },
    }
    earlier = ss.study.user_attrs.get("oneshot") or {}
    for part in ("cpu_seconds", "wall_seconds"):  # a resumed search adds to the first run's
        for k, v in (earlier.get(part) or {}).items():
            summary[part][k] = summary[part].get(k, 0.0) + v
    ss.study.set_user_attr("oneshot", summary)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _finalist(
    cfg: SearchConfig,
    ss: SearchStudy,
    number: int,
    arch: Arch,
    rec: dict[str, Any],
    scorer: PathScorer,
    base: TrainConfig,
    fid: Fidelity,
    opts: OneShotOptions,
    console: Console,
) -> str:
    """Extracts, fine-tunes and scores one finalist as study trial ``number``."""
    from speechnas.train.checkpoint import save_extracted

    out = Path(cfg.output_dir) / "trials" / f"{number:04d}-oneshot-{arch.hash()[:8]}"
    save_extracted(scorer.loaded, arch, out / "extracted")
    set_attrs(ss, number, {"output_dir": str(out)})
    tuned = base.replace(init_from=str(out / "extracted"), threads=opts.threads)
    metrics = run_trial(arch, base=tuned, fidelity=fid, output_dir=out, seed=cfg.seed)
    metrics = {**metrics, **{k: rec["metrics"][k] for k in CARRIED_METRICS if k in rec["metrics"]}}
    if is_hardware_target(cfg.target):  # a real target: export and time the finalist
        metrics.update(measure_on_target(out / "best", cfg))
    state = record_metrics(
        ss, number, cfg, metrics, predicted=PREDICTED_METRICS, checkpoint=str(out / "best")
    )
    if state != "complete":
        return state
    measured = metrics.get("latency_measured")
    console.print(
        f"finalist #{number} {arch.hash()[:8]}: inherited dev WER "
        f"{100 * rec['metrics']['dev_wer']:.2f}%, fine-tuned dev WER "
        f"{100 * metrics['dev_wer']:.2f}%"
        + ("" if measured is None else f", latency {measured:.2f} ms measured on {cfg.target}"),
        highlight=False,
    )
    return state


def _inherited_name(objective: str) -> str:
    metric = inherited_metric(objective)
    return f"inherited dev {metric[4:].upper()}" if metric != objective else objective


def _fixed(space: SearchSpace) -> str:
    from speechnas.nn.supernet import ELASTIC

    return ", ".join(f"{n}={space[n].values[0]}" for n in space.names if n not in ELASTIC)


class OneShot(Driver):
    """The one-shot search: a supernet, paths scored by inherited weights, finalists
    fine-tuned as the study's trials (see the module docstring)."""

    name = "oneshot"
    strategies = ("oneshot",)

    def __init__(self, cfg: SearchConfig) -> None:
        super().__init__(cfg)
        self.summary: dict[str, Any] | None = None

    def setup(self) -> SearchSpace:
        opts, _, subspace = oneshot_setup(self.cfg)
        check_objectives(self.cfg)
        inner_strategy(self.cfg, opts, subspace)  # a bad inner option fails here
        return subspace  # the finalists are paths of the supernet's subspace

    def trial_budget(self) -> int | None:
        return None  # its trials are the finalists, not n_trials

    def budgets_in_minutes(self) -> bool:
        return True  # its own trainings (the options') may stop on the clock

    def header(self) -> str:
        # Seeds need their own training; the supernet scores only its own paths.
        return "seeds not used by the one-shot search" if self.cfg.seeds else ""

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
        self.summary = run_oneshot(self.cfg, ss, base, vocab_size=vocab_size, console=console)

    def retrain_config(self, base: TrainConfig) -> TrainConfig:
        """Retraining continues a finalist's fine-tuning, at its learning rate."""
        if self.summary is None:
            return base
        lr = self.summary["finetune_lr"]
        return base.replace(optim=base.optim.fixed(lr, warmup_steps=10))

    def init_from(self, selected: Result) -> str | None:
        """A finalist's retraining continues from its fine-tuned weights."""
        return trained_weights(selected)


__all__ = [
    "OneShot",
    "OneShotOptions",
    "PathScorer",
    "inherited_values",
    "oneshot_setup",
    "pick_finalists",
    "run_oneshot",
    "search_paths",
    "train_supernet",
]
