"""The worker pool: the driver of the multi-trial strategies (random, evolution, tpe, nsga2,
reinforce, warmstart).

One worker loops: claim a slot → check the candidate → train and measure (or reuse) → tell.
Any number of workers (processes, or machines sharing the study's database and the output
folder, where promoted trials find their lower rung's checkpoint) may run this loop on one
study; the claim is made under a lock (see :func:`speechnas.search.study.claim_lock`) from the
study's contents (see :mod:`speechnas.search.fidelity`), so no slot is taken twice and
proposals are numbered by the plan, not by the worker. :class:`WorkerPool` runs ``workers`` of
them: in this process for one, as spawned processes for more.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechnas.search.artifacts import resume_source, store_checkpoints, trial_uri
from speechnas.search.backends import run_ray
from speechnas.search.config import SearchConfig
from speechnas.search.drivers.base import Driver
from speechnas.search.fidelity import (
    Job,
    Ranker,
    SlotState,
    next_job,
    plan,
    rank_pareto,
    rank_scalar,
)
from speechnas.search.measure import verify_latency
from speechnas.search.objectives import (
    CARRIED_METRICS,
    PREDICTED_METRICS,
    Scalarizer,
    violations,
)
from speechnas.search.promote import predicted_top
from speechnas.search.record import (
    fail_trial,
    guarded,
    open_trial,
    record_metrics,
    record_screened,
    record_trial,
)
from speechnas.search.screen import Screen, Trained
from speechnas.search.strategies import (
    STRATEGIES,
    Observation,
    Strategy,
    is_multi_objective,
    make_strategy,
)
from speechnas.search.study import (
    SearchStudy,
    add_trial,
    arch_of,
    beating,
    claim_lock,
    find_evaluation,
    is_interrupted,
    open_study,
    release_worker,
    set_attrs,
    slot_table,
    values_of,
)
from speechnas.search.tasks import TrialTask, trials_for
from speechnas.search.trial import Fidelity
from speechnas.space import Arch, SearchSpace, load_space

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from rich.console import Console

    from speechnas.search.progress import Progress
    from speechnas.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Everything a worker needs, built once per process."""

    cfg: SearchConfig
    base: TrainConfig  # the trials' training config (the search test set only)
    space: SearchSpace
    fidelities: list[Fidelity]
    scalarize: Scalarizer
    rank: Ranker
    strategy: Strategy
    out: Path
    task: TrialTask
    seeds: list[Arch] = field(default_factory=list)

    @staticmethod
    def create_strategy(cfg: SearchConfig, space: SearchSpace) -> Strategy:
        """The strategy of ``cfg`` over ``space``; a ValueError naming a bad option. With
        ``seeds`` the seeds come first and the configured strategy proposes the rest."""
        multi = is_multi_objective(cfg.strategy.name, cfg.strategy.options)
        name, options = cfg.strategy.name, dict(cfg.strategy.options)
        seeds = cfg.seed_archs(space)
        if seeds:
            if name == "warmstart":
                options["seeds"] = [*seeds, *options.get("seeds", ())]
            else:
                name, options = "warmstart", {"seeds": seeds, "inner": name,
                                              "inner_options": options}  # fmt: skip
        return make_strategy(
            name,
            space,
            seed=cfg.seed,
            n_objectives=len(cfg.objectives) if multi else 1,
            scalarize=Scalarizer(cfg.objectives, cfg.latency_lambda),
            **options,
        )

    def seed_label(self, arch: Arch) -> str | None:
        """What seeded ``arch`` (a preset's name, or ``seeds[k]``), or None."""
        for k, (given, a) in enumerate(zip(self.cfg.seeds, self.seeds, strict=True)):
            if a.hash() == arch.hash():
                if isinstance(given, str):
                    return given
                if "preset" in given:  # a preset with changed fields
                    changed = ", ".join(f"{n}: {v}" for n, v in given.items() if n != "preset")
                    return f"{given['preset']} ({changed})" if changed else str(given["preset"])
                return f"seeds[{k}]"
        return None

    @classmethod
    def create(cls, cfg: SearchConfig, base: TrainConfig, vocab_size: int) -> Context:
        space = load_space(cfg.space)
        scalarize = Scalarizer(cfg.objectives, cfg.latency_lambda)
        promotion = cfg.fidelity.promotion
        if promotion == "auto":
            promotion = "pareto" if len(cfg.objectives) > 1 else "scalar"
        strategy = cls.create_strategy(cfg, space)
        task = trials_for(cfg, vocab_size)
        if any(v is not None for v in cfg.constraints.to_dict().values()):
            strategy.set_feasible(feasibility_test(cfg, task))
        return cls(
            cfg=cfg,
            base=base,
            space=space,
            fidelities=cfg.fidelities(),
            scalarize=scalarize,
            rank=rank_pareto if promotion == "pareto" else rank_scalar(scalarize),
            strategy=strategy,
            out=Path(cfg.output_dir),
            task=task,
            seeds=cfg.seed_archs(space),
        )

    def plan(self) -> Iterator[Any]:
        f = self.cfg.fidelity
        return plan(f.candidates, f.eta, len(f.rungs), self.cfg.n_trials)


