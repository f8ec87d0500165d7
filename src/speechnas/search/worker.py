"""One search worker: claim a slot → check the candidate → train and measure (or reuse) → tell.

Any number of workers (processes, or machines sharing the output folder) may run this loop on
one study; the claim is made under a lock from the study's contents (see
:mod:`speechnas.search.fidelity`), so no slot is taken twice and proposals are numbered by the
plan, not by the worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechnas.search.config import SearchConfig
from speechnas.search.encoding import distributions, flatten
from speechnas.search.fidelity import Job, Ranker, next_job, plan, rank_pareto, rank_scalar
from speechnas.search.objectives import (
    LatencyModel,
    Scalarizer,
    check_builds,
    latency_model,
    objective_values,
    predicted_metrics,
    violations,
)
from speechnas.search.strategies import (
    Observation,
    Strategy,
    is_multi_objective,
    make_strategy,
)
from speechnas.search.study import (
    INTERRUPTED,
    SearchStudy,
    add_trial,
    arch_of,
    claim_lock,
    find_evaluation,
    is_interrupted,
    set_attrs,
    slot_table,
    values_of,
)
from speechnas.search.trial import Fidelity, run_trial
from speechnas.space import Arch, SearchSpace, load_space
from speechnas.versions import versions

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from speechnas.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Everything a worker needs, built once per process."""

    cfg: SearchConfig
    base: TrainConfig  # the trials' training config (the search test set only)
    vocab_size: int  # of the tokenizer on the training texts (for pre-training estimates)
    space: SearchSpace
    fidelities: list[Fidelity]
    latency: LatencyModel
    scalarize: Scalarizer
    rank: Ranker
    strategy: Strategy
    out: Path

    @classmethod
    def create(cls, cfg: SearchConfig, base: TrainConfig, vocab_size: int) -> Context:
        space = load_space(cfg.space)
        scalarize = Scalarizer(cfg.objectives, cfg.latency_lambda)
        promotion = cfg.fidelity.promotion
        if promotion == "auto":
            promotion = "pareto" if len(cfg.objectives) > 1 else "scalar"
        multi = is_multi_objective(cfg.strategy.name, cfg.strategy.options)
        strategy = make_strategy(
            cfg.strategy.name,
            space,
            seed=cfg.seed,
            n_objectives=len(cfg.objectives) if multi else 1,
            scalarize=scalarize,
            **cfg.strategy.options,
        )
        return cls(
            cfg=cfg,
            base=base,
            vocab_size=vocab_size,
            space=space,
            fidelities=cfg.fidelities(),
            latency=latency_model(cfg.target),
            scalarize=scalarize,
            rank=rank_pareto if promotion == "pareto" else rank_scalar(scalarize),
            strategy=strategy,
            out=Path(cfg.output_dir),
        )

    def plan(self) -> Iterator[Any]:
        f = self.cfg.fidelity
        return plan(f.candidates, f.eta, len(f.rungs), self.cfg.n_trials)


def observations(trials: Sequence[FrozenTrial]) -> list[Observation]:
    """The history a strategy sees: every evaluation that finished (failures with no values),
    in trial order; running, interrupted and unfilled (pruned) trials are left out."""
    from optuna.trial import TrialState

    out = []
    for t in trials:
        arch = arch_of(t)
        if arch is None or is_interrupted(t):
            continue
        if t.state not in (TrialState.COMPLETE, TrialState.FAIL):
            continue
        out.append(Observation(arch, values_of(t), int(t.user_attrs.get("rung", 0))))
    return out


@dataclass(frozen=True, slots=True)
class Claim:
    number: int
    job: Job
    arch: Arch
    source: dict[str, Any] | None  # the lower rung's trial attributes for a promotion


