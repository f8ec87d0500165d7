"""The training configuration: one frozen dataclass per section, validated when loaded."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speechnas.data.config import DataConfig, TokenizerConfig
from speechnas.data.dataset import AugmentConfig
from speechnas.data.features import FeatureConfig, SpecAugmentConfig
from speechnas.nn.presets import PRESETS, preset, preset_names
from speechnas.nn.spec import ENCODERS
from speechnas.space import SAMPLE_BY, Arch, load_space


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Which hand-designed architecture to train when no ``arch`` is given, and the dropout.

    In YAML, any architecture field may follow the preset name to change it
    (``model: {preset: small, layers: 6}``); the result becomes the config's ``arch``.
    """

    preset: str = "base"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(
                f"model.preset: {self.preset!r} is unknown; choose from {preset_names()}"
            )
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout: {self.dropout!r} is not in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class LrScaleConfig:
    """Scale the peak learning rate down for encoders bigger than a reference size.

    ``optim.lr`` is the peak rate of an encoder of ``d_model`` width and ``layers`` depth or
    smaller; a bigger one gets ``lr · (d_model · layers / (its width · its depth)) ** power``.
    The square root follows the Transformer schedule's ``d_model ** -0.5`` and extends it to
    depth, since a deeper residual stack sums more branches into the same stream. One peak rate
    does not suit a space of 0.2–2.3 M parameter Conformers: the rate that trains the smallest
    keeps the biggest in CTC's all-blank phase (``bench/supernet_rank.py``).

    ``encoders`` names the encoder families the rule applies to (None: every family); the
    others train at ``lr`` whatever their size. Separable-convolution stacks (``cnn``) are
    left out of the packaged recipe: a 192 x 6 one trained to 41.0% dev WER at the scaled
    0.001 and to 30.1% at 0.003 (1,000 steps, two seeds each).
    """

    d_model: int = 64
    layers: int = 2
    power: float = 0.5
    encoders: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("d_model", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"optim.lr_scale.{name}: expected an integer >= 1, got {value!r}")
        if not 0.0 <= self.power <= 2.0:
            raise ValueError(f"optim.lr_scale.power: {self.power!r} is not in [0, 2]")
        unknown = sorted(set(self.encoders or ()) - set(ENCODERS))
        if unknown:
            raise ValueError(
                f"optim.lr_scale.encoders: {unknown} are not encoder families; choose from "
                f"{list(ENCODERS)}"
            )

    def factor(self, d_model: int, layers: int, encoder: str | None = None) -> float:
        """The multiplier of the peak rate for an ``encoder`` of this width and depth (<= 1);
        1 for a family outside ``encoders``."""
        if self.encoders is not None and encoder not in self.encoders:
            return 1.0
        return min(1.0, (self.d_model * self.layers / (d_model * layers)) ** self.power)


@dataclass(frozen=True, slots=True)
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 150
    clip_norm: float = 5.0
    max_batch_seconds: float = 120.0
    # Lower the peak rate for bigger encoders (None: every model gets `lr`).
    lr_scale: LrScaleConfig | None = None

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.max_batch_seconds <= 0 or self.clip_norm <= 0:
            raise ValueError("optim: lr, clip_norm and max_batch_seconds must be positive")

    def peak_lr(self, d_model: int, layers: int, encoder: str | None = None) -> float:
        """The peak learning rate of an ``encoder`` of this width and depth."""
        if self.lr_scale is None:
            return self.lr
        return self.lr * self.lr_scale.factor(d_model, layers, encoder)

    def fixed(self, lr: float | None, **changes: Any) -> OptimConfig:
        """This recipe at the absolute peak rate ``lr`` (no scaling): for fine-tuning at a
        rate already chosen for the model; ``lr`` None keeps the recipe's own (scaled) rate."""
        if lr is None:
            return dataclasses.replace(self, **changes)
        return dataclasses.replace(self, lr=lr, lr_scale=None, **changes)


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """When training stops: whichever limit comes first."""

    max_minutes: float | None = None  # wall-clock minutes of training (evaluation excluded)
    max_epochs: int = 100
    max_steps: int | None = None
    patience: int | None = 5  # epochs without a better dev WER before stopping
    eval_at_minutes: tuple[float, ...] = ()  # extra test-set evaluations at these marks
    checkpoint_every_minutes: float = 2.0

    def used(self, step: int, seconds: float, steps_per_epoch: int) -> float:
        """The share of the budget spent after ``step`` steps and ``seconds`` of training: of
        ``max_steps`` when set, else of ``max_minutes``, else of ``max_epochs``; at most 1."""
        if self.max_steps is not None:
            share = step / max(1, self.max_steps)
        elif self.max_minutes is not None:
            share = seconds / max(1e-9, 60 * self.max_minutes)
        else:
            share = step / max(1, self.max_epochs * steps_per_epoch)
        return min(1.0, share)


