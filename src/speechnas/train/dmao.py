"""DMAO: one reallocation of an encoder's parameters between groups, during training.

Dynamic Model Architecture Optimization (arXiv 2506.13180) splits the encoder of a Conformer or
E-Branchformer into parameter *groups*, scores them while training, and once, at a share of the
training budget, drops the least important groups and duplicates the most important ones, so the
parameter count stays the same (within one group) and the model stays an ordinary architecture.

Groups, per layer (each a set of *units* and the slices of the weights that belong to them):

* ``head``: one attention head (its q/k/v rows, output-projection columns, relative-position
  projection rows and biases); the layer's heads become the architecture's ``layer_heads``.
* ``ffn``: a chunk of feed-forward hidden units, taken in both feed-forward modules of the layer
  at once, so that the layer keeps one ``ffn_dim``.
* ``conv``: a chunk of the Conformer convolution module's channels (pointwise-in value and gate
  rows, depthwise filter, its norm, pointwise-out columns): ``conv_dim``.
* ``cgmlp``: a chunk of the E-Branchformer cgMLP's unit pairs (up-projection rows of both halves,
  gate norm and conv, down-projection columns): ``cgmlp_dim``.

Chunks default to about the parameters of one attention head, so that groups of every kind
weigh about the same. Importance is first-order Taylor ``|Σ w·∂L/∂w|`` over a group (or
``Σ w²``, magnitude, or ``Σ |∂L/∂w|``, gradient), smoothed over steps by an exponential moving
average; groups are ranked by importance per parameter.

The rule that keeps the function: a duplicated unit gets a copy of its incoming weights, and its
outgoing weights (the columns of the map back to d_model) are halved in both the original and the
copy, so the two halves add up to the original contribution. This is exact for heads and
feed-forward units. Convolution channels and cgMLP gates pass through a LayerNorm over their
channels (``dw_norm``, ``gate_norm``), whose mean and variance now count the copied channels
twice; the copies compute exactly what their originals do up to that norm, and the module's
output changes by the shift of those statistics. Optimizer moments are carried over for kept
units and start at zero for the copies.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from speechnas.nn.blocks._stack import AttentionStack
from speechnas.nn.build import SpeechModel, build
from speechnas.nn.spec import ArchSpec, decode
from speechnas.space.arch import Arch
from speechnas.train.config import BudgetConfig, DmaoConfig

__all__ = [
    "DMAO_ENCODERS",
    "Dmao",
    "Group",
    "Plan",
    "UnitSet",
    "apply",
    "arch_for",
    "carry_optimizer",
    "layer_prefix",
    "make_groups",
    "plan",
    "unit_sets",
]

DMAO_ENCODERS = ("conformer", "ebranchformer")


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a unit's weights lie in one parameter: along ``dim``, ``width`` entries per unit,
    repeated in ``sections`` equal blocks (q/k/v: 3, GLU value/gate: 2). ``outgoing``: the map
    that brings the unit's output back to d_model (halved when the unit is duplicated)."""

    name: str
    dim: int
    width: int = 1
    sections: int = 1
    outgoing: bool = False

    def index(self, units: list[int], old_units: int) -> torch.Tensor:
        """Entries along ``dim`` of the units ``units`` (in order) in a parameter built for
        ``old_units`` units; the result lays them out as a parameter for len(units) units."""
        u = torch.tensor(units, dtype=torch.long)[:, None] * self.width + torch.arange(self.width)
        blocks = [s * old_units * self.width + u.reshape(-1) for s in range(self.sections)]
        return torch.cat(blocks)

    def expand(self, per_unit: torch.Tensor) -> torch.Tensor:
        """A value per unit → a value per entry along ``dim`` (the layout of :meth:`index`)."""
        return per_unit.repeat_interleave(self.width).repeat(self.sections)

    def per_unit(self, values: torch.Tensor, units: int) -> torch.Tensor:
        """Sums ``values`` (shaped like the parameter) over everything but the units → (U,)."""
        v = values.movedim(self.dim, 0).reshape(values.shape[self.dim], -1).sum(1)
        return v.view(self.sections, units, self.width).sum((0, 2))


