"""Multi-fidelity search by successive halving, scheduled from the study's contents.

A bracket evaluates ``candidates`` proposals at rung 0 (the smallest fidelity: minutes of training
on a share of the data), then promotes the best ``1/eta`` of them to rung 1, the best ``1/eta`` of
those to rung 2, and so on; a promoted architecture continues training from its lower rung's
checkpoint, so it costs only the extra minutes. Brackets follow one another until the trial
budget is spent; the last one is shrunk to fit it exactly.

Promotion ranks the candidates by non-dominated rank, then by crowding distance (NSGA-II's
order), so it works for multi-objective studies; a single-objective study ranks by the scalar.
Optuna's pruners are not used because they do not support multi-objective studies (optuna issue
#3450), and because a pruner decides per trial from intermediate values, whereas promotion
here compares the finished trials of a rung with one another.

Scheduling is a pure function of the study: every trial records its slot (bracket, rung,
position), and :func:`next_job` names the first slot in plan order that no trial holds yet and
whose inputs are known. Several workers sharing a storage, or a resumed search, therefore make
the same decisions; a promotion waits until every trial of the rung below has finished (a worker
meanwhile starts the next bracket's candidates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from speechnas.search.pareto import crowding_distance, non_dominated_sort


@dataclass(frozen=True, slots=True)
class Bracket:
    """One round of successive halving: ``sizes[r]`` trials at rung ``r``."""

    index: int
    sizes: tuple[int, ...]
    first_proposal: int  # the proposal index of its first rung-0 candidate

    @property
    def trials(self) -> int:
        return sum(self.sizes)


def rung_sizes(candidates: int, eta: int, rungs: int) -> list[int]:
    """Trials per rung of a bracket: ``[n, n // eta, n // eta**2, ...]``, zeros dropped."""
    sizes = [candidates]
    for _ in range(1, rungs):
        nxt = sizes[-1] // eta
        if nxt == 0:
            break
        sizes.append(nxt)
    return sizes


def plan(candidates: int, eta: int, rungs: int, n_trials: int | None) -> Iterator[Bracket]:
    """The brackets of a search, in order; endless when ``n_trials`` is None.

    The last bracket is the largest one that fits the remaining budget, with any leftover added
    to its rung-0 candidates, so the brackets' trials add up to exactly ``n_trials``.
    """
    full = rung_sizes(candidates, eta, rungs)
    used = proposal = index = 0
    while n_trials is None or used < n_trials:
        left = None if n_trials is None else n_trials - used
        if left is None or left >= sum(full):
            sizes = list(full)
        else:
            n = max(k for k in range(1, candidates + 1) if sum(rung_sizes(k, eta, rungs)) <= left)
            sizes = rung_sizes(n, eta, rungs)
            sizes[0] += left - sum(sizes)
        bracket = Bracket(index, tuple(sizes), proposal)
        yield bracket
        used += bracket.trials
        proposal += sizes[0]
        index += 1


def slot_id(bracket: int, rung: int, position: int) -> str:
    return f"{bracket}/{rung}/{position}"


@dataclass(frozen=True, slots=True)
class SlotState:
    """What the scheduler needs to know of the trial that holds a slot."""

    number: int
    finished: bool
    values: tuple[float, ...] | None  # None: failed, rejected, not promoted, or running
    arch_key: str
    seeded: bool = False  # one of the search's seeds (a preset, say)


@dataclass(frozen=True, slots=True)
class Job:
    """A slot to fill: a new proposal (rung 0) or the promotion of an earlier trial.

    ``promote`` is the trial number whose architecture moves up; None at rung 0, and None at a
    higher rung when fewer candidates finished the rung below than there are places (``note``
    says so; the slot is then recorded as pruned, at no cost).
    """

    slot: str
    bracket: int
    rung: int
    position: int
    proposal: int | None = None
    promote: int | None = None
    note: str = ""


Ranker = Callable[[Sequence[tuple[float, ...]]], list[int]]


def rank_pareto(points: Sequence[tuple[float, ...]]) -> list[int]:
    """Indices of ``points`` best first: by non-dominated front, then by crowding distance
    (larger first), then by index."""
    order: list[int] = []
    for front in non_dominated_sort(points):
        dist = crowding_distance(points, front)
        order += [i for _, i in sorted(zip(dist, front, strict=True), key=lambda p: (-p[0], p[1]))]
    return order


def rank_scalar(scalarize: Callable[[Sequence[float]], float]) -> Ranker:
    """Ranks by ``scalarize(values)`` (smaller first), then by index."""

    def rank(points: Sequence[tuple[float, ...]]) -> list[int]:
        return sorted(range(len(points)), key=lambda i: (scalarize(points[i]), i))

    return rank


#: The vectors to rank candidates by, one per candidate (default: their observed values).
RankValues = Callable[[Sequence["SlotState"]], Sequence[tuple[float, ...]]]


def promotion_order(
    previous: Sequence[SlotState],
    rank: Ranker,
    *,
    seeds_first: bool = False,
    rank_values: RankValues | None = None,
) -> list[int]:
    """Trial numbers of the rung below in promotion order: only trials with values, each
    architecture once (its first position wins); with ``seeds_first`` the seeded trials lead,
    so a seed reaches the top rung as the control the candidates are compared with.
    ``rank_values``: what to rank them by instead of their values (predictions, say)."""
    seen: set[str] = set()
    cands: list[SlotState] = []
    for s in previous:
        if s.values is not None and s.arch_key not in seen:
            seen.add(s.arch_key)
            cands.append(s)
    points = rank_values(cands) if rank_values else [c.values for c in cands]
    order = rank(points)  # type: ignore[arg-type]
    if seeds_first:
        order = [i for i in order if cands[i].seeded] + [i for i in order if not cands[i].seeded]
    return [cands[i].number for i in order]


def _finished(b: Bracket, slots: Mapping[str, SlotState]) -> bool:
    return all(
        (s := slots.get(slot_id(b.index, r, i))) is not None and s.finished
        for r, n in enumerate(b.sizes)
        for i in range(n)
    )


def next_job(
    brackets: Iterable[Bracket],
    slots: Mapping[str, SlotState],
    rank: Ranker,
    *,
    synchronous: bool = False,
    seeds_first: bool = False,
    rank_values: RankValues | None = None,
) -> Job | Literal["wait", "done"]:
    """The first free slot in plan order whose inputs are known.

    ``slots`` maps slot ids to the trials holding them (interrupted trials left out, so their
    slots are free again). "wait": free slots remain but each waits for running trials;
    "done": every slot of the plan is held. ``synchronous``: a bracket's candidates wait until
    every earlier bracket has finished (its proposals then see the same history whatever the
    number of workers and their timing). ``seeds_first``, ``rank_values``: see
    :func:`promotion_order`.
    """
    waiting = False
    earlier_done = True
    for b in brackets:
        for r, size in enumerate(b.sizes):
            free = [i for i in range(size) if slot_id(b.index, r, i) not in slots]
            if r == 0:
                if free and synchronous and not earlier_done:
                    waiting = True
                    break
                if free:
                    i = free[0]
                    return Job(slot_id(b.index, 0, i), b.index, 0, i, proposal=b.first_proposal + i)
                continue
            below = [slots.get(slot_id(b.index, r - 1, i)) for i in range(b.sizes[r - 1])]
            if any(s is None or not s.finished for s in below):
                break  # this rung and those above wait for the rung below
            if not free:
                continue
            i = free[0]
            order = promotion_order(
                [s for s in below if s is not None], rank, seeds_first=seeds_first,
                rank_values=rank_values,
            )  # fmt: skip
            if i < len(order):
                return Job(slot_id(b.index, r, i), b.index, r, i, promote=order[i])
            note = (
                f"not promoted: only {len(order)} of {len(below)} candidates completed rung {r - 1}"
            )
            return Job(slot_id(b.index, r, i), b.index, r, i, note=note)
        held = all(slot_id(b.index, r, i) in slots for r, n in enumerate(b.sizes) for i in range(n))
        waiting = waiting or not held
        earlier_done = earlier_done and _finished(b, slots)
    return "wait" if waiting else "done"


__all__ = [
    "Bracket",
    "Job",
    "RankValues",
    "Ranker",
    "SlotState",
    "next_job",
    "plan",
    "promotion_order",
    "rank_pareto",
    "rank_scalar",
    "rung_sizes",
    "slot_id",
]
