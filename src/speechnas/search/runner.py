"""The search: check the config, open or resume the study, let the strategy's driver fill it
with live progress, then write the Pareto front (``pareto.json``, two PNGs) and retrain the
selected architecture.

The driver comes from the registry of :mod:`speechnas.search.drivers` by ``strategy.name``
(the worker pool for the multi-trial strategies, one-shot for ``oneshot``); the runner does
the same around every driver.

Budgets: ``n_trials`` counts every slot of the successive-halving plan (completed, failed,
rejected, reused and unfilled places alike; interrupted trials do not count and their slots are
run again), so a search that ends normally holds exactly ``n_trials`` such trials.
``max_minutes`` stops claiming new trials that many minutes after this invocation started.

Resume re-opens the study: finished trials are kept and not repeated, and trials left RUNNING
(a killed process) are marked FAIL with status "interrupted" and run again. Resume only when
no worker of the study is still running.

Reproducibility: proposals are numbered by the plan and strategies are deterministic in
(seed, history, index), so with one worker the same config and seed give the same sequence of
architectures, and with step-capped fidelities the same metrics on the CPU. With minute budgets
the metrics follow the machine's speed; with several workers the history a proposal sees
depends on which trials finished first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from speechnas.search.artifacts import check_store
from speechnas.search.config import SearchConfig, base_train_config
from speechnas.search.drivers import driver_for
from speechnas.search.feasibility import MIN_VOCAB, check_feasible
from speechnas.search.measure import PRESET_ROUNDS, RATIO_TOLERANCE, measure_on_target
from speechnas.search.objectives import (
    is_error_rate,
    is_hardware_target,
    latency_model,
    objective_tests,
    predicted_metrics,
    violations,
)
from speechnas.search.progress import Progress
from speechnas.search.select import (
    Result,
    front,
    front_table,
    hypervolume_series,
    reference_point,
    results,
    retrain,
    select_for_target,
    write_pareto_json,
)
from speechnas.search.study import (
    SearchStudy,
    is_interrupted,
    mark_interrupted,
    mark_stale,
    open_study,
    shown_url,
)
from speechnas.versions import versions

if TYPE_CHECKING:
    from speechnas.data.config import DataConfig
    from speechnas.train.config import TrainConfig

#: Config entries a resumed search must share with the stored study (the rest may change:
#: budgets, workers, storage, output folder, retraining).
RESUME_KEYS = (
    "space", "strategy", "objectives", "latency_lambda", "constraints", "target",
    "latency_seconds", "fidelity", "seed", "corpus", "corpus_sizes", "base", "train",
    "search_test", "task", "judge", "screen",
)  # fmt: skip


def prepare_base(cfg: SearchConfig) -> TrainConfig:
    """The training config of the search: the base with the built-in corpus (or corpora) when
    ``corpus`` is set (synthesized on first use), validated against the objectives' test sets."""
    base = base_train_config(cfg)
    if cfg.corpus:
        base = base.replace(data=builtin_data(cfg, base.data))
    return base.replace(space=cfg.space)