def feasibility_test(cfg: SearchConfig, task: TrialTask) -> Callable[[Arch], bool]:
    """Whether an architecture's predicted metrics meet ``cfg``'s constraints (an architecture
    that does not build passes: the trial then fails with the reason)."""
    limits = cfg.constraints.to_dict()

    @functools.cache
    def ok(arch: Arch) -> bool:
        try:
            pre = task.predicted(arch)
        except Exception:  # judged, with its message, when evaluated
            return True
        return not violations(pre, limits, predicted=True)

    return ok


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


def claimed_before(
    trials: Sequence[FrozenTrial], seen: Sequence[FrozenTrial], proposal: int
) -> list[Observation]:
    """The earlier proposals the history leaves out (still training, or in the same
    synchronous bracket), as observations without values: a strategy then counts them as tried
    and does not propose them again, but learns nothing from them. Only proposals numbered
    below ``proposal``, so the result is the same whichever worker claims first or resumes."""
    known = {t.number for t in seen if t.state.is_finished()}
    out = []
    for t in trials:
        arch = arch_of(t)
        if arch is None or t.number in known or is_interrupted(t):
            continue
        if t.user_attrs.get("rung") == 0 and t.user_attrs.get("proposal", proposal) < proposal:
            out.append(Observation(arch, None, 0))
    return out


def screened_before(trials: Sequence[FrozenTrial], proposal: int) -> list[Observation]:
    """Architectures screened (not trained) for proposals up to ``proposal``, as observations
    without values: tried, so not proposed again."""
    out = []
    for t in trials:
        arch = arch_of(t)
        if arch is not None and "screened" in t.user_attrs and t.user_attrs["proposal"] <= proposal:
            out.append(Observation(arch, None, 0))
    return out


def trained_at_rung0(trials: Sequence[FrozenTrial]) -> list[Trained]:
    """The completed rung-0 trials with their objective values, for the screen."""
    from optuna.trial import TrialState

    out = []
    for t in trials:
        arch, values = arch_of(t), values_of(t)
        if t.state == TrialState.COMPLETE and t.user_attrs.get("rung") == 0 and arch and values:
            out.append(Trained(t.number, arch, tuple(values)))
    return out


