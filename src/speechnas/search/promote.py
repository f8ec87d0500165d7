"""Promotion by predicted rather than observed rank (``fidelity.rank_by: predicted``).

Successive halving promotes the candidates of a rung that did best at that rung. A low rung
ranks how fast a model starts to learn, which is not always where it ends: a deeper model still
in CTC's all-blank phase at rung 0 may overtake a shallow one that started early. With
``predicted`` promotion, each error-rate objective of a candidate is replaced, for ranking
only, by its prediction at the top rung: boosted trees
(:class:`speechnas.search.wer_predictor.WerPredictor`) fitted on the architectures of this
study that completed both the candidate's rung and the top rung, from the architecture's
encoding plus its value at the lower rung (a learning curve of one point; the trees learn the
change from that value, so few pairs rank like the observed values). Other objectives
(latency, size) do not change with training and are kept. The vectors are then ranked as
``fidelity.promotion`` ranks observed ones (Pareto order or the scalar).

Until ``MIN_PAIRS`` architectures have both values, promotion is by the observed values, and the
promoted trial records which of the two decided (``promotion`` attribute).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from speechnas.search.objectives import objective_kind
from speechnas.search.study import arch_of, values_of
from speechnas.search.wer_predictor import WerPredictor, encode
from speechnas.space import Arch, SearchSpace

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from speechnas.search.fidelity import SlotState

__all__ = ["MIN_PAIRS", "predicted_top"]

#: Architectures with values at both rungs before predictions replace observations.
MIN_PAIRS = 5


def _completed(trials: Sequence[FrozenTrial], rung: int) -> dict[str, tuple[Arch, tuple]]:
    from optuna.trial import TrialState

    out: dict[str, tuple[Arch, tuple]] = {}
    for t in trials:
        arch, values = arch_of(t), values_of(t)
        if t.state == TrialState.COMPLETE and t.user_attrs.get("rung") == rung and arch and values:
            out.setdefault(arch.key(), (arch, tuple(values)))
    return out


def predicted_top(
    trials: Sequence[FrozenTrial],
    cands: Sequence[SlotState],
    *,
    objectives: Sequence[str],
    space: SearchSpace,
    vocab_size: int,
    top_rung: int,
    seed: int,
) -> tuple[list[tuple[float, ...]], bool]:
    """The vectors to rank ``cands`` (finished trials of one rung, all with values) by, and
    whether they are predictions (False: the observed values, too few pairs to learn from)."""
    observed = [tuple(c.values or ()) for c in cands]
    if not cands:
        return observed, False
    by_number = {t.number: t for t in trials}
    rung = int(by_number[cands[0].number].user_attrs.get("rung", 0))
    low, top = _completed(trials, rung), _completed(trials, top_rung)
    pairs = [(low[k][0], low[k][1], top[k][1]) for k in low if k in top]
    errors = [j for j, o in enumerate(objectives) if objective_kind(o) == "error"]
    if rung >= top_rung or len(pairs) < MIN_PAIRS or not errors:
        return observed, False
    x = np.stack([encode(a, space, vocab_size=vocab_size) for a, _, _ in pairs])
    cand_archs = [arch_of(by_number[c.number]) for c in cands]
    xc = np.stack([encode(a, space, vocab_size=vocab_size) for a in cand_archs if a])
    out = [list(v) for v in observed]
    for j in errors:
        model = WerPredictor(seed=seed, folds=0, baseline=-1).fit(
            np.column_stack([x, [lo[j] for _, lo, _ in pairs]]), [hi[j] for _, _, hi in pairs]
        )
        pred = model.predict(np.column_stack([xc, [v[j] for v in observed]])).median
        for i, p in enumerate(pred):
            out[i][j] = float(p)
    return [tuple(v) for v in out], True
