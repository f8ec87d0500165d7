"""The search configuration: one frozen dataclass per section, validated when loaded.

A search YAML names the space, the strategy, the objectives and constraints, the fidelity rungs
of successive halving, the budgets, the storage and the base training configuration that every
trial starts from (a training YAML, inline overrides, or both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from speechnas.search.objectives import CONSTRAINT_KEYS, LIMITS, check_objective, objective_kind
from speechnas.search.trial import Fidelity
from speechnas.space import Arch, SearchSpace
from speechnas.train.config import TrainConfig, _build, config_from_dict, load_config

PROMOTIONS = ("auto", "pareto", "scalar")
# predicted: error rates predicted at the top rung replace the observed ones for promotion
RANK_BY = ("observed", "predicted")
TASKS = ("asr", "tts")  # what the searched models do: speech to text, or text to speech
BACKENDS = ("local", "ray")  # where the worker pool's workers run


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """Which strategy proposes architectures, with its own options (passed through).

    The name is checked against the drivers' strategies (:mod:`speechnas.search.drivers`),
    and the options by the strategy, when the search starts, before any work."""

    name: str = "nsga2"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"strategy.name: expected a strategy name, got {self.name!r}")


@dataclass(frozen=True, slots=True)
class ConstraintsConfig:
    """Hard limits, checked from predicted values before training and again after it.

    A limit is a number, or the name of a model preset (``max_latency_ms: small``): that
    preset's own value on the search's target, so "no slower than the preset I would otherwise
    ship" needs no measuring by hand. :meth:`resolve` turns names into numbers."""

    max_latency_ms: float | str | None = None
    max_params: int | str | None = None
    max_macs: int | str | None = None
    max_memory_mb: float | str | None = None
    # streaming searches
    max_chunk_latency_ms: float | str | None = None
    max_lookahead_ms: float | None = None
    max_algorithmic_latency_ms: float | None = None
    max_emission_delay_ms: float | None = None
    # Set by :meth:`resolve`, never by a config: constraint → the JSON of the architecture a
    # preset-named limit came from, so a measurement can be set beside it (verify_latency).
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        from speechnas.nn.presets import preset_names

        for name in CONSTRAINT_KEYS:
            v = getattr(self, name)
            if isinstance(v, str):
                if v not in preset_names():
                    raise ValueError(
                        f"constraints.{name}: {v!r} is neither a number nor a model preset; "
                        f"give a number > 0, null, or one of {preset_names()}"
                    )
            elif v is not None and (isinstance(v, bool) or v <= 0):
                raise ValueError(f"constraints.{name}: expected > 0 or null, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CONSTRAINT_KEYS}

    def presets(self) -> dict[str, str]:
        """The limits given as preset names: constraint → preset."""
        return {k: v for k, v in self.to_dict().items() if isinstance(v, str)}

    def resolve(
        self,
        value_of: Callable[[str, str], float],
        source_of: Callable[[str], str] | None = None,
    ) -> ConstraintsConfig:
        """The same limits with every preset name replaced by ``value_of(metric, preset)``,
        the preset's value of the metric the constraint limits (``latency``, ``params``...);
        ``source_of(preset)``, the JSON of the architecture it stands for, is kept in
        ``sources``."""
        named = self.presets()
        changes: dict[str, Any] = {k: value_of(LIMITS[k][0], v) for k, v in named.items()}
        if source_of is not None:
            changes["sources"] = tuple((k, source_of(v)) for k, v in named.items())
        return dataclasses.replace(self, **changes)

    def source(self, key: str) -> str | None:
        """The architecture (JSON) the resolved limit ``key`` came from, or None."""
        return dict(self.sources).get(key)


@dataclass(frozen=True, slots=True)
class RungConfig:
    """One rung of successive halving: minutes of training on a share of the data."""

    minutes: float
    fraction: float = 1.0
    steps: int | None = None  # an optional step cap (tests; reproducible small runs)

    def fidelity(self) -> Fidelity:
        return Fidelity(self.minutes, self.fraction, self.steps)


@dataclass(frozen=True, slots=True)
class FidelityConfig:
    """Successive halving: ``candidates`` at rung 0, the best ``1/eta`` promoted per rung."""

    rungs: tuple[RungConfig, ...] = (
        RungConfig(0.5, 0.5),
        RungConfig(1.5, 0.5),
    )
    eta: int = 3
    candidates: int = 9
    promotion: str = "auto"  # auto: pareto for several objectives, scalar for one
    # what promotion ranks: the values observed at the rung, or the error rates predicted at the
    # top rung from them and the architecture (speechnas.search.promote)
    rank_by: str = "observed"
    # The search's seeds (e.g. the presets) always reach the top rung: they are the control
    # every candidate is compared with at the same training budget.
    promote_seeds: bool = True
    # A bracket's candidates are proposed from the finished earlier brackets only, so several
    # workers propose exactly what one would (at the cost of idling at bracket boundaries).
    synchronous: bool = True

    def __post_init__(self) -> None:
        if not self.rungs:
            raise ValueError("fidelity.rungs: at least one rung is needed")
        for i, r in enumerate(self.rungs):
            try:
                r.fidelity()
            except ValueError as e:
                raise ValueError(f"fidelity.rungs[{i}]: {e}") from None
            if i and r.minutes < self.rungs[i - 1].minutes:
                raise ValueError(
                    f"fidelity.rungs[{i}].minutes: {r.minutes!r} is below the previous rung's "
                    f"{self.rungs[i - 1].minutes!r}; rungs must not shrink"
                )
        if self.eta < 2:
            raise ValueError(f"fidelity.eta: expected an integer >= 2, got {self.eta!r}")
        if self.candidates < 1:
            raise ValueError(f"fidelity.candidates: expected >= 1, got {self.candidates!r}")
        if self.rank_by not in RANK_BY:
            raise ValueError(f"fidelity.rank_by: {self.rank_by!r} is not one of {list(RANK_BY)}")
        if self.promotion not in PROMOTIONS:
            raise ValueError(
                f"fidelity.promotion: {self.promotion!r} is not one of {list(PROMOTIONS)}"
            )

    @property
    def heartbeat_grace(self) -> float:
        """Seconds without a heartbeat after which a running trial's worker counts as gone."""
        return 6 * self.heartbeat_seconds

    def fidelities(self) -> list[Fidelity]:
        return [r.fidelity() for r in self.rungs]


#: Objectives a screen can judge before training: error rates (predicted from the history) and
#: what the search predicts for every architecture.
SCREENABLE = ("latency", "chunk_latency", "algorithmic_latency", "params", "macs", "memory")


@dataclass(frozen=True, slots=True)
class ScreenConfig:
    """Screening of proposals before training (:mod:`speechnas.search.screen`): a proposal
    whose optimistic predicted objectives are dominated by a trial already trained at rung 0
    is recorded as screened and replaced by the strategy's next proposal."""

    confidence: float = 0.9  # of the predicted error rates' interval; its low end is judged
    min_history: int = 8  # completed rung-0 trials before any proposal is screened
    max_screened: int = 16  # per proposal; the last one is trained whatever its prediction

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"screen.confidence: expected in (0, 1), got {self.confidence!r}")
        if self.min_history < 5:
            raise ValueError(f"screen.min_history: expected >= 5, got {self.min_history!r}")
        if self.max_screened < 1:
            raise ValueError(f"screen.max_screened: expected >= 1, got {self.max_screened!r}")