def builtin_data(cfg: SearchConfig, data: DataConfig) -> DataConfig:
    """``data`` reading the built-in corpora of ``cfg.corpus``. One corpus: its splits as they
    are. Several (e.g. one per language): their training sets mixed with equal weights, their
    dev sets pooled into one manifest (ids prefixed by the corpus), and every test split of each
    as its own test set, named ``test-de``, ``test-noisy-fr``, ... (``test-digits-de`` when the
    tasks differ too)."""
    from speechnas.data.config import TrainSource
    from speechnas.data.manifest import load_manifest, write_manifest
    from speechnas.data.synth.corpus import CorpusConfig, build_corpus

    names = (cfg.corpus,) if isinstance(cfg.corpus, str) else tuple(cfg.corpus or ())
    infos = {}
    for name in names:
        task, _, lang = name.partition("-")
        sizes = {**CorpusConfig().sizes, **cfg.corpus_sizes}
        corpus = CorpusConfig(task=task, lang=lang or "en", sizes=sizes)
        infos[name] = build_corpus(corpus, Path(cfg.corpora_dir))
    if len(infos) == 1:
        return data.with_corpus(next(iter(infos.values())).manifests)
    one_task = len({n.partition("-")[0] for n in names}) == 1
    tests = {}
    for name, info in infos.items():
        tag = name.partition("-")[2] if one_task else name
        tests.update(
            {f"{s}-{tag}": str(p) for s, p in info.manifests.items() if s.startswith("test")}
        )
    pooled = Path(cfg.corpora_dir) / "+".join(names) / "dev.jsonl"
    utts = [
        dataclasses.replace(u, id=f"{name}/{u.id}")
        for name, info in infos.items()
        for u in load_manifest(info.manifests["dev"]).utterances
    ]
    pooled.parent.mkdir(parents=True, exist_ok=True)
    scratch = pooled.with_name(f".dev.jsonl.{os.getpid()}")
    write_manifest(scratch, utts)
    if pooled.is_file() and pooled.read_bytes() == scratch.read_bytes():
        scratch.unlink()  # every worker pools the same dev set: rewrite it only when it changed
    else:
        os.replace(scratch, pooled)  # a reader never sees a half-written manifest
    return dataclasses.replace(
        data,
        train=tuple(TrainSource(str(i.manifests["train"])) for i in infos.values()),
        dev=str(pooled),
        test=tests,
    )


def trial_base(cfg: SearchConfig, base: TrainConfig) -> TrainConfig:
    """``base`` scoring the search test set and every test set an objective names, or none when
    ``search_test`` is null (the test sets are for the retrained model; trials are judged on
    dev)."""
    tests = base.data.test
    named = {t: o for o in cfg.objectives for t in objective_tests(o)}
    if cfg.search_test is None:
        if named:
            raise ValueError(
                f"objectives: {sorted(set(named.values()))} name a test set, but search_test is "
                "null (trials score no test set); set search_test, or use dev_wer"
            )
        return base.replace(data=dataclasses.replace(base.data, test={}))
    for t, o in {cfg.search_test: "search_test", **named}.items():
        if t not in tests:
            where = "search_test" if o == "search_test" else f"objectives: {o!r} names"
            raise ValueError(
                f"{where} {t!r}, which is not a test set of the base config; test sets: "
                f"{sorted(tests)}"
            )
    keep = [cfg.search_test, *(t for t in named if t != cfg.search_test)]
    data = dataclasses.replace(base.data, test={t: tests[t] for t in keep})
    return base.replace(data=data)


def retrain_base(cfg: SearchConfig, base: TrainConfig) -> TrainConfig:
    """``base`` scoring ``test_sets`` (all of them by default)."""
    tests = base.data.test
    unknown = sorted(set(cfg.test_sets) - set(tests))
    if unknown:
        raise ValueError(f"test_sets: {unknown} are not in the base config's {sorted(tests)}")
    keep = {k: v for k, v in tests.items() if not cfg.test_sets or k in cfg.test_sets}
    return base.replace(data=dataclasses.replace(base.data, test=keep))


def vocab_size(base: TrainConfig) -> int:
    """The tokenizer size the trials will have (from all training texts)."""
    from speechnas.data.loading import load_utterances, mix_sources
    from speechnas.data.tokenizer import build_tokenizer

    load = functools.partial(load_utterances, skip_invalid=base.data.skip_invalid)
    texts = [u.text for u in mix_sources(base.data.train_sources(), load, base.seed)]
    return build_tokenizer(
        base.tokenizer.kind, texts, vocab_size=base.tokenizer.vocab_size
    ).vocab_size


