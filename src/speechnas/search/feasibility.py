"""Hard limits no architecture can meet, found before any work.

A constraint that even the smallest architecture of the space breaks would make every trial a
rejection. :func:`check_feasible` says so when the search starts, before any corpus, study or
training, naming the constraint, its value and the smallest value the space reaches.

The smallest values: parameters, MACs and memory grow with the sizes of an architecture
(width, depth, kernels, hidden units), so they are minimised over the architectures with every
numeric choice at its smallest value and every combination of the other choices (encoder
family, front end, decoder, flags: a small enumeration, sampled when it is large), then
improved one choice at a time, which catches a numeric choice whose smallest value is not the
cheapest (a low-rank factorisation's 0 is full rank). Latency is the target's latency model on
the architecture with the fewest MACs: exact for ``proxy`` (MACs at a fixed rate); for a
hardware target a prediction, which calibrates that one architecture's blocks if the table
lacks them.

The vocabulary is not known before the corpus exists: the counts use the smallest any
tokenizer has (:data:`MIN_VOCAB`: the blank and one symbol), so they are lower bounds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from speechnas.search.config import SearchConfig
from speechnas.search.objectives import LIMITS, LatencyModel, latency_model, predicted_metrics
from speechnas.space import Arch, SearchSpace

#: The smallest vocabulary a tokenizer has: the CTC blank and one symbol.
MIN_VOCAB = 2
#: At most this many architectures start the minimisation (a sample beyond).
MAX_CANDIDATES = 4096
_DESCENT_ROUNDS = 20

Metric = Callable[[Arch], float]


def _numeric(values: tuple[Any, ...]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _default(values: tuple[Any, ...]) -> Any:
    return min(values) if _numeric(values) else values[0]


def _sizes_at_smallest(space: SearchSpace) -> SearchSpace | None:
    """``space`` with every numeric choice reduced to its smallest value (choices whose
    condition can then no longer hold dropped); None when that is no valid space."""
    d = space.to_dict()
    kept: dict[str, list[Any]] = {}
    choices = []
    for c in d["choices"]:
        when = {p: [v for v in vs if v in kept.get(p, [])] for p, vs in c.get("when", {}).items()}
        per = c.get("per_layer")
        if any(not vs for vs in when.values()) or (per is not None and per not in kept):
            continue
        if when:
            c["when"] = when
        if _numeric(tuple(c["values"])):
            c["values"] = [min(c["values"])]
        kept[c["name"]] = list(c["values"])
        choices.append(c)
    d["choices"] = choices
    try:
        reduced = SearchSpace.from_dict(d)
        return reduced if reduced.count() else None
    except ValueError:  # a constraint names a dropped choice
        return None


def starting_points(space: SearchSpace, *, limit: int = MAX_CANDIDATES) -> list[Arch]:
    """The architectures the minimisation starts from: those with every numeric choice at its
    smallest value (all of them, or a seeded sample of ``limit`` when there are more)."""
    reduced = _sizes_at_smallest(space)
    source = reduced or space
    if source.count() <= limit:
        return [space.validate(a) for a in source.enumerate()]
    rng = random.Random(0)
    seen: dict[str, Arch] = {}
    for _ in range(limit):
        a = source.sample(rng)
        seen.setdefault(a.key(), a)
    return [space.validate(a) for a in seen.values()]


def _complete(space: SearchSpace, partial: Mapping[str, Any]) -> Arch | None:
    """``partial`` made a valid architecture: choices it activates get their smallest (or
    first) value, choices it deactivates are dropped; None when that is not valid."""
    cur = dict(partial)
    for _ in range(len(space.names) + 1):
        active = space.active(cur)
        cur = {k: v for k, v in cur.items() if k in active}
        missing = [n for n in active if n not in cur]
        if not missing:
            break
        for n in missing:
            c = space[n]
            if c.per_layer is not None and c.per_layer not in cur:
                break  # its layer count comes first
            v = _default(c.values)
            cur[n] = v if c.per_layer is None else (v,) * int(cur[c.per_layer])
    try:
        return space.validate(cur)
    except (ValueError, TypeError):
        return None


def _neighbours(space: SearchSpace, arch: Arch) -> Iterator[Arch]:
    """Every architecture one choice away (a per-layer choice set in all layers at once)."""
    for name in arch:
        c = space[name]
        for v in c.values:
            new = dict(arch)
            new[name] = v if c.per_layer is None else (v,) * len(arch[name])  # type: ignore[arg-type]
            if new[name] == arch[name]:
                continue
            for other in space.names:  # a new layer count resizes the per-layer choices
                if space[other].per_layer == name and other in new:
                    first = new[other][0]  # type: ignore[index]
                    new[other] = (first,) * int(v)  # type: ignore[arg-type]
            done = _complete(space, new)
            if done is not None:
                yield done


def smallest(
    space: SearchSpace,
    starts: list[Arch],
    metric: Metric,
    *,
    enough: float = -math.inf,
) -> tuple[float, Arch]:
    """The smallest ``metric`` found from ``starts`` (in their order) and one choice at a time
    from the best of them; stops early at a value <= ``enough``."""
    best, best_arch = math.inf, starts[0]
    for a in starts:
        v = metric(a)
        if v <= enough:
            return v, a
        if v < best:
            best, best_arch = v, a
    for _ in range(_DESCENT_ROUNDS):
        step = min(((metric(n), n) for n in _neighbours(space, best_arch)), default=None,
                   key=lambda x: x[0])  # fmt: skip
        if step is None or step[0] >= best:
            break
        best, best_arch = step
        if best <= enough:
            break
    return best, best_arch


def _cached(fn: Metric) -> Metric:
    memo: dict[str, float] = {}

    def wrapped(arch: Arch) -> float:
        key = arch.key()
        if key not in memo:
            memo[key] = float(fn(arch))
        return memo[key]

    return wrapped


def _geometry(arch: Arch, field: str) -> float:
    """A stream-geometry figure of ``arch`` (ms); infinite for one that does not stream."""
    from speechnas.nn.spec import decode

    spec = decode(arch)
    return float(getattr(spec.stream_geometry, field)) if spec.streaming else math.inf


def _number(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}"


def check_feasible(
    cfg: SearchConfig, space: SearchSpace, *, latency: LatencyModel | None = None
) -> None:
    """A ValueError naming every constraint of ``cfg`` that no architecture of ``space`` can
    meet, with the smallest value the space reaches (see the module docstring); nothing when
    every constraint can be met. ``latency`` defaults to the target's latency model, built only
    when ``max_latency_ms`` is set."""
    from speechnas.nn.cost import analytic_macs, count_parameters

    limits = {k: v for k, v in cfg.constraints.to_dict().items() if v is not None}
    if not limits:
        return
    seconds = cfg.latency_seconds
    macs = _cached(lambda a: analytic_macs(a, seconds=seconds, vocab_size=MIN_VOCAB).total)
    params = _cached(lambda a: count_parameters(a, vocab_size=MIN_VOCAB))
    metrics: dict[str, Metric] = {
        "macs": macs,
        "params": params,
        "memory": lambda a: params(a) * 4 / 2**20,
        "algorithmic_latency": lambda a: _geometry(a, "algorithmic_latency_ms"),
        "lookahead_ms": lambda a: _geometry(a, "lookahead_ms"),
    }
    starts = sorted(starting_points(space), key=macs)  # the likeliest to meet a limit first
    where = f"space {space.name!r}"
    problems = []
    for key, limit in limits.items():
        metric = LIMITS[key][0]
        if metric == "emission_delay":
            continue  # known only once a model is trained
        if metric == "chunk_latency":
            _, fewest = smallest(space, starts, macs)
            model = latency or latency_model(cfg.target)
            value = predicted_metrics(fewest, vocab_size=MIN_VOCAB, latency=model,
                                      seconds=seconds).get("chunk_latency", math.inf)  # fmt: skip
            what = (
                f"the architecture of {where} with the fewest MACs is predicted at "
                f"{_number(value)} ms per chunk on {cfg.target}"
            )
        elif metric == "latency":
            _, fewest = smallest(space, starts, macs)
            model = latency or latency_model(cfg.target)
            value = model.predict(fewest, seconds, MIN_VOCAB)
            what = (
                f"the architecture of {where} with the fewest MACs is predicted at "
                f"{_number(value)} ms per {seconds:g} s utterance on {cfg.target}"
            )
        else:
            value, _ = smallest(space, starts, metrics[metric], enough=limit)
            unit = {
                "params": "parameters",
                "macs": f"MACs per {seconds:g} s utterance",
                "memory": "MB of weights",
                "algorithmic_latency": "ms of algorithmic latency",
                "lookahead_ms": "ms of look-ahead",
            }[metric]
            what = f"the smallest architecture of {where} has at least {_number(value)} {unit}"
        if value > limit:
            problems.append(f"constraints.{key}: {_number(limit)} cannot be met: {what}")
    if problems:
        raise ValueError(
            "; ".join(problems)
            + f" (counted with the smallest vocabulary, {MIN_VOCAB} tokens; the corpus's is "
            "larger)"
        )


__all__ = ["MAX_CANDIDATES", "MIN_VOCAB", "check_feasible", "smallest", "starting_points"]