def screen_proposal(
    ctx: Context,
    ss: SearchStudy,
    trials: Sequence[FrozenTrial],
    seen: Sequence[FrozenTrial],
    history: list[Observation],
    proposal: int,
    arch: Arch,
    worker: str,
) -> Arch:
    """``arch``, or the strategy's next proposal after each one the screen skips (recorded
    as screened trials; see :mod:`speechnas.search.screen`). At most ``max_screened`` per
    proposal, counting those of an interrupted claim of the same proposal."""
    cfg = ctx.cfg.screen
    assert cfg is not None
    screen = Screen(
        cfg, objectives=ctx.cfg.objectives, space=ctx.space,
        vocab_size=getattr(ctx.task, "vocab_size", 64), seed=ctx.cfg.seed + proposal,
    )  # fmt: skip
    if not screen.fit(trained_at_rung0(seen)):
        return arch
    mine = [t for t in trials if "screened" in t.user_attrs]
    done = sum(1 for t in mine if t.user_attrs["proposal"] == proposal)
    skipped = {o.arch.key() for o in screened_before(mine, proposal)}
    for _ in range(cfg.max_screened - done):
        if arch.key() in skipped:  # the strategy has nothing else: train it
            return arch
        try:
            pre = ctx.task.predicted(ctx.space.validate(arch))
        except Exception:  # judged, with its message, when evaluated
            return arch
        verdict = screen.judge(arch, pre)
        if verdict is None:
            return arch
        record_screened(ss, ctx.space, arch, cfg=ctx.cfg, worker=worker, proposal=proposal,
                        verdict=verdict, metrics=pre)  # fmt: skip
        log.info("proposal %d: %s %s", proposal, arch.hash()[:8], verdict.reason())
        skipped.add(arch.key())
        history = [*history, Observation(arch, None, 0)]
        arch = ctx.strategy.propose(history, proposal)
    return arch


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

    with claim_lock(ss, ctx.out):
        trials = ss.trials()
        sync = ctx.cfg.fidelity.synchronous
        decided: list[str | None] = []  # the predictor's form if predictions ranked it
        rank_values = None
        if ctx.cfg.fidelity.rank_by == "predicted":

            def rank_values(cands: Sequence[SlotState]) -> Sequence[tuple[float, ...]]:
                values, predicted = predicted_top(
                    trials, cands, objectives=ctx.cfg.objectives, space=ctx.space,
                    vocab_size=getattr(ctx.task, "vocab_size", 64),
                    top_rung=len(ctx.fidelities) - 1, seed=ctx.cfg.seed,
                )  # fmt: skip
                decided.append(predicted)
                return values

        job = next_job(
            ctx.plan(), slot_table(trials), ctx.rank, synchronous=sync,
            seeds_first=ctx.cfg.fidelity.promote_seeds, rank_values=rank_values,
        )  # fmt: skip
        if isinstance(job, str):
            return job
        fid = ctx.fidelities[job.rung]
        where: dict[str, Any] = {
            "slot": job.slot,
            "bracket": job.bracket,
            "rung": job.rung,
            "position": job.position,
        }
        source = None
        if job.rung == 0:
            assert job.proposal is not None
            seen = [t for t in trials if not sync or t.user_attrs.get("bracket", -1) < job.bracket]
            history = [
                *observations(seen),
                *claimed_before(trials, seen, job.proposal),
                *screened_before(trials, job.proposal),
            ]
            arch = ctx.strategy.propose(history, job.proposal)
            extra: dict[str, Any] = {"proposal": job.proposal}
            if (label := ctx.seed_label(arch)) is not None:
                extra["seeded"] = label
            elif ctx.cfg.screen is not None:
                arch = screen_proposal(ctx, ss, trials, seen, history, job.proposal, arch, worker)
        elif job.promote is None:
            attrs = {**where, "fidelity": fid.to_dict(), "seed": ctx.cfg.seed, "worker": worker}
            add_trial(ss, state=TrialState.PRUNED, user_attrs={**attrs, "status": job.note})
            return "pruned"
        else:
            src = trials[job.promote]
            assert src.number == job.promote
            source = dict(src.user_attrs)
            arch = Arch.from_json(source["arch"])
            extra = {"promoted_from": job.promote}
            if decided:
                extra["promotion"] = "predicted" if decided[-1] else "observed"
                if decided[-1]:
                    extra["promotion_form"] = decided[-1]
            if source.get("seeded") is not None:
                extra["seeded"] = source["seeded"]
        number = open_trial(
            ss, ctx.space, arch, cfg=ctx.cfg, fidelity=fid, worker=worker, **where, **extra
        )
        return Claim(number, job, arch, source)


def _trial_dir(ctx: Context, c: Claim) -> Path:
    return ctx.out / "trials" / f"{c.number:04d}-r{c.job.rung}-{c.arch.hash()[:8]}"


def evaluate(ctx: Context, ss: SearchStudy, c: Claim) -> str:
    """Checks, trains and measures the claimed candidate and tells the study; returns the
    final state ("complete" or "fail"). Every failure is recorded with its reason and the
    search goes on; only an interrupt (Ctrl-C) propagates, after marking the trial."""
    with beating(ss, c.number, ctx.cfg.heartbeat_seconds):
        return guarded(ss, c.number, lambda: _evaluate(ctx, ss, c))