def resolve_constraints(cfg: SearchConfig, vocab: int) -> SearchConfig:
    """``cfg`` with every constraint given as a preset name replaced by that preset's own value
    (params, MACs and memory counted, latency predicted on ``cfg.target``) at ``vocab`` tokens.
    A preset the search seeds with changed fields (``{preset: small, frontend: knf80}``) counts
    as seeded: the limit is the seed's own value, so the seed, the control, always meets it."""
    if not cfg.constraints.presets():
        return cfg
    from speechnas.nn.presets import preset

    model = latency_model(cfg.target)
    seeded = {
        s["preset"]: {k: v for k, v in s.items() if k != "preset"}
        for s in cfg.seeds
        if isinstance(s, dict) and "preset" in s
    }

    def value_of(metric: str, name: str) -> float:
        arch = preset(name, **seeded.get(name, {}))
        m = predicted_metrics(arch, vocab_size=vocab, latency=model,
                              seconds=cfg.latency_seconds)  # fmt: skip
        return float(m[metric])

    def source_of(name: str) -> str:
        return json.dumps(preset(name, **seeded.get(name, {})).to_json(), sort_keys=True)

    return cfg.replace(constraints=cfg.constraints.resolve(value_of, source_of))


def _filled(stored: Any, default: Any) -> Any:
    """``stored`` with the keys a section gained since it was stored (a nested mapping's
    missing keys) at their defaults."""
    if isinstance(stored, dict) and isinstance(default, dict):
        return {**default, **{k: _filled(v, default.get(k)) for k, v in stored.items()}}
    return stored


def _check_resume(cfg: SearchConfig, ss: SearchStudy, resume: bool, join: bool = False) -> None:
    stored = ss.study.user_attrs.get("config")
    if join and stored is None:
        raise ValueError(
            f"--join: study {cfg.study_name!r} in {shown_url(cfg.storage_url)} has no search "
            "to join; start it first (`speechnas search --storage URL`), then join with the "
            "same config, --storage and --study-name"
        )
    resume = resume or join
    n = len(ss.trials())
    if n and not resume:
        raise ValueError(
            f"study {cfg.study_name!r} in {shown_url(cfg.storage_url)} already has {n} trials; "
            "resume it (--resume) or choose another output dir or study name"
        )
    if stored is None:
        ss.study.set_user_attr("config", cfg.to_dict())
        ss.study.set_user_attr("versions", versions())
        return
    now = cfg.to_dict()
    defaults = SearchConfig().to_dict()  # a study stored before a key existed: its default
    differ = [
        k
        for k in RESUME_KEYS
        if json.dumps(_filled(stored.get(k, defaults[k]), defaults[k]), sort_keys=True)
        != json.dumps(now.get(k), sort_keys=True)
    ]
    if differ:
        how = "join" if join else "resume"
        raise ValueError(
            f"cannot {how} study {cfg.study_name!r}: the config differs in {differ} "
            "(only budgets, workers, storage, output and retraining may change)"
        )


@dataclass
class SearchOutcome:
    study: SearchStudy
    results: list[Result]
    front: list[Result]
    selected: Result | None
    retrained: dict[str, Any] | None
    paths: dict[str, Path]
    interrupted: list[int]


def other_cpu_load(seconds: float = 1.0) -> float | None:
    """Cores kept busy by other processes, sampled over ``seconds`` from ``/proc/stat`` minus
    this process's own use (None where there is no ``/proc/stat``). An instantaneous sample,
    unlike the load average, which still counts this job's own corpus build a minute later."""

    def cpu() -> tuple[float, float]:
        v = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(v), v[3] + v[4]  # all, idle + iowait (guest time is already in user)

    try:
        (all0, idle0), own0 = cpu(), os.times()
        time.sleep(seconds)
        (all1, idle1), own1 = cpu(), os.times()
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = ((all1 - all0) - (idle1 - idle0)) / tick / seconds
    own = sum(own1[:4]) - sum(own0[:4])  # user, system and waited-for children, in seconds
    return max(0.0, busy - own / seconds)