def claim(ctx: Context, ss: SearchStudy, worker: str) -> Claim | str:
    """Claims the next slot: a RUNNING trial with its parameters and attributes, "pruned" for
    an unfillable place (recorded at once), or "wait" / "done" from :func:`next_job`."""
    from optuna.trial import TrialState

    with claim_lock(ctx.out):
        trials = ss.trials()
        sync = ctx.cfg.fidelity.synchronous
        job = next_job(ctx.plan(), slot_table(trials), ctx.rank, synchronous=sync)
        if isinstance(job, str):
            return job
        fid = ctx.fidelities[job.rung]
        attrs: dict[str, Any] = {
            "slot": job.slot,
            "bracket": job.bracket,
            "rung": job.rung,
            "position": job.position,
            "fidelity": fid.to_dict(),
            "seed": ctx.cfg.seed,
            "worker": worker,
        }
        source = None
        if job.rung == 0:
            assert job.proposal is not None
            seen = [t for t in trials if not sync or t.user_attrs.get("bracket", -1) < job.bracket]
            arch = ctx.strategy.propose(observations(seen), job.proposal)
            attrs["proposal"] = job.proposal
        elif job.promote is None:
            add_trial(ss, state=TrialState.PRUNED, user_attrs={**attrs, "status": job.note})
            return "pruned"
        else:
            src = trials[job.promote]
            assert src.number == job.promote
            source = dict(src.user_attrs)
            arch = Arch.from_json(source["arch"])
            attrs["promoted_from"] = job.promote
        attrs.update(arch=arch.to_json(), arch_key=arch.hash(), versions=versions())
        try:
            params = flatten(arch, ctx.space)
        except ValueError:
            params = {}  # an invalid proposal: recorded, failed before any training
        dists = distributions(ctx.space)
        number = add_trial(
            ss,
            state=TrialState.RUNNING,
            params=params,
            distributions={k: dists[k] for k in params},
            user_attrs=attrs,
        )
        return Claim(number, job, arch, source)


def _trial_dir(ctx: Context, c: Claim) -> Path:
    return ctx.out / "trials" / f"{c.number:04d}-r{c.job.rung}-{c.arch.hash()[:8]}"


def fail_trial(ss: SearchStudy, number: int, status: str, **attrs: Any) -> str:
    from optuna.trial import TrialState

    set_attrs(ss, number, {**attrs, "status": status})
    ss.study.tell(number, state=TrialState.FAIL)
    log.info("trial %d failed: %s", number, status)
    return "fail"


def evaluate(ctx: Context, ss: SearchStudy, c: Claim) -> str:
    """Checks, trains and measures the claimed candidate and tells the study; returns the
    final state ("complete" or "fail"). Every failure is recorded with its reason and the
    search goes on; only an interrupt (Ctrl-C) propagates, after marking the trial."""
    from speechnas.train.trainer import Diverged

    try:
        return _evaluate(ctx, ss, c)
    except Diverged as e:
        return fail_trial(ss, c.number, f"diverged: {e}")
    except KeyboardInterrupt:
        fail_trial(ss, c.number, INTERRUPTED)
        raise
    except Exception as e:
        summary = "".join(traceback.format_exception(e, limit=-6))[-4000:]
        return fail_trial(ss, c.number, f"crashed: {type(e).__name__}: {e}", traceback=summary)