def _evaluate(ctx: Context, ss: SearchStudy, c: Claim) -> str:
    cfg, fid = ctx.cfg, ctx.fidelities[c.job.rung]
    constraints = cfg.constraints.to_dict()
    try:
        arch = ctx.space.validate(c.arch)
    except ValueError as e:
        return fail_trial(ss, c.number, f"invalid: {e}", train_minutes=0.0)
    try:
        ctx.task.check_builds(arch)
    except Exception as e:
        why = f"invalid: the model does not build: {type(e).__name__}: {e}"
        return fail_trial(ss, c.number, why, train_minutes=0.0)
    pre = ctx.task.predicted(arch)
    guessed: bool | list[str] = True
    check = (c.source or {}).get("latency_check")  # a promotion keeps its rung-0 measurement
    # a seed is the control: it trains whatever it times
    wanted = cfg.verify_latency and c.source is None and ctx.seed_label(arch) is None
    if check is None and wanted and "latency" in pre:
        check = verify_latency(arch, cfg, getattr(ctx.task, "vocab_size", 64),
                               getattr(ctx.task, "latency", None))  # fmt: skip
    if check is not None:
        pre = {**pre, "latency": check["latency"]}
        guessed = [m for m in PREDICTED_METRICS if m != "latency"]
        set_attrs(ss, c.number, {"latency_check": check})
        log.info("trial %d: latency measured, %.3g ms predicted (±%.0f%%) -> %.3g ms against "
                 "%.3g ms", c.number, check["predicted"], 100 * check["band"],
                 check["latency"], check["limit"])  # fmt: skip
    bad = violations(pre, constraints, predicted=guessed)
    if bad:
        return fail_trial(
            ss, c.number, "rejected: " + "; ".join(bad), metrics=pre, train_minutes=0.0
        )
    earlier = find_evaluation(ss.trials(), arch.hash(), fid.to_dict())
    if earlier is not None:
        return _reuse(ctx, ss, c, earlier)
    out = _trial_dir(ctx, c)
    resume_from = None
    if c.source is not None:
        lower = c.source.get("fidelity", {})
        if lower.get("fraction") == fid.fraction:  # same data share: training can continue
            resume_from = resume_source(c.source, out)
    set_attrs(ss, c.number, {"output_dir": str(out), "resumed_from": resume_from})
    start = time.perf_counter()
    metrics = ctx.task.run_trial(
        arch,
        base=ctx.base,
        fidelity=fid,
        output_dir=out,
        seed=cfg.seed,
        resume_from=resume_from,
    )
    metrics = {
        **metrics,
        **{k: pre[k] for k in CARRIED_METRICS if k in pre},
        "wall_seconds": time.perf_counter() - start,
    }
    if cfg.artifacts:  # before the trial completes: a promotion may fetch them at once
        uri = trial_uri(cfg.artifacts, cfg.study_name, out)
        store_checkpoints(out, uri)
        set_attrs(ss, c.number, {"artifact_uri": uri})
    predicted = () if ctx.task.measured else PREDICTED_METRICS
    return record_metrics(
        ss, c.number, cfg, metrics, predicted=predicted,
        checkpoint=str(out / ctx.task.checkpoint), **ctx.task.trained_attrs(out),
    )  # fmt: skip


def _reuse(ctx: Context, ss: SearchStudy, c: Claim, earlier: Any) -> str:
    """Records an earlier evaluation of the same architecture and fidelity as this trial's."""
    a = earlier.attrs
    attrs = {
        "reused_from": earlier.number,
        "metrics": a.get("metrics", {}),
        "output_dir": a.get("output_dir"),
        "checkpoint": a.get("checkpoint"),
        "artifact_uri": a.get("artifact_uri"),
    }
    if earlier.values is None:
        return fail_trial(ss, c.number, f"{a.get('status')} (trial {earlier.number})", **attrs)
    values = tuple(earlier.values)
    return record_trial(
        ss, c.number, status="reused", values=values, scalar=ctx.scalarize(values), **attrs
    )


