"""A finished search's output folder read back (the study, its results and front, the config,
the retrained selection; :mod:`speechnas.search.runner` writes it), and a new selection from it
for another deployment target without searching again."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechnas.search.config import SearchConfig, search_config_from_dict
from speechnas.search.select import Result, front, results
from speechnas.search.study import SearchStudy, live_trials, open_study

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


@dataclass(frozen=True)
class Run:
    """What the report and the reselection read from ``RUN_DIR``."""

    folder: Path
    study: SearchStudy
    config: SearchConfig
    objectives: tuple[str, ...]
    trials: list[FrozenTrial]  # every trial but interrupted ones, in number order
    results: list[Result]
    front: list[Result]
    pareto: dict[str, Any]  # pareto.json ({} when the run has none yet)

    @property
    def name(self) -> str:
        return self.study.study.study_name

    @property
    def retrained(self) -> dict[str, Any] | None:
        return self.pareto.get("retrained")

    @property
    def selected_key(self) -> str | None:
        sel = self.pareto.get("selected")
        return None if sel is None else sel.get("key")


def _study_name(folder: Path, url: str, pareto: dict[str, Any]) -> str:
    import optuna

    if pareto.get("study"):
        return str(pareto["study"])
    names = optuna.get_all_study_names(url)
    if len(names) != 1:
        raise ValueError(
            f"{folder / 'study.db'} holds {len(names)} studies ({names}) and {folder} has no "
            "pareto.json naming one; run the report on the search's own output folder"
        )
    return names[0]


def load_run(folder: str | Path) -> Run:
    """Opens the search output folder ``folder`` (its ``study.db`` and ``pareto.json``)."""
    folder = Path(folder)
    db = folder / "study.db"
    if not db.is_file():
        raise ValueError(
            f"{db} does not exist: RUN_DIR must be a search's output_dir (it holds study.db, "
            "pareto.json, trials/); a study in another storage is reported from the folder "
            "the search wrote its pareto.json to"
        )
    pj = folder / "pareto.json"
    pareto: dict[str, Any] = json.loads(pj.read_text()) if pj.is_file() else {}
    url = f"sqlite:///{db.resolve()}"
    name = _study_name(folder, url, pareto)
    import optuna

    n_obj = len(optuna.load_study(study_name=name, storage=url).directions)
    ss = open_study(url, name, n_obj)
    stored = ss.study.user_attrs.get("config") or pareto.get("config")
    if stored is None:
        raise ValueError(
            f"study {name!r} in {db} has no stored search config (user attribute 'config'); "
            "it was not written by speechnas search"
        )
    cfg = search_config_from_dict(stored)
    rows = results(ss)
    return Run(
        folder=folder,
        study=ss,
        config=cfg,
        objectives=tuple(cfg.objectives),
        trials=live_trials(ss),
        results=rows,
        front=front(rows),
        pareto=pareto,
    )


def reselect(
    run: Run,
    *,
    prefer: str | None = None,
    retrain_minutes: float | None = None,
    retrain_steps: int | None = None,
    output_dir: str | Path | None = None,
    **limits: float | None,
) -> tuple[Result, dict[str, Any] | None]:
    """The architecture of ``run`` that meets ``limits`` (any of
    :data:`~speechnas.search.objectives.CONSTRAINT_KEYS`) with the lowest ``prefer`` metric
    (the search's own selection metric by default), without searching again; retrained on all
    the training data like the search's own selection when ``retrain_minutes`` or
    ``retrain_steps`` is given (into ``output_dir``, by default
    ``RUN_DIR/reselected/<arch key>``). Returns the choice and the retrained metrics (or None)."""
    from speechnas.search.drivers import driver_for
    from speechnas.search.runner import prefer_metric, prepare_base, retrain_base
    from speechnas.search.select import retrain, select_for_target

    cfg = run.config
    chosen = select_for_target(run.results, prefer=prefer or prefer_metric(cfg), **limits)
    if retrain_minutes is None and retrain_steps is None:
        return chosen, None
    driver = driver_for(cfg.strategy.name)(cfg)
    base = driver.retrain_config(retrain_base(cfg, prepare_base(cfg)))
    out = Path(output_dir) if output_dir else run.folder / "reselected" / chosen.key[:8]
    metrics = retrain(
        chosen.arch,
        base,
        retrain_minutes or 1e6,
        out,
        seed=cfg.seed,
        steps=retrain_steps,
        threads=cfg.retrain_threads,
        init_from=driver.init_from(chosen),
    )
    return chosen, metrics


__all__ = ["Run", "load_run", "reselect"]