@dataclass(frozen=True, slots=True)
class SearchConfig:
    # asr: speech recognisers (the default); tts: text-to-speech acoustic models on a TTS corpus
    # (``corpus: tts-en``), judged by MCD, intelligibility (``tts_cer``), latency and size
    task: str = "asr"
    space: str = "conformer-ctc"  # a built-in space name or a space YAML
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    objectives: tuple[str, ...] = ("wer:test", "latency")
    latency_lambda: float = 0.05  # scalar = wer + lambda * ln(latency_ms) (single-objective use)
    constraints: ConstraintsConfig = field(default_factory=ConstraintsConfig)
    target: str = "proxy"  # the latency target (see speechnas.search.objectives)
    latency_seconds: float = 5.0  # the utterance length latency, MACs and memory refer to
    reference: dict[str, Any] = field(default_factory=dict)  # hypervolume reference point
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    # Screening of proposals by predicted dominance before training; null: every proposal trains
    screen: ScreenConfig | None = None
    # Time a candidate on the target before training when its latency limit lies inside the
    # predictor's confidence band (beside the preset the limit names, if it names one); the
    # measured figure then decides and becomes its latency. false: predictions decide alone.
    verify_latency: bool = False
    n_trials: int | None = 24
    max_minutes: float | None = None
    workers: int = 1
    # where the workers run: "local" (processes on this machine) or "ray" (Ray tasks)
    backend: str = "local"
    ray_address: str | None = None  # "auto", HOST:PORT, or null: a local Ray of `workers` CPUs
    storage: str | None = None  # default: SQLite file study.db in output_dir
    study_name: str = "search"
    # Workers stamp their running trial this often; one silent for 6 beats is taken for dead
    # (its slot is run again) by a search waiting on workers joined from elsewhere (--join).
    heartbeat_seconds: float = 20.0
    # Where trial checkpoints are also kept, for workers that share no folder: an fsspec URL
    # (a path, file:///..., s3://bucket/prefix with s3fs, ...); null: the trial folders only.
    artifacts: str | None = None
    seed: int = 0
    output_dir: str = "runs/search"
    # a built-in corpus (``digits-en``), synthesized on first use; a list of them (one search
    # over several languages: see runner.builtin_data); or null (your own data under ``train``)
    corpus: tuple[str, ...] | str | None = "digits-en"
    corpus_sizes: dict[str, Any] = field(default_factory=dict)  # split -> utterances, per corpus
    corpora_dir: str = "corpora"
    base: str | None = None  # a training YAML ("baseline" = the packaged one) or null
    # overrides of the training config, merged into ``base``; ``data.test``, when given,
    # replaces the base's test sets
    train: dict[str, Any] = field(default_factory=dict)
    # Architectures tried first, whatever the strategy: preset names or Arch mappings.
    seeds: tuple[Any, ...] = ()
    search_test: str | None = "test"  # the test set scored by every trial; null: none
    test_sets: tuple[str, ...] = ()  # test sets for the retrained model; () = all of them
    retrain_minutes: float = 3.0  # 0 = no retraining
    retrain_steps: int | None = None
    retrain_threads: int = 2
    # TTS: the ASR model (an exported folder, ``speechnas export``) that transcribes synthesized
    # speech for ``tts_cer``; null: one is trained on the built-in digits corpus for
    # ``judge_minutes`` (once; kept under corpora_dir), 0 minutes: no intelligibility
    judge: str | None = None
    judge_minutes: float = 4.0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: {self.task!r} is not one of {list(TASKS)}")
        if self.judge_minutes < 0:
            raise ValueError(f"judge_minutes: expected >= 0, got {self.judge_minutes!r}")
        if self.task == "tts" and self.constraints.presets():
            named = self.constraints.presets()
            raise ValueError(f"constraints: {named} name ASR presets; a TTS search takes numbers")
        for split, n in self.corpus_sizes.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"corpus_sizes.{split}: expected a count >= 0, got {n!r}")
        if not self.objectives:
            raise ValueError("objectives: at least one objective is needed")
        for o in self.objectives:
            check_objective(o, task=self.task)
        if self.screen is not None:
            for o in self.objectives:
                if objective_kind(o) != "error" and o not in SCREENABLE:
                    raise ValueError(
                        f"screen: objective {o!r} is neither an error rate nor known before "
                        f"training ({', '.join(SCREENABLE)}); drop it or set screen: null"
                    )
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives: {list(self.objectives)} names one objective twice")
        for k, v in self.reference.items():
            if k not in self.objectives:
                raise ValueError(
                    f"reference.{k}: not an objective; objectives: {list(self.objectives)}"
                )
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ValueError(f"reference.{k}: expected a number > 0, got {v!r}")
        if self.latency_lambda < 0:
            raise ValueError(f"latency_lambda: expected >= 0, got {self.latency_lambda!r}")
        if self.latency_seconds <= 0:
            raise ValueError(f"latency_seconds: expected > 0, got {self.latency_seconds!r}")
        if self.n_trials is None and self.max_minutes is None:
            raise ValueError("n_trials and max_minutes: at least one budget must be set")
        if self.n_trials is not None and self.n_trials < 1:
            raise ValueError(f"n_trials: expected >= 1 or null, got {self.n_trials!r}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes: expected > 0 or null, got {self.max_minutes!r}")
        if self.workers < 1:
            raise ValueError(f"workers: expected >= 1, got {self.workers!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: {self.backend!r} is not one of {list(BACKENDS)}")
        if self.ray_address is not None and self.backend != "ray":
            raise ValueError(f"ray_address: {self.ray_address!r} is given but backend is "
                             f"{self.backend!r}; set backend: ray or drop ray_address")  # fmt: skip
        if self.artifacts is not None and not str(self.artifacts).strip():
            raise ValueError("artifacts: an empty URL; give a path or URL, or null")
        if self.heartbeat_seconds <= 0:
            raise ValueError(f"heartbeat_seconds: expected > 0, got {self.heartbeat_seconds}")
        if self.retrain_minutes < 0 or self.retrain_threads < 1:
            raise ValueError("retrain_minutes must be >= 0 and retrain_threads >= 1")
        if not self.study_name:
            raise ValueError("study_name: must not be empty")
        from speechnas.nn.presets import preset_names as asr_presets
        from speechnas.nn.tts import TTS_PRESETS

        def preset_names() -> list[str]:
            return sorted(TTS_PRESETS) if self.task == "tts" else asr_presets()

        for k, s in enumerate(self.seeds):
            if not isinstance(s, str | dict):
                raise ValueError(f"seeds[{k}]: expected a preset name or a mapping, got {s!r}")
            name = s if isinstance(s, str) else s.get("preset")
            if name is not None and name not in preset_names():
                raise ValueError(
                    f"seeds[{k}]: {name!r} is not a model preset; give one of {preset_names()}, "
                    "a preset with changed fields ({preset: small, frontend: knf80}) or an "
                    "architecture mapping"
                )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["constraints"] = self.constraints.to_dict()
        return out

    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **changes)

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{Path(self.output_dir).resolve() / 'study.db'}"

    @property
    def heartbeat_grace(self) -> float:
        """Seconds without a heartbeat after which a running trial's worker counts as gone."""
        return 6 * self.heartbeat_seconds

    def fidelities(self) -> list[Fidelity]:
        return self.fidelity.fidelities()

    def seed_archs(self, space: SearchSpace) -> list[Arch]:
        """The seeds as architectures of ``space``; a ValueError names one that is not."""
        from speechnas.nn.presets import preset
        from speechnas.nn.spec import decode

        if self.task == "tts":
            return self._tts_seed_archs(space)
        out = []
        for k, s in enumerate(self.seeds):
            if isinstance(s, str) or "preset" in s:
                fields = {} if isinstance(s, str) else {n: v for n, v in s.items() if n != "preset"}
                name = s if isinstance(s, str) else s["preset"]
                what = f"preset {name!r}" + (f" with {fields}" if fields else "")
                try:
                    arch = preset(name, **fields)
                except ValueError as e:
                    raise ValueError(f"seeds[{k}]: {what}: {e}") from None
            else:
                what, arch = "the architecture", Arch(s)
            # Fields the space does not name may be left out when they hold their defaults.
            inside = Arch({n: v for n, v in arch.items() if n in space.names})
            try:
                if dataclasses.replace(decode(inside), arch=arch) == decode(arch):
                    arch = inside
            except (KeyError, ValueError):
                pass  # validate() below names the problem
            try:
                out.append(space.validate(arch))
            except ValueError as e:
                raise ValueError(
                    f"seeds[{k}]: {what} is not a point of space {space.name!r}: {e}"
                ) from None
        return out

    def _tts_seed_archs(self, space: SearchSpace) -> list[Arch]:
        from speechnas.nn.tts import tts_preset

        out = []
        for k, s in enumerate(self.seeds):
            try:
                if isinstance(s, str) or "preset" in s:
                    name = s if isinstance(s, str) else s["preset"]
                    fields = (
                        {} if isinstance(s, str) else {n: v for n, v in s.items() if n != "preset"}
                    )
                    arch = tts_preset(name).replace(**fields)
                else:
                    arch = Arch(s)
                out.append(space.validate(arch))
            except ValueError as e:
                raise ValueError(f"seeds[{k}]: not a point of space {space.name!r}: {e}") from None
        return out