def busy_cpu_warning(
    threads: int, *, load: float | None = None, cores: int | None = None
) -> str | None:
    """A warning when other processes hold the CPU cores a minute-budgeted training needs.

    Budgets in minutes train fewer steps on a busy machine (on a 2-core machine with two other
    jobs running, a 3-minute retraining trained 143 steps instead of about 1,000), so such a
    run's accuracy says little. ``load``: cores busy with other processes (sampled by
    :func:`other_cpu_load`, else the 1-minute load average), ``cores``: the usable cores."""
    if load is None:
        load = other_cpu_load()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform
            return None
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    free = (cores or 1) - load
    if free >= threads - 0.5:
        return None
    return (
        f"the CPU is busy (other processes use {load:.1f} of {cores} cores) while this needs "
        f"{threads} thread(s): minute budgets will train fewer steps than on a quiet machine, "
        "so WERs are not comparable with other runs (budgets in steps are)"
    )


def run_search(
    cfg: SearchConfig,
    *,
    resume: bool = False,
    join: bool = False,
    console: Console | None = None,
) -> SearchOutcome | None:
    """Runs (or resumes) the search ``cfg`` describes and writes its results.

    ``join``: adds this machine's ``cfg.workers`` workers to a search already running on the
    same study (a shared storage such as PostgreSQL): they claim its free slots until none is
    left, and the search that started the study selects and retrains (returns None here). The
    running trials are left alone, and the starting search waits for those of joined workers
    (by their heartbeats) before it selects.

    A bad strategy name or option, a space the strategy cannot search, and constraints no
    architecture of the space meets fail first, before any file, corpus or training."""
    console = console or Console()
    given = cfg
    if join and resume:
        raise ValueError("--join and --resume: choose one (join adds workers to a live search)")
    if join and cfg.strategy.name == "oneshot":
        raise ValueError(
            "--join: the one-shot search trains one supernet; it has no trials to share"
        )
    tts = cfg.task == "tts"
    if tts:
        from speechnas.search.tts import check_tts_config, prepare_tts

        check_tts_config(cfg)
    driver = driver_for(cfg.strategy.name)(cfg)
    space = driver.setup()
    if cfg.artifacts:
        check_store(cfg.artifacts)
    if not tts:
        check_feasible(resolve_constraints(cfg, MIN_VOCAB), space)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tts:  # the TTS corpus, and the judge of intelligibility
        setup = prepare_tts(cfg, console)
        base = tbase = rbase = setup.base  # type: ignore[assignment]
    else:
        base = prepare_base(cfg)
        tbase = trial_base(cfg, base)
        rbase = retrain_base(cfg, base)
    ss = open_study(cfg.storage_url, cfg.study_name, len(cfg.objectives))
    _check_resume(given, ss, resume, join)
    before = {t.number for t in ss.trials()}
    interrupted = mark_interrupted(ss) if resume else []
    if interrupted:
        console.print(f"marked interrupted and to be run again: trials {interrupted}")
    vocab = setup.vocab_size if tts else vocab_size(tbase)
    cfg = resolve_constraints(cfg, vocab)
    driver.cfg = cfg  # the workers check the resolved limits
    for key, name in given.constraints.presets().items():
        value = getattr(cfg.constraints, key)
        console.print(f"constraints.{key}: {name} = {value:.4g} (preset {name!r} on {cfg.target})")
    progress = Progress(cfg, console)
    progress.total = driver.trial_budget()
    progress.skip(ss)
    deadline = None if cfg.max_minutes is None else time.time() + 60 * cfg.max_minutes
    how = driver.header()
    console.print(
        f"search {cfg.study_name!r}: space {cfg.space}, strategy {cfg.strategy.name}, "
        f"objectives {list(cfg.objectives)}, " + (f"{how}, " if how else "")
        + f"storage {shown_url(cfg.storage_url)}"
    )  # fmt: skip
    threads = cfg.workers * cfg.train.get("threads", 1)
    if driver.budgets_in_minutes() and (busy := busy_cpu_warning(threads)):
        console.print(f"[yellow]warning:[/] {busy}")
    status = console.status("starting") if console.is_terminal else contextlib.nullcontext()
    with status as live:
        progress.status = live
        driver.run(
            ss, tbase, vocab_size=vocab, progress=progress, deadline=deadline, console=console
        )
        if not join:  # trials of workers joined from elsewhere, then slots they left
            interrupted += _await_joined(cfg, ss, driver, tbase, vocab, progress, deadline, console)
        progress.update(ss)
        progress.status = None
    if join:
        mine = _new_trials_of_this_host(ss, before)
        console.print(
            f"joined search {cfg.study_name!r}: {len(mine)} trial(s) claimed on this host "
            f"({', '.join(map(str, mine)) or 'none'}); the search that started the study "
            "selects and retrains"
        )
        return None
    return finish(
        cfg,
        ss,
        driver.retrain_config(rbase),
        console=console,
        interrupted=interrupted,
        init_from=driver.init_from,
        given_presets=given.constraints.presets(),
    )