#: how progressive shrinking opens the supernet's choices (speechnas.nn.supernet.SHRINK_STAGES)
SHRINK_ORDERS = ("together", "staged")


@dataclass(frozen=True, slots=True)
class SupernetConfig:
    """Train a weight-sharing supernet over ``space`` instead of one architecture.

    Each step trains the largest path on the labels and, by the sandwich rule, the smallest and
    ``random_subnets`` random paths on the labels mixed with distillation from the largest path
    (weight ``distill``). ``fixed`` sets the space's non-elastic choices (default: first value).
    ``path_draw`` is how the random paths are drawn (:meth:`SearchSpace.sample`): "choice",
    each elastic choice uniform over its values, so every depth is trained about as often, or
    "architecture", uniform over the paths, which in a space with per-layer widths is almost
    always the deepest (83% of them at 6 layers in the default space).

    ``shrink`` > 0 trains by progressive shrinking (after Once-for-All): over that share of the
    budget the students' paths open up from the largest path's values to every value, each
    elastic choice keeping its largest ``1 + floor(n * progress / shrink)`` of its ``n``
    values; students that would be the largest path itself are skipped. 0: the whole subspace
    from the first step. ``shrink_order``: "together" opens every choice at once; "staged"
    opens them one stage after another in Once-for-All's order (kernel, then depth, then
    width), each stage over an equal part of that share.
    """

    random_subnets: int = 2
    distill: float = 0.5
    fixed: dict[str, Any] = field(default_factory=dict)
    path_draw: str = "choice"
    shrink: float = 0.0
    shrink_order: str = "together"

    def __post_init__(self) -> None:
        if isinstance(self.random_subnets, bool) or self.random_subnets < 0:
            raise ValueError(f"supernet.random_subnets: expected >= 0, got {self.random_subnets!r}")
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError(f"supernet.distill: {self.distill!r} is not in [0, 1]")
        if self.path_draw not in SAMPLE_BY:
            raise ValueError(
                f"supernet.path_draw: {self.path_draw!r} is not one of {list(SAMPLE_BY)}"
            )
        if isinstance(self.shrink, bool) or not 0.0 <= self.shrink < 1.0:
            raise ValueError(
                f"supernet.shrink: {self.shrink!r} is not in [0, 1) (the share of the budget "
                "over which the paths open up; 0 for none)"
            )
        if self.shrink_order not in SHRINK_ORDERS:
            raise ValueError(
                f"supernet.shrink_order: {self.shrink_order!r} is not one of {list(SHRINK_ORDERS)}"
            )


IMPORTANCES = ("taylor", "magnitude", "gradient")
DMAO_INITS = ("copy", "random")