def default_search_path() -> Path:
    return Path(str(resources.files("speechnas") / "configs" / "search.yaml"))


def search_config_path(name: str | Path) -> Path:
    """A search YAML: ``name`` itself when it is a file, else the packaged
    ``search-<name>.yaml`` (``multilingual``) when there is one."""
    path = Path(name)
    packaged = Path(str(resources.files("speechnas") / "configs" / f"search-{name}.yaml"))
    return packaged if not path.is_file() and packaged.is_file() else path


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, mappings recursively."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def with_own_data(
    cfg: SearchConfig, train: str, dev: str, tests: dict[str, str] | None = None
) -> SearchConfig:
    """``cfg`` searching on your manifests (JSONL or Kaldi dirs) instead of the built-in corpus:
    trials train on ``train`` and are judged on ``dev``; ``tests`` (name -> manifest) are
    scored by the retrained model. The YAML equivalent is ``corpus: null`` with
    ``train: {data: {train: ..., dev: ..., test: {...}}}``."""
    data = {
        "train": str(train),
        "dev": str(dev),
        "test": {k: str(v) for k, v in (tests or {}).items()},
    }
    train_over = _merge(cfg.train, {"data": data})
    train_over["data"]["test"] = data["test"]  # replaced, not merged with the YAML's
    return cfg.replace(corpus=None, train=train_over)