def _await_joined(
    cfg: SearchConfig,
    ss: SearchStudy,
    driver: Any,
    base: TrainConfig,
    vocab: int,
    progress: Progress,
    deadline: float | None,
    console: Console,
) -> list[int]:
    """After this search's own workers end: waits while trials of workers joined from elsewhere
    run (their heartbeats fresh); a trial whose worker went silent is marked interrupted and
    this search's workers run its slot again. Returns the interrupted trials' numbers."""
    from optuna.trial import TrialState

    interrupted: list[int] = []
    said = False
    while any(t.state == TrialState.RUNNING for t in ss.trials()):
        stale = mark_stale(ss, cfg.heartbeat_grace)
        if stale:
            console.print(f"trials {stale}: their workers fell silent; running them again")
            interrupted += stale
            if deadline is None or time.time() < deadline:
                driver.run(ss, base, vocab_size=vocab, progress=progress, deadline=deadline,
                           console=console)  # fmt: skip
            continue
        if not said:
            console.print("waiting for the trials of joined workers")
            said = True
        progress.update(ss)
        time.sleep(min(2.0, cfg.heartbeat_seconds))
    return interrupted


def _new_trials_of_this_host(ss: SearchStudy, before: set[int]) -> list[int]:
    """Trials not in ``before`` claimed by workers on this host (``worker``: HOST:PID:INDEX)."""
    import socket

    host = f"{socket.gethostname()}:"
    return [
        t.number
        for t in ss.trials()
        if t.number not in before and str(t.user_attrs.get("worker", "")).startswith(host)
    ]


