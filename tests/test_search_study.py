"""Search scheduling, objectives, selection and config on hand-made data, plus in-process
searches on the tiny corpus: a complete reproducible one, and one whose candidates are all
rejected before training."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from search_helpers import search_config

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.hardware import LatencyPredictor, load_target
from speechnas.hardware.evaluation import ROUNDS
from speechnas.nn.cost import analytic_macs
from speechnas.search.config import default_search_path, load_search_config
from speechnas.search.drivers.pool import observations
from speechnas.search.fidelity import (
    SlotState,
    next_job,
    plan,
    rank_pareto,
    rank_scalar,
    slot_id,
)
from speechnas.search.measure import PRESET_ROUNDS, measure_on_target
from speechnas.search.objectives import (
    ProxyLatency,
    Scalarizer,
    check_objective,
    is_error_rate,
    latency_model,
    objective_kind,
    violations,
)
from speechnas.search.runner import busy_cpu_warning, other_cpu_load, run_search
from speechnas.search.select import Result, select_for_target
from speechnas.space import Arch, load_space
from speechnas.train.checkpoint import load_model


def _done(number: int, values: tuple[float, ...] | None, key: str | None = None) -> SlotState:
    return SlotState(number, True, values, key or f"arch{number}")


def test_plan_spends_the_trial_budget_exactly() -> None:
    brackets = list(plan(candidates=9, eta=3, rungs=3, n_trials=20))
    assert [b.sizes for b in brackets] == [(9, 3, 1), (6, 1)]
    assert [b.first_proposal for b in brackets] == [0, 9]
    assert sum(b.trials for b in brackets) == 20
    endless = plan(candidates=4, eta=2, rungs=2, n_trials=None)
    assert [next(endless).sizes for _ in range(3)] == [(4, 2)] * 3


def test_successive_halving_promotes_by_rank_then_crowding() -> None:
    # Front 0: trials 0, 2, 3, 5; 0 and 5 are its extremes (infinite crowding distance), and 3
    # borders the wide gap to 5 (distance 0.8 + 15/35) while 2 sits near 0 and 3 (0.24 + 22/35).
    # Trial 1 is dominated, 4 failed, 6 and 7 are dominated, 8 repeats trial 0's architecture.
    points = {
        0: (0.10, 40.0),
        1: (0.40, 30.0),
        2: (0.20, 20.0),
        3: (0.22, 18.0),
        4: None,
        5: (0.60, 5.0),
        6: (0.70, 50.0),
        7: (0.65, 60.0),
        8: (0.10, 40.0),
    }
    slots = {slot_id(0, 0, i): _done(i, v, "arch0" if i == 8 else None) for i, v in points.items()}
    brackets = list(plan(candidates=9, eta=3, rungs=2, n_trials=12))
    promoted = []
    for _ in range(3):
        job = next_job(brackets, slots, rank_pareto)
        assert not isinstance(job, str) and job.rung == 1
        promoted.append(job.promote)
        slots[job.slot] = SlotState(100 + job.position, False, None, "x")
    assert promoted == [0, 5, 3]
    assert next_job(brackets, slots, rank_pareto) == "done"
    assert rank_pareto([(1.0, 1.0), (0.5, 2.0), (2.0, 2.0)]) == [0, 1, 2]
    assert rank_scalar(Scalarizer(("wer:test", "latency"), 0.0))([(0.3, 1), (0.1, 9)]) == [1, 0]


def test_promotion_waits_for_the_rung_below_and_prunes_empty_places() -> None:
    brackets = list(plan(candidates=3, eta=3, rungs=2, n_trials=8))  # (3, 1) twice
    slots = {slot_id(0, 0, 0): _done(0, (0.5, 1.0)), slot_id(0, 0, 1): _done(1, None)}
    slots[slot_id(0, 0, 2)] = SlotState(2, False, None, "arch2")  # still running
    job = next_job(brackets, slots, rank_pareto)
    assert not isinstance(job, str) and (job.bracket, job.rung, job.proposal) == (1, 0, 3)
    for i in range(3):
        slots[slot_id(1, 0, i)] = SlotState(3 + i, False, None, f"b{i}")
    assert next_job(brackets, slots, rank_pareto) == "wait"
    slots[slot_id(0, 0, 2)] = _done(2, None)  # finished, but failed
    slots.update({slot_id(1, 0, i): _done(3 + i, None) for i in range(3)})
    job = next_job(brackets, slots, rank_pareto)
    assert not isinstance(job, str) and job.promote == 0
    slots[job.slot] = _done(6, (0.4, 1.0))
    job = next_job(brackets, slots, rank_pareto)  # bracket 1: every candidate failed
    assert not isinstance(job, str) and job.promote is None
    assert job.note == "not promoted: only 0 of 3 candidates completed rung 0"


def test_synchronous_brackets_wait_for_every_earlier_trial() -> None:
    brackets = list(plan(candidates=3, eta=3, rungs=2, n_trials=8))  # (3, 1) twice
    slots = {slot_id(0, 0, i): _done(i, (0.5 + i, 1.0)) for i in range(3)}
    job = next_job(brackets, slots, rank_pareto, synchronous=True)
    assert not isinstance(job, str) and (job.rung, job.promote) == (1, 0)
    slots[job.slot] = SlotState(3, False, None, "arch0")  # the promotion runs
    assert next_job(brackets, slots, rank_pareto, synchronous=True) == "wait"
    job = next_job(brackets, slots, rank_pareto)  # asynchronous: the next bracket starts
    assert not isinstance(job, str) and (job.bracket, job.rung) == (1, 0)
    slots[slot_id(0, 1, 0)] = _done(3, (0.4, 1.0))
    job = next_job(brackets, slots, rank_pareto, synchronous=True)
    assert not isinstance(job, str) and (job.bracket, job.proposal) == (1, 3)


def test_a_hardware_target_predicts_with_a_table_extended_on_demand(tmp_path: Path) -> None:
    space = load_space(default_search_path().parent / "search-space.yaml")
    small, large = (
        space.validate(
            {"frontend": "knf80", "subsampling": "conv2d", "subsampling_factor": 4,
             "encoder": "conformer", "d_model": 64, "layers": n, "heads": 2,
             "ffn_dim": [128] * n, "conv_kernel": [7] * n, "macaron": False, "decoder": "ctc",
             "attention": "rel"}
        )
        for n in (2, 6)
    )  # fmt: skip
    model = latency_model("cpu-ort-1t", cache_dir=tmp_path)
    other_worker = latency_model("cpu-ort-1t", cache_dir=tmp_path)  # opened before any timing
    assert model.measured is False and model.name == "predicted:cpu-ort-1t"
    one, three = model.predict(small, 2.0, 30), model.predict(large, 2.0, 30)
    assert 0 < one < three  # the same blocks, three times over
    (table,) = tmp_path.glob("cpu-ort-1t-*.json")
    written = table.stat().st_mtime_ns
    assert other_worker.predict(large, 2.0, 30) == three  # the shared table's blocks, adopted
    again = latency_model("cpu-ort-1t", cache_dir=tmp_path)  # read back: nothing to measure
    assert again.predict(large, 2.0, 30) == three
    assert table.stat().st_mtime_ns == written
    cached = LatencyPredictor.for_target("cpu-ort-1t", cache_dir=tmp_path)  # the CLI's reader
    assert cached.cache_path == table and not cached.auto_extend
    assert cached.predict(large, 2.0, 30) == three and table.stat().st_mtime_ns == written
    empty = LatencyPredictor.for_target(load_target("cpu-ort-1t"), cache_dir=tmp_path / "new")
    assert empty.fits == {} and empty.cache_path is not None
    assert empty.cache_path.parent == tmp_path / "new" and empty.cache_path.name == table.name
    with pytest.raises(ValueError, match="is not calibrated"):
        empty.predict(small, 2.0, 30)  # no auto_extend: a missing block is an error, not a timing
    with pytest.raises(ValueError, match="cpu-ort-1t"):
        latency_model("no-such-device")


def test_objectives_constraints_and_scalar_reward() -> None:
    arch = load_space("conformer-ctc").sample(__import__("random").Random(0))
    macs = analytic_macs(arch, seconds=2.0, vocab_size=30).total
    assert ProxyLatency().predict(arch, 2.0, 30) == pytest.approx(1000 * macs / 2e9)
    bad = violations({"latency": 41.0, "params": 900}, {"max_latency_ms": 30, "max_params": 1000},
                     predicted=True)  # fmt: skip
    assert bad == ["predicted latency 41 ms > 30 ms"]
    s = Scalarizer(("wer:test", "latency"), 0.1)
    assert s((0.2, 10.0)) == pytest.approx(0.2 + 0.1 * math.log(10.0))
    assert s((0.2, 5.0)) < s((0.2, 10.0))
    assert check_objective("rtf:test-noisy") == "rtf:test-noisy"
    kinds = ["wer:test", "cer:test", "dev_wer", "rtf:test", "latency", "params", "memory", "macs"]
    assert [objective_kind(o) for o in kinds] == [
        "error", "error", "error", "speed", "latency", "size", "size", "compute",
    ]  # fmt: skip
    assert [is_error_rate(o) for o in kinds] == [True] * 3 + [False] * 5
    assert is_error_rate("dev_cer") and not is_error_rate("wer:")
    with pytest.raises(ValueError, match="'latency_ms' is not one of"):
        check_objective("latency_ms")


def _row(trial: int, rung: int, wer: float, latency: float, params: int) -> Result:
    return Result(
        arch=Arch(d_model=trial),
        key=f"k{trial}",
        trial=trial,
        rung=rung,
        fidelity={},
        values=(wer, latency),
        metrics={"wer:test": wer, "latency": latency, "params": params},
        trials=(trial,),
        output_dir=None,
    )


def test_select_for_target_prefers_the_highest_rung_and_names_the_closest() -> None:
    rows = [_row(0, 0, 0.10, 9.0, 100), _row(1, 1, 0.20, 8.0, 100), _row(2, 1, 0.15, 30.0, 300)]
    assert select_for_target(rows).trial == 2
    assert select_for_target(rows, max_latency_ms=10).trial == 1
    assert select_for_target(rows, max_latency_ms=9.5, max_params=150).trial == 1
    with pytest.raises(
        ValueError, match=r"no architecture meets max_latency_ms=5; closest: trial 1"
    ):
        select_for_target(rows, max_latency_ms=5)


def test_a_busy_machine_is_named_before_minute_budgets_train() -> None:
    assert busy_cpu_warning(2, load=0.1, cores=2) is None
    assert busy_cpu_warning(2, load=0.4, cores=2) is None  # a shell and a monitor
    warning = busy_cpu_warning(2, load=2.3, cores=2)
    assert warning and "use 2.3 of 2 cores" in warning and "steps" in warning
    assert busy_cpu_warning(1, load=2.3, cores=4) is None
    assert busy_cpu_warning(1, load=0.0) is None  # an idle machine, its own core count


def test_other_processes_cpu_use_is_sampled_without_this_ones() -> None:
    import subprocess
    import sys
    import threading
    import time

    idle = other_cpu_load(1.0)  # what other processes use already
    assert idle is not None
    if (os.cpu_count() or 1) - idle < 1.3:  # no free core for the spinner to show on
        pytest.skip(f"other processes already use {idle} of {os.cpu_count()} cores")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        others = other_cpu_load(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    own = threading.Thread(target=spin)
    own.start()
    try:
        mine = other_cpu_load(1.0)
    finally:
        stop.set()
        own.join()
    assert others is not None and mine is not None
    assert others - idle > 0.7  # one core spun by another process
    assert mine < others - 0.5  # a core spun by this process is not "other" load


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    cfg = load_search_config(default_search_path())
    assert cfg.objectives == ("dev_wer", "latency") and cfg.workers == 2
    bad = {
        "n_trial: 3": "unknown key(s) ['n_trial']",
        "fidelity: {eta: 1}": "fidelity.eta: expected an integer >= 2, got 1",
        "objectives: [wer]": "objectives: 'wer' is not one of",
        "fidelity: {rungs: [{minutes: 2}, {minutes: 1}]}": "fidelity.rungs[1].minutes",
        "constraints: {max_params: -1}": "constraints.max_params",
    }
    for text, message in bad.items():
        path = tmp_path / "s.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ValueError, match=re.escape(message)):
            load_search_config(path)


def test_search_completes_and_the_same_seed_proposes_the_same(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    runs = []
    for name in ("a", "b"):
        cfg = search_config(
            tiny_corpus,
            tmp_path / name,
            retrain_minutes=1 if name == "a" else 0,
            retrain_steps=2,
            retrain_threads=1,
        )
        runs.append(run_search(cfg))
    a = runs[0]
    keys = [[t.user_attrs["arch_key"] for t in r.study.trials()] for r in runs]
    assert keys[0] == keys[1] and len(keys[0]) == 4
    scores = [[t.user_attrs["metrics"]["cer:test"] for t in r.study.trials()] for r in runs]
    assert scores[0] == scores[1]  # step budgets: the same training on the CPU
    for t in (0, 3):  # the same weights, after rung 0 and after the promotion's extra steps
        wa, wb = (
            load_file(str(Path(r.study.trials()[t].user_attrs["output_dir"]) / "last" /
                          "model.safetensors"))
            for r in runs
        )  # fmt: skip
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    trials = a.study.trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    first, promoted = trials[0].user_attrs, trials[3].user_attrs
    assert Arch.from_json(first["arch"]).hash() == first["arch_key"]
    assert first["seed"] == 0 and "torch" in first["versions"] and first["fidelity"]["steps"] == 2
    assert {"wer:test", "cer:test", "dev_wer", "latency", "params", "macs"} <= set(first["metrics"])
    assert trials[0].params and all(v in first["arch"].values() or "." in k
                                    for k, v in trials[0].params.items())  # fmt: skip
    assert promoted["promoted_from"] in (0, 1, 2) and promoted["resumed_from"]
    assert promoted["metrics"]["steps"] == 4  # continued from the 2 steps of rung 0
    out = Path(a.paths["pareto_json"]).parent
    saved = json.loads((out / "pareto.json").read_text())
    assert saved["front"] and saved["seed"] == 0 and saved["config"]["n_trials"] == 4
    assert len(saved["hypervolume"]) == 4 and "arch" in saved["front"][0]
    for png in ("pareto.png", "hypervolume.png"):
        assert (out / png).stat().st_size > 5_000
    assert a.retrained is not None and a.retrained["steps"] == 2
    loaded = load_model(a.retrained["checkpoint"])
    assert loaded.meta["arch"] == a.selected.arch.to_json()  # type: ignore[union-attr]
    # On a hardware target the model handed over is measured, next to its prediction, and
    # against a preset: both timed in turn, compared as the median of the per-round ratios
    # (1-second utterances: the comparison holds at any length, in a fifth of the time).
    target = cfg.replace(target="cpu-ort-1t", latency_seconds=1.0)
    beside = measure_on_target(a.retrained["checkpoint"], target, "small")
    assert beside["latency_measured"] > 0 and beside["latency_predicted"] > 0
    assert beside["latency_measured"] == min(beside["latency_measured_rounds_ms"])
    assert len(beside["latency_measured_rounds_ms"]) == ROUNDS
    assert beside["model_bytes"] > 4 * loaded.model.num_parameters()
    assert beside["memory_measured_mb"] > 0
    model, limit = beside["latency_rounds_ms"], beside["latency_limit_rounds_ms"]
    assert len(model) == len(limit) == PRESET_ROUNDS
    ratios = sorted(m / p for m, p in zip(model, limit, strict=True))
    assert beside["latency_ratio_to_limit"] == pytest.approx(ratios[PRESET_ROUNDS // 2])
    assert beside["latency_ratio_to_limit"] < 1  # a tiny model against the 0.74 M preset
    assert beside["latency_limit_measured"] == pytest.approx(
        beside["latency_beside_limit"] / beside["latency_ratio_to_limit"]
    )


def test_constraint_rejects_candidates_before_training(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    # Over the smallest architecture's lower bound (14,962 parameters with a 2-token
    # vocabulary), so the search starts; under every architecture with the corpus's vocabulary.
    cfg = search_config(
        tiny_corpus,
        tmp_path,
        constraints={"max_params": 15_000},
        fidelity={"rungs": [{"minutes": 5, "steps": 2}], "candidates": 3},
        n_trials=3,
    )
    outcome = run_search(cfg)
    trials = outcome.study.trials()
    assert [t.state.name for t in trials] == ["FAIL"] * 3
    for t in trials:
        status = t.user_attrs["status"]
        assert status.startswith("rejected: predicted params ") and status.endswith("> 15,000")
        assert t.user_attrs["train_minutes"] == 0.0 and t.user_attrs["output_dir"] is None
    assert not (Path(cfg.output_dir) / "trials").exists()
    assert [o.values for o in observations(trials)] == [None] * 3  # what the strategy sees
    assert outcome.front == [] and outcome.selected is None


def test_a_repeated_architecture_is_not_trained_again(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    space = tmp_path / "two.yaml"  # two architectures: the third proposal must repeat one
    space.write_text(
        "name: two\nchoices:\n"
        + "".join(
            f"  - {{name: {k}, values: {v}}}\n"
            for k, v in [("frontend", "[fbank80]"), ("encoder", "[conformer]"),
                         ("d_model", "[16, 32]"), ("layers", "[1]"), ("heads", "[2]"),
                         ("decoder", "[ctc]")]
        )
    )  # fmt: skip
    cfg = search_config(
        tiny_corpus,
        tmp_path,
        space=str(space),
        strategy={"name": "random"},
        fidelity={"rungs": [{"minutes": 5, "steps": 1}], "candidates": 3},
        n_trials=3,
    )
    trials = run_search(cfg).study.trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    repeat = trials[2].user_attrs
    first = next(t for t in trials[:2] if t.user_attrs["arch_key"] == repeat["arch_key"])
    assert repeat["reused_from"] == first.number and repeat["status"] == "reused"
    assert (
        trials[2].values == first.values and repeat["output_dir"] == first.user_attrs["output_dir"]
    )
    assert len(list((Path(cfg.output_dir) / "trials").iterdir())) == 2