@contextlib.contextmanager
def trial_logs(path: Path) -> Iterator[None]:
    """Sends the trainer's log lines to ``path`` instead of the console while searching."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("speechnas.train", "speechnas.search")]
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


def _worker(
    cfg: SearchConfig,
    base: TrainConfig,
    vocab: int,
    deadline: float | None,
    index: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """One worker on its own connection to the study (a process or a Ray task)."""
    import torch

    torch.set_num_threads(base.threads)
    ss = open_study(cfg.storage_url, cfg.study_name, len(cfg.objectives))
    ctx = Context.create(cfg, base, vocab)
    work(ctx, ss, index=index, deadline=deadline, should_stop=should_stop)


def _worker_main(
    cfg: SearchConfig,
    base: TrainConfig,
    vocab: int,
    index: int,
    deadline: float | None,
    parent: int,
) -> None:
    """A worker process: stops between trials when its parent is gone."""
    _worker(cfg, base, vocab, deadline, index, should_stop=lambda: os.getppid() != parent)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (``kill PID``) handled like Ctrl-C while the workers run, so that killing the
    search stops its workers instead of leaving them to finish their trials unseen (a resumed
    search reruns the unfinished trials)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_processes(
    cfg: SearchConfig,
    base: TrainConfig,
    vocab: int,
    deadline: float | None,
    ss: SearchStudy,
    progress: Progress,
    *,
    restarts: int = 1,
) -> None:
    """``cfg.workers`` spawned worker processes on the study; returns when all have ended.

    A worker that dies (killed for memory, a crash of the runtime) has its running trial marked
    interrupted, so its slot is run again, and is started again, up to ``restarts`` times per
    worker, as the Ray backend does; the search goes on without a ``--resume``. A RuntimeError
    names the workers that failed for good."""
    mp = multiprocessing.get_context("spawn")  # no forked torch or SQLite state

    def start(k: int) -> multiprocessing.process.BaseProcess:
        p = mp.Process(target=_worker_main, args=(cfg, base, vocab, k, deadline, os.getpid()),
                       name=f"search-worker-{k}")  # fmt: skip
        p.start()
        return p

    procs = {k: start(k) for k in range(cfg.workers)}
    left = dict.fromkeys(procs, restarts)
    failed: list[tuple[str, int | None]] = []
    host = socket.gethostname()
    with _sigterm_interrupts():
        try:
            while procs:
                progress.update(ss)
                for k, p in list(procs.items()):
                    p.join(timeout=2.0 / len(procs))
                    if p.is_alive():
                        continue
                    del procs[k]
                    if p.exitcode == 0:
                        continue
                    why = f"worker {k} (pid {p.pid}) died with exit code {p.exitcode}"
                    numbers = release_worker(ss, k, why, worker=f"{host}:{p.pid}:{k}")
                    log.warning("%s; trials %s will run again", why, numbers)
                    if left[k] > 0:
                        left[k] -= 1
                        procs[k] = start(k)
                    else:
                        failed.append((p.name, p.exitcode))
        except KeyboardInterrupt:  # Ctrl-C or a kill: the trials in flight stop too
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                p.join(timeout=10.0)
            raise
    progress.update(ss)
    if failed:
        raise RuntimeError(f"search workers failed: {failed}; see {cfg.output_dir}/logs")


class WorkerPool(Driver):
    """``workers`` workers claiming the slots of the successive-halving plan, each slot's
    architecture proposed by ``strategy`` (or promoted from the rung below)."""

    name = "pool"
    strategies = tuple(STRATEGIES)

    def setup(self) -> SearchSpace:
        space = load_space(self.cfg.space)
        Context.create_strategy(self.cfg, space)  # a bad option fails here
        return space

    def header(self) -> str:
        on = " on Ray" if self.cfg.backend == "ray" else ""
        return f"{self.cfg.workers} worker(s){on}"

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
        if self.cfg.backend == "ray":
            run_ray(
                functools.partial(_worker, self.cfg, base, vocab_size, deadline),
                workers=self.cfg.workers,
                cpus_per_worker=base.threads,
                address=self.cfg.ray_address,
                ss=ss,
                progress=progress,
            )
            return
        if self.cfg.workers > 1:
            run_processes(self.cfg, base, vocab_size, deadline, ss, progress)
            return
        ctx = Context.create(self.cfg, base, vocab_size)
        tick = functools.partial(progress.update, ss)
        work(ctx, ss, deadline=deadline, on_claim=tick, on_trial=tick)


__all__ = [
    "Claim",
    "Context",
    "WorkerPool",
    "claim",
    "evaluate",
    "observations",
    "run_processes",
    "trial_logs",
    "work",
]