def finish(
    cfg: SearchConfig,
    ss: SearchStudy,
    retrain_cfg: TrainConfig,
    *,
    console: Console,
    interrupted: Sequence[int] = (),
    init_from: Callable[[Result], str | None] = lambda selected: None,
    given_presets: dict[str, str] | None = None,
) -> SearchOutcome:
    """Writes ``pareto.json``, ``pareto.png`` and ``hypervolume.png``, prints the front, and
    retrains the selected architecture (when ``retrain_minutes`` > 0), from the checkpoint
    ``init_from(selected)`` names (None: from scratch)."""
    from speechnas.search.plots import plot_hypervolume, plot_pareto

    out = Path(cfg.output_dir)
    rows = results(ss)
    fr = front(rows)
    objectives = list(cfg.objectives)
    ref = reference_point(
        objectives, rows, given=cfg.reference, constraints=cfg.constraints.to_dict()
    )
    series = hypervolume_series(ss, ref)
    paths = {
        "pareto_json": out / "pareto.json",
        "pareto_png": out / "pareto.png",
        "hypervolume_png": out / "hypervolume.png",
    }
    points = [{"trial": r.trial, "rung": r.rung, "values": r.values} for r in rows]
    plot_pareto(points, [{"values": r.values} for r in fr], objectives, paths["pareto_png"],
                title=f"{cfg.study_name}: {len(rows)} architectures")  # fmt: skip
    plot_hypervolume(series, paths["hypervolume_png"], title=f"{cfg.study_name}: hypervolume")
    console.print(front_table(fr, objectives, f"Pareto front ({len(fr)} of {len(rows)})"))
    selected = retrained = None
    if rows:
        try:
            limits = cfg.constraints.to_dict()
            selected = select_for_target(rows, **limits, prefer=prefer_metric(cfg))
        except ValueError as e:
            console.print(f"[yellow]no selection:[/] {e}")
    if (
        selected is not None
        and cfg.task == "tts"
        and (cfg.retrain_minutes > 0 or cfg.retrain_steps)
    ):
        retrained = _retrain_tts(cfg, selected, retrain_cfg, out, console)
    elif selected is not None and (cfg.retrain_minutes > 0 or cfg.retrain_steps):
        init = init_from(selected)
        console.print(
            f"retraining trial {selected.trial} ({selected.key[:8]}) for "
            f"{cfg.retrain_minutes:g} min on all training data"
            + (f", starting from {init}" if init else "")
        )
        if not cfg.retrain_steps and (busy := busy_cpu_warning(cfg.retrain_threads or 1)):
            console.print(f"[yellow]warning:[/] {busy}")
        retrained = retrain(
            selected.arch,
            retrain_cfg,
            cfg.retrain_minutes or 1e6,
            out / "retrained",
            seed=cfg.seed,
            steps=cfg.retrain_steps,
            threads=cfg.retrain_threads,
            init_from=init,
        )
        for name in retrain_cfg.data.test:
            console.print(f"  {name}: WER {100 * retrained[f'wer:{name}']:.2f}%")
        if not isinstance(cfg.corpus, str) and cfg.corpus and len(cfg.corpus) > 1:
            # one search over several corpora (languages): the mean over their main test sets
            main = [f"wer:test-{n.partition('-')[2]}" for n in cfg.corpus]
            if all(m in retrained for m in main):
                retrained["wer:corpus-mean"] = sum(retrained[m] for m in main) / len(main)
                console.print(f"  mean over {len(main)} corpora: WER "
                              f"{100 * retrained['wer:corpus-mean']:.2f}%")  # fmt: skip
        if is_hardware_target(cfg.target):  # a real target: measure what is handed over
            preset_limit = (given_presets or {}).get("max_latency_ms")
            retrained.update(measure_on_target(retrained["checkpoint"], cfg, preset_limit))
            console.print(
                f"  latency on {cfg.target}: {retrained['latency_measured']:.2f} ms measured "
                f"(the fastest of {len(retrained['latency_measured_rounds_ms']) or 1} rounds), "
                f"{retrained['latency_predicted']:.2f} ms predicted"
            )
            if "chunk_latency_measured" in retrained:
                console.print(
                    f"  per chunk ({retrained['algorithmic_latency']:.0f} ms algorithmic "
                    f"latency): {retrained['chunk_latency_measured']:.2f} ms median, "
                    f"{retrained['chunk_latency_p90_measured']:.2f} ms p90 measured with "
                    f"states, {retrained['chunk_latency_predicted']:.2f} ms predicted; "
                    f"streaming export {retrained['stream_export']}"
                )
            measured = {"latency": retrained["latency_measured"]}
            limits = cfg.constraints.to_dict()
            if "latency_limit_measured" in retrained:  # like for like: timed beside the preset
                measured["latency"] = retrained["latency_beside_limit"]
                limits["max_latency_ms"] = retrained["latency_limit_measured"] * (
                    1 + RATIO_TOLERANCE  # a ratio of 1.005 is timing noise, not a miss
                )
                console.print(
                    f"  against preset {preset_limit!r}, timed in turn {PRESET_ROUNDS} times: "
                    f"{retrained['latency_beside_limit']:.2f} ms vs "
                    f"{retrained['latency_limit_measured']:.2f} ms (ratio "
                    f"{retrained['latency_ratio_to_limit']:.2f}; a miss beyond "
                    f"{1 + RATIO_TOLERANCE:.2f})"
                )
            for problem in violations(measured, limits, predicted=False):
                console.print(f"[yellow]the retrained model misses the target:[/] {problem}")
        console.print(f"model: {retrained['checkpoint']}")
    trials = ss.trials()
    write_pareto_json(
        paths["pareto_json"],
        {
            "study": cfg.study_name,
            "storage": shown_url(cfg.storage_url),
            "objectives": objectives,
            "reference": list(ref),
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "constraints_from_presets": given_presets,
            "versions": versions(),
            "trials": {
                **{
                    s: sum(
                        1
                        for t in trials
                        if t.state.name == s
                        and not is_interrupted(t)
                        and "screened" not in t.user_attrs
                    )
                    for s in ("COMPLETE", "FAIL", "PRUNED")
                },
                "screened": sum(1 for t in trials if "screened" in t.user_attrs),
            },
            "front": [r.to_dict(objectives) for r in fr],
            "results": [r.to_dict(objectives) for r in rows],
            "hypervolume": series,
            "selected": None if selected is None else selected.to_dict(objectives),
            "retrained": retrained,
        },
    )
    console.print(f"results: {paths['pareto_json']}, {paths['pareto_png']}")
    return SearchOutcome(ss, rows, fr, selected, retrained, paths, list(interrupted))