@dataclass(frozen=True, slots=True)
class UnitSet:
    """The units of one kind in one layer and the slices of the parameters they own."""

    layer: int
    kind: str
    units: int
    slots: tuple[Slot, ...]


def _ffn_slots(module: str, rank: int) -> list[Slot]:
    if rank == 0:
        up, down = f"{module}.up", f"{module}.down"
    else:  # factorised: the hidden units are the rows of up[1] and the columns of down[0]
        up, down = f"{module}.up.1", f"{module}.down.0"
    return [
        Slot(f"{up}.weight", 0),
        Slot(f"{up}.bias", 0),
        Slot(f"{down}.weight", 1, outgoing=True),
    ]


def unit_sets(spec: ArchSpec) -> list[UnitSet]:
    """Every unit set of a Conformer or E-Branchformer encoder, layer by layer."""
    if spec.encoder not in DMAO_ENCODERS:
        raise ValueError(
            f"dmao: reallocates the groups of a {' or '.join(DMAO_ENCODERS)} encoder, not "
            f"{spec.encoder!r}; drop the `dmao` section or train one of those"
        )
    out: list[UnitSet] = []
    hd = spec.head_dim
    for i, ly in enumerate(spec.layer):
        heads = [
            Slot("attn.qkv.weight", 0, hd, 3),
            Slot("attn.qkv.bias", 0, hd, 3),
            Slot("attn.proj.weight", 1, hd, outgoing=True),
        ]
        if spec.attention == "rel":
            heads += [Slot("attn.pos_proj.weight", 0, hd), Slot("attn.u", 0), Slot("attn.v", 0)]
        out.append(UnitSet(i, "head", ly.heads, tuple(heads)))
        two = spec.encoder == "ebranchformer" or spec.macaron
        ffn = [
            s for m in (("ff1", "ff2") if two else ("ff2",)) for s in _ffn_slots(m, ly.ffn_lowrank)
        ]
        out.append(UnitSet(i, "ffn", ly.ffn_dim, tuple(ffn)))
        if spec.encoder == "conformer":
            conv = (
                Slot("conv.pw1.weight", 0, sections=2),
                Slot("conv.pw1.bias", 0, sections=2),
                Slot("conv.dw.conv.weight", 0),
                Slot("conv.dw.conv.bias", 0),
                Slot("conv.dw_norm.weight", 0),
                Slot("conv.dw_norm.bias", 0),
                Slot("conv.pw2.weight", 1, outgoing=True),
            )
            out.append(UnitSet(i, "conv", ly.conv_dim, conv))
        else:
            cgmlp = (
                Slot("mlp.up.weight", 0, sections=2),
                Slot("mlp.up.bias", 0, sections=2),
                Slot("mlp.gate_norm.weight", 0),
                Slot("mlp.gate_norm.bias", 0),
                Slot("mlp.gate_conv.conv.weight", 0),
                Slot("mlp.gate_conv.conv.bias", 0),
                Slot("mlp.down.weight", 1, outgoing=True),
            )
            out.append(UnitSet(i, "cgmlp", ly.cgmlp_dim // 2, cgmlp))
    return out


def layer_prefix(model: nn.Module) -> str:
    """The name prefix of the encoder layers, e.g. ``encoder.1.layers.``."""
    for name, module in model.named_modules():
        if isinstance(module, AttentionStack):
            return f"{name}.layers."
    raise ValueError("dmao: the model has no attention encoder stack")


@dataclass(frozen=True, slots=True)
class Group:
    """A chunk of units of one unit set: what is scored, dropped or duplicated as a whole."""

    set_index: int
    layer: int
    kind: str
    units: tuple[int, ...]
    params: int


def _unit_params(us: UnitSet, shapes: Mapping[str, torch.Size], prefix: str) -> int:
    total = 0
    for s in us.slots:
        shape = shapes[f"{prefix}{us.layer}.{s.name}"]
        total += shape.numel() // shape[s.dim] * s.width * s.sections
    return total


def make_groups(
    sets: list[UnitSet], model: nn.Module, cfg: DmaoConfig
) -> tuple[list[Group], torch.Tensor]:
    """The groups of ``sets`` and, per unit of every set, its group's number (concatenated)."""
    prefix = layer_prefix(model)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    chunks = {"ffn": cfg.ffn_chunk, "conv": cfg.conv_chunk, "cgmlp": cfg.cgmlp_chunk}
    groups: list[Group] = []
    owner: list[int] = []
    for k, us in enumerate(sets):
        per_unit = _unit_params(us, shapes, prefix)
        if us.kind == "head":
            size = 1
        else:
            size = chunks[us.kind]
            if size == 0:  # about one head's parameters
                head = next(s for s in sets if s.layer == us.layer and s.kind == "head")
                size = max(1, round(_unit_params(head, shapes, prefix) / per_unit))
        for start in range(0, us.units, size):
            units = tuple(range(start, min(start + size, us.units)))
            owner += [len(groups)] * len(units)
            groups.append(Group(k, us.layer, us.kind, units, per_unit * len(units)))
    return groups, torch.tensor(owner, dtype=torch.long)


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of a reallocation: per unit set the old units in their new order (a
    duplicated unit appears twice; the second time is the copy), the groups dropped and
    duplicated, and the architecture after."""

    units: tuple[tuple[int, ...], ...]
    copies: tuple[tuple[bool, ...], ...]
    dropped: tuple[int, ...]
    duplicated: tuple[int, ...]
    params_removed: int
    params_added: int
    arch: Arch


def plan(
    arch: Arch, sets: list[UnitSet], groups: list[Group], scores: torch.Tensor, delta: float
) -> Plan:
    """Drops the ``delta`` share of groups with the lowest importance per parameter (never the
    last group of a unit set) and duplicates the highest-ranked others until their parameters
    match the dropped ones within one group."""
    per_param = [float(scores[i]) / g.params for i, g in enumerate(groups)]
    ascending = sorted(range(len(groups)), key=lambda i: (per_param[i], i))
    left = [0] * len(sets)
    for g in groups:
        left[g.set_index] += 1
    quota = max(1, round(delta * len(groups)))
    dropped: list[int] = []
    for i in ascending:
        if len(dropped) == quota:
            break
        if left[groups[i].set_index] > 1:
            left[groups[i].set_index] -= 1
            dropped.append(i)
    removed = sum(groups[i].params for i in dropped)
    added = 0
    duplicated: list[int] = []
    gone = set(dropped)
    for i in reversed(ascending):
        size = groups[i].params
        if i not in gone and added + size <= removed + size / 2:
            duplicated.append(i)
            added += size
    units: list[list[int]] = [[] for _ in sets]
    copies: list[list[bool]] = [[] for _ in sets]
    for i, g in enumerate(groups):
        if i not in gone:
            units[g.set_index] += g.units
            copies[g.set_index] += [False] * len(g.units)
    for i in sorted(duplicated):
        g = groups[i]
        units[g.set_index] += g.units
        copies[g.set_index] += [True] * len(g.units)
    return Plan(
        units=tuple(tuple(u) for u in units),
        copies=tuple(tuple(c) for c in copies),
        dropped=tuple(sorted(dropped)),
        duplicated=tuple(sorted(duplicated)),
        params_removed=removed,
        params_added=added,
        arch=arch_for(arch, sets, units),
    )


def arch_for(arch: Arch, sets: list[UnitSet], units: list[list[int]]) -> Arch:
    """``arch`` with each layer's heads and widths set to the lengths of ``units``."""
    spec = decode(arch)
    width = {(us.layer, us.kind): len(u) for us, u in zip(sets, units, strict=True)}
    n = spec.layers
    values: dict[str, Any] = dict(arch)
    values["layer_heads"] = tuple(width[(i, "head")] for i in range(n))
    values["ffn_dim"] = tuple(width[(i, "ffn")] for i in range(n))
    if spec.encoder == "conformer":
        values["conv_dim"] = tuple(width[(i, "conv")] for i in range(n))
    else:
        values["cgmlp_dim"] = tuple(2 * width[(i, "cgmlp")] for i in range(n))
    return Arch(values)


class _Remap:
    """Maps every tensor of the old model (weights, optimizer moments) onto the new layout."""

    def __init__(self, sets: list[UnitSet], p: Plan, prefix: str) -> None:
        self.entries: dict[str, tuple[Slot, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for us, units, copies in zip(sets, p.units, p.copies, strict=True):
            count = torch.bincount(torch.tensor(units), minlength=us.units).double()
            scale = 1.0 / count[torch.tensor(units)]  # halves both halves of a duplicated unit
            copy = torch.tensor(copies)
            for s in us.slots:
                name = f"{prefix}{us.layer}.{s.name}"
                self.entries[name] = (s, s.index(list(units), us.units), s.expand(copy),
                                      s.expand(scale))  # fmt: skip

    def __call__(
        self, name: str, old: torch.Tensor, fresh: torch.Tensor, *, mode: str
    ) -> torch.Tensor:
        """``old`` in the layout of ``fresh``. mode "copy": duplicated units copied, outgoing
        weights halved; "random": copies keep ``fresh``; "moments": copies start at zero."""
        if name not in self.entries:
            assert old.shape == fresh.shape, f"{name}: {tuple(old.shape)} != {tuple(fresh.shape)}"
            return old.clone()
        slot, index, copy, scale = self.entries[name]
        out = old.index_select(slot.dim, index)
        shape = [1] * out.dim()
        shape[slot.dim] = -1
        if mode == "copy" and slot.outgoing:
            out = out * scale.view(shape).to(out.dtype)
        elif mode == "random":
            out = torch.where(copy.view(shape), fresh, out)
        elif mode == "moments":
            out = out.masked_fill(copy.view(shape), 0.0)
        assert out.shape == fresh.shape, f"{name}: {tuple(out.shape)} != {tuple(fresh.shape)}"
        return out


def apply(
    model: SpeechModel, sets: list[UnitSet], p: Plan, *, init: str = "copy", seed: int = 0
) -> tuple[SpeechModel, _Remap]:
    """The model of ``p.arch`` with ``model``'s weights moved by the plan (``init``: "copy" or
    "random" for the duplicates; ``seed`` seeds the fresh weights) and the map that moved them.
    The new model is in ``model``'s training mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        new = build(p.arch, vocab_size=model.vocab_size, dropout=_dropout(model))
    remap = _Remap(sets, p, layer_prefix(model))
    old_state = model.state_dict()
    fresh = new.state_dict()
    mode = "copy" if init == "copy" else "random"
    new.load_state_dict({k: remap(k, old_state[k], v, mode=mode) for k, v in fresh.items()})
    new.train(model.training)
    return new, remap


class Dmao:
    """Scores the groups of ``model`` during training and reallocates them once.

    Call :meth:`observe` after every backward pass until :attr:`done`; :meth:`due` says when
    the step has come, :meth:`reallocate` returns the new model. ``state_dict`` holds what a
    resumed training needs to reach the same decision.
    """

    def __init__(self, cfg: DmaoConfig, model: SpeechModel) -> None:
        self.cfg = cfg
        spec = decode(model.arch)
        self.sets = unit_sets(spec)
        self.groups, self.owner = make_groups(self.sets, model, cfg)
        self.scores = torch.zeros(len(self.groups), dtype=torch.float64)
        self.observed = 0
        self.losses: list[float] = []
        self.report: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.report is not None

    def observe(self, model: nn.Module, loss: float) -> None:
        """Adds this step's group importance (gradients present) to the moving average."""
        self.losses.append(loss)
        if self.done:
            return
        params = dict(model.named_parameters())
        prefix = layer_prefix(model)
        per_unit: list[torch.Tensor] = []
        with torch.no_grad():
            for us in self.sets:
                acc = torch.zeros(us.units, dtype=torch.float64)
                for s in us.slots:
                    p = params[f"{prefix}{us.layer}.{s.name}"]
                    if p.grad is None:
                        continue
                    w, g = p.detach().double(), p.grad.detach().double()
                    kind = self.cfg.importance
                    value = w * g if kind == "taylor" else w * w if kind == "magnitude" else g.abs()
                    acc += s.per_unit(value, us.units)
                per_unit.append(acc)
        grouped = torch.zeros(len(self.groups), dtype=torch.float64)
        grouped.index_add_(0, self.owner, torch.cat(per_unit))
        if self.cfg.importance == "taylor":
            grouped = grouped.abs()
        a = self.cfg.ema
        self.scores = grouped if self.observed == 0 else a * self.scores + (1 - a) * grouped
        self.observed += 1

    def due(self, step: int, seconds: float, budget: BudgetConfig, steps_per_epoch: int) -> bool:
        """Whether the reallocation is due: at ``at`` of ``max_steps`` when set, else of
        ``max_minutes`` (training seconds), else of ``max_epochs``."""
        if self.done:
            return False
        at = self.cfg.at
        if budget.max_steps is not None:
            return step >= max(1, round(at * budget.max_steps))
        if budget.max_minutes is not None:
            return seconds >= at * budget.max_minutes * 60
        return step >= max(1, round(at * budget.max_epochs * steps_per_epoch))

    def reallocate(self, model: SpeechModel, *, step: int, seed: int) -> tuple[SpeechModel, _Remap]:
        """The reallocated model (training mode, same dropout) and the map of old tensors onto
        it (for the optimizer's moments)."""
        p = plan(model.arch, self.sets, self.groups, self.scores, self.cfg.delta)
        new, remap = apply(model, self.sets, p, init=self.cfg.init, seed=seed * 1_000_003 + step)
        self.report = {
            "step": step,
            "arch_before": model.arch.to_json(),
            "arch_after": p.arch.to_json(),
            "params_before": model.num_parameters(),
            "params_after": new.num_parameters(),
            "groups": len(self.groups),
            "dropped": [_describe(self.groups[i]) for i in p.dropped],
            "duplicated": [_describe(self.groups[i]) for i in p.duplicated],
            "params_removed": p.params_removed,
            "params_added": p.params_added,
            "config": dataclasses.asdict(self.cfg),
        }
        return new, remap

    def state_dict(self) -> dict[str, Any]:
        return {
            "scores": self.scores.clone(),
            "observed": self.observed,
            "losses": list(self.losses),
            "report": _encode(self.report),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scores = state["scores"].clone()
        self.observed = int(state["observed"])
        self.losses = [float(x) for x in state["losses"]]
        self.report = _decode_report(state["report"])


def _dropout(model: nn.Module) -> float:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            return float(m.p)
    return 0.0


def _describe(g: Group) -> dict[str, Any]:
    return {"layer": g.layer, "kind": g.kind, "units": [g.units[0], g.units[-1] + 1],
            "params": g.params}  # fmt: skip


def _encode(report: dict[str, Any] | None) -> str:
    return json.dumps(report)


def _decode_report(text: str) -> dict[str, Any] | None:
    return json.loads(text)


def carry_optimizer(
    old: torch.optim.Optimizer,
    old_model: nn.Module,
    new: torch.optim.Optimizer,
    new_model: nn.Module,
    remap: _Remap,
) -> None:
    """Gives ``new`` the state of ``old``: per parameter (by name) the step count and the
    moments of kept units, zero moments for copies; learning rates of the groups as they were."""
    old_params = dict(old_model.named_parameters())
    for name, p in new_model.named_parameters():
        st = old.state.get(old_params[name])
        if not st:
            continue
        carried: dict[str, Any] = {}
        for key, value in st.items():
            if torch.is_tensor(value) and value.shape == old_params[name].shape:
                carried[key] = remap(name, value, torch.zeros_like(p), mode="moments")
            else:
                carried[key] = value.clone() if torch.is_tensor(value) else value
        new.state[p] = carried
    for og, ng in zip(old.param_groups, new.param_groups, strict=True):
        for key in ("lr", "initial_lr"):
            if key in og:
                ng[key] = og[key]