def base_train_config(cfg: SearchConfig) -> TrainConfig:
    """The training configuration every trial starts from: ``base`` with ``train`` on top."""
    base: dict[str, Any] = {}
    if cfg.base:
        path = Path(cfg.base)
        if cfg.base == "baseline":
            path = Path(str(resources.files("speechnas") / "configs" / "baseline.yaml"))
        base = load_config(path).to_dict()
        base.pop("model", None)  # the architecture replaces the model section
    merged = _merge(base, cfg.train)
    tests = (
        cfg.train.get("data", {}).get("test") if isinstance(cfg.train.get("data"), dict) else None
    )
    if tests is not None:  # the test sets given replace the base's (those read its corpus)
        merged["data"]["test"] = tests
    try:
        return config_from_dict(merged)
    except ValueError as e:
        raise ValueError(f"train: {e}") from None


def search_config_from_dict(d: dict[str, Any]) -> SearchConfig:
    if "rungs" in d.get("fidelity", {}) and not d["fidelity"]["rungs"]:
        raise ValueError("fidelity.rungs: at least one rung is needed")
    return _build(SearchConfig, d, "")


def load_search_config(path: str | Path) -> SearchConfig:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"search config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    try:
        cfg = search_config_from_dict(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    folder = path.resolve().parent
    return cfg.replace(space=_beside(cfg.space, folder), base=_beside(cfg.base, folder))


def _beside(value: str | None, folder: Path) -> str | None:
    """A relative YAML path that does not exist from the working folder but does next to the
    search config, made absolute; anything else unchanged."""
    if value is None or not value.endswith((".yaml", ".yml")):
        return value
    p = Path(value)
    if p.is_absolute() or p.exists() or not (folder / p).is_file():
        return value
    return str(folder / p)


__all__ = [
    "ConstraintsConfig",
    "FidelityConfig",
    "RungConfig",
    "ScreenConfig",
    "SearchConfig",
    "StrategyConfig",
    "base_train_config",
    "default_search_path",
    "load_search_config",
    "search_config_from_dict",
]