def _retrain_tts(
    cfg: SearchConfig, selected: Result, base: Any, out: Path, console: Console
) -> dict[str, Any]:
    """Retrains the selected TTS architecture and reports it (see speechnas.search.tts)."""
    from speechnas.search.tts import retrain_tts
    from speechnas.search.tts_judge import judge_path

    console.print(
        f"retraining trial {selected.trial} ({selected.key[:8]}) for "
        f"{cfg.retrain_minutes:g} min on all training data"
    )
    judge = judge_path(cfg)
    retrained = retrain_tts(
        selected.arch, base, cfg.retrain_minutes or 1e6, out / "retrained", seed=cfg.seed,
        steps=cfg.retrain_steps, threads=cfg.retrain_threads, judge=judge,
    )  # fmt: skip
    line = (
        f"  test: MCD {retrained['mcd']:.2f} dB, log-F0 RMSE {retrained['f0_rmse_cents']:.0f} cents"
    )
    if "tts_cer" in retrained:
        line += f", judge CER {100 * retrained['tts_cer']:.2f}%"
    console.print(line)
    console.print(
        f"  latency on one thread (3.2 s of speech): {retrained['latency_measured']:.2f} ms fp32"
        f", {retrained['latency_int8_measured']:.2f} ms int8 (RTF "
        f"{retrained['rtf_measured']:.4f}); ONNX parity {retrained['onnx_parity']:.1e}"
    )
    for s in retrained["samples"]:
        console.print(f"  sample: {s['wav']} ({s['text']})")
    console.print(f"model: {retrained['onnx']}")
    return retrained


def prefer_metric(cfg: SearchConfig) -> str:
    """The metric the selection minimises: the first error-rate objective, else the search
    test set's WER."""
    if cfg.task == "tts":
        return next((o for o in cfg.objectives if o in ("mcd", "tts_cer")), "mcd")
    fallback = "dev_wer" if cfg.search_test is None else f"wer:{cfg.search_test}"
    return next((o for o in cfg.objectives if is_error_rate(o)), fallback)


__all__ = [
    "SearchOutcome",
    "prefer_metric",
    "prepare_base",
    "retrain_base",
    "run_search",
    "trial_base",
]