def _evaluate(ctx: Context, ss: SearchStudy, c: Claim) -> str:
    cfg, fid = ctx.cfg, ctx.fidelities[c.job.rung]
    constraints = cfg.constraints.to_dict()
    try:
        arch = ctx.space.validate(c.arch)
    except ValueError as e:
        return fail_trial(ss, c.number, f"invalid: {e}", train_minutes=0.0)
    try:
        check_builds(arch, ctx.vocab_size)
    except Exception as e:
        why = f"invalid: the model does not build: {type(e).__name__}: {e}"
        return fail_trial(ss, c.number, why, train_minutes=0.0)
    pre = predicted_metrics(
        arch, vocab_size=ctx.vocab_size, latency=ctx.latency, seconds=cfg.latency_seconds
    )
    bad = violations(pre, constraints, predicted=True)
    if bad:
        return fail_trial(
            ss, c.number, "rejected: " + "; ".join(bad), metrics=pre, train_minutes=0.0
        )
    earlier = find_evaluation(ss.trials(), arch.hash(), fid.to_dict())
    if earlier is not None:
        return _reuse(ctx, ss, c, earlier)
    out = _trial_dir(ctx, c)
    resume_from = None
    if c.source is not None and c.source.get("output_dir"):
        lower = c.source.get("fidelity", {})
        if lower.get("fraction") == fid.fraction:  # same data share: training can continue
            resume_from = c.source["output_dir"]
    set_attrs(ss, c.number, {"output_dir": str(out), "resumed_from": resume_from})
    start = time.perf_counter()
    metrics = run_trial(
        arch,
        base=ctx.base,
        fidelity=fid,
        output_dir=out,
        seed=cfg.seed,
        resume_from=resume_from,
    )
    metrics = {
        **metrics,
        **{k: pre[k] for k in ("macs", "memory", "latency")},
        "wall_seconds": time.perf_counter() - start,
    }
    attrs = {"metrics": metrics, "checkpoint": str(out / "best")}
    bad = violations(metrics, constraints, predicted=() if ctx.latency.measured else ("latency",))
    if bad:
        return fail_trial(ss, c.number, "rejected after training: " + "; ".join(bad), **attrs)
    try:
        values = objective_values(metrics, cfg.objectives)
    except ValueError as e:
        return fail_trial(ss, c.number, f"no objective values: {e}", **attrs)
    set_attrs(ss, c.number, {**attrs, "status": "ok", "scalar": ctx.scalarize(values)})
    ss.study.tell(c.number, list(values))
    return "complete"


def _reuse(ctx: Context, ss: SearchStudy, c: Claim, earlier: Any) -> str:
    """Records an earlier evaluation of the same architecture and fidelity as this trial's."""
    a = earlier.attrs
    attrs = {
        "reused_from": earlier.number,
        "metrics": a.get("metrics", {}),
        "output_dir": a.get("output_dir"),
        "checkpoint": a.get("checkpoint"),
    }
    if earlier.values is None:
        return fail_trial(ss, c.number, f"{a.get('status')} (trial {earlier.number})", **attrs)
    values = tuple(earlier.values)
    set_attrs(ss, c.number, {**attrs, "status": "reused", "scalar": ctx.scalarize(values)})
    ss.study.tell(c.number, list(values))
    return "complete"


@contextlib.contextmanager
def trial_logs(path: Path) -> Iterator[None]:
    """Sends the trainer's log lines to ``path`` instead of the console while searching."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("speechnas.train", "speechnas.search.worker")]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, (prop, level) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.propagate, lg.level = prop, level
        handler.close()


def work(
    ctx: Context,
    ss: SearchStudy,
    *,
    index: int = 0,
    deadline: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_claim: Callable[[], None] = lambda: None,
    on_trial: Callable[[], None] = lambda: None,
    poll_seconds: float = 1.0,
) -> int:
    """Runs trials until the plan is exhausted, ``deadline`` (a ``time.time()``) passes or
    ``should_stop()``; calls ``on_claim`` when a trial starts and ``on_trial`` when it ends.
    Returns how many trials this worker finished."""
    worker = f"{socket.gethostname()}:{os.getpid()}:{index}"
    finished = 0
    with trial_logs(ctx.out / "logs" / f"worker-{index}.log"):
        while not should_stop() and (deadline is None or time.time() < deadline):
            got = claim(ctx, ss, worker)
            if got == "done":
                break
            if got == "wait":
                time.sleep(poll_seconds)  # another worker's trial decides the next promotion
                continue
            if isinstance(got, Claim):
                log.info("trial %d: %s %s", got.number, got.job.slot, got.arch.hash())
                on_claim()
                evaluate(ctx, ss, got)
            finished += 1
            on_trial()
    return finished


__all__ = ["Claim", "Context", "claim", "evaluate", "observations", "trial_logs", "work"]