@dataclass(frozen=True, slots=True)
class DmaoConfig:
    """Reallocate the encoder's parameters once during training (:mod:`speechnas.train.dmao`).

    At ``at`` of the budget (of ``budget.max_steps`` when set, else ``max_minutes``, else
    ``max_epochs``), the ``delta`` share of parameter groups least important per parameter is
    dropped and the most important ones are duplicated until the parameter count is restored.
    ``importance``: ``taylor`` (|Σ w·∂L/∂w| per group), ``magnitude`` (Σ w²) or ``gradient``
    (Σ |∂L/∂w|), smoothed over steps with weight ``ema`` on the past. ``init``: ``copy`` (the
    duplicate copies its weights, outgoing ones halved in both: the function is kept) or
    ``random`` (a fresh initialisation). ``*_chunk``: units per group of feed-forward units,
    convolution channels and cgMLP unit pairs; 0 sizes them like one attention head.
    """

    at: float = 0.2
    delta: float = 0.15
    importance: str = "taylor"
    ema: float = 0.9
    init: str = "copy"
    ffn_chunk: int = 0
    conv_chunk: int = 0
    cgmlp_chunk: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.at < 1.0:
            raise ValueError(f"dmao.at: {self.at!r} is not in (0, 1); give a share of training")
        if not 0.0 < self.delta <= 0.5:
            raise ValueError(f"dmao.delta: {self.delta!r} is not in (0, 0.5]")
        if self.importance not in IMPORTANCES:
            raise ValueError(
                f"dmao.importance: {self.importance!r} is not one of {list(IMPORTANCES)}"
            )
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"dmao.ema: {self.ema!r} is not in [0, 1)")
        if self.init not in DMAO_INITS:
            raise ValueError(f"dmao.init: {self.init!r} is not one of {list(DMAO_INITS)}")
        for name in ("ffn_chunk", "conv_chunk", "cgmlp_chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"dmao.{name}: expected an integer >= 0 (0: auto), got {value!r}")


@dataclass(frozen=True, slots=True)
class DynamicChunkConfig:
    """Train a streaming model at many latencies at once (dynamic chunk training, as in
    WeNet): each batch runs at a chunk size drawn from ``chunks`` (encoder frames), in full
    context with probability ``full_context``, and with the architecture's look-ahead (capped
    at the chunk) with probability ``lookahead``, else none. One model then serves every chunk
    size and look-ahead up to its own at evaluation and export; evaluation during training uses
    the architecture's own chunk and look-ahead."""

    chunks: tuple[int, ...] = (4, 8, 16)
    full_context: float = 0.25
    lookahead: float = 0.5

    def __post_init__(self) -> None:
        if not self.chunks or any(isinstance(c, bool) or c < 1 for c in self.chunks):
            raise ValueError(
                f"dynamic_chunk.chunks: expected positive chunk sizes, got {list(self.chunks)}"
            )
        for name in ("full_context", "lookahead"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"dynamic_chunk.{name}: {value!r} is not a probability in [0, 1]")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    seed: int = 0
    threads: int = 2
    output_dir: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    # The architecture decides the input features (its frontend); set here they are checked
    # against it.
    features: FeatureConfig | None = None
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    # An architecture (Arch JSON), e.g. from a search space; when set it replaces `model.preset`,
    # and `space`, when set, names the space that validates it.
    arch: dict[str, Any] | None = None
    space: str | None = None
    # A weight-sharing supernet over `space` (which must be set; `arch` must not be).
    supernet: SupernetConfig | None = None
    # A checkpoint folder of the same architecture whose weights and normalisation start the
    # training (fine-tuning; an extracted supernet path, say) instead of a random init.
    init_from: str | None = None
    # Reallocate parameters between attention heads, convolution and feed-forward groups once
    # during training (Conformer and E-Branchformer encoders).
    dmao: DmaoConfig | None = None
    # Streaming architectures only: vary the chunk size and look-ahead from batch to batch.
    dynamic_chunk: DynamicChunkConfig | None = None

    def __post_init__(self) -> None:
        if self.supernet is not None and (self.space is None or self.arch is not None):
            raise ValueError("supernet: needs `space` (the subspace to share) and no `arch`")
        if self.supernet is not None and self.dmao is not None:
            raise ValueError("dmao: does not apply to a supernet training; drop one of the two")
        if self.supernet is not None and self.dynamic_chunk is not None:
            raise ValueError("dynamic_chunk: does not apply to a supernet training; drop it")

    def architecture(self) -> Arch:
        """The architecture to train: ``arch`` (validated by ``space`` when set), else the
        ``model.preset``. (A supernet config trains its space's largest path and more.)"""
        if self.arch is None:
            return preset(self.model.preset)
        arch = Arch.from_json(self.arch)
        return load_space(self.space).validate(arch) if self.space else arch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _build(cls: type, value: Any, where: str) -> Any:
    """Builds dataclass ``cls`` from a mapping, naming the offending key on a mistake."""
    if value is None:
        return None
    if not dataclasses.is_dataclass(cls):
        return _coerce(cls, value, where)
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in value.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where or 'config'}: {e}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for a in args[1:]:  # a later member that takes the value as it is (int | str: "small")
            if a in (int, str, bool) and isinstance(value, a) and not isinstance(value, bool):
                return value
        return _coerce(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(inner, v, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        if typing.get_args(tp)[1] is Any:
            return dict(value)
        return {str(k): str(v) for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    d = dict(d)
    model = d.get("model")
    if isinstance(model, dict) and set(model) - _MODEL_KEYS:
        # A preset with some of its architecture's fields changed: that architecture.
        model = dict(model)
        overrides = {k: model.pop(k) for k in sorted(set(model) - _MODEL_KEYS)}
        name = model.get("preset", ModelConfig.preset)
        if d.get("arch") is not None:
            raise ValueError(
                f"model: {sorted(overrides)} change the preset's architecture, but `arch` is "
                "set too; put those fields in `arch`"
            )
        allowed = sorted(_MODEL_KEYS | set(PRESETS.get(name, {})) | {"subsampling_channels"})
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            raise ValueError(f"model: unknown key(s) {unknown}; allowed: {allowed}")
        try:
            d["arch"] = preset(name, **overrides).to_json()
        except ValueError as e:
            raise ValueError(f"model: {e}") from None
        d["model"] = model
    return _build(TrainConfig, d, "")


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    try:
        return config_from_dict(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


__all__ = [
    "AugmentConfig",
    "BudgetConfig",
    "DataConfig",
    "DmaoConfig",
    "DynamicChunkConfig",
    "FeatureConfig",
    "LrScaleConfig",
    "ModelConfig",
    "OptimConfig",
    "SpecAugmentConfig",
    "SupernetConfig",
    "TokenizerConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
]
