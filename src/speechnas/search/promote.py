"""Promotion by predicted rather than observed rank (``fidelity.rank_by: predicted``).

Successive halving promotes the candidates of a rung that did best at that rung. A low rung
ranks how fast a model starts to learn, which is not always where it ends: a deeper model still
in CTC's all-blank phase at rung 0 may overtake a shallow one that started early. With
``predicted`` promotion, each error-rate objective of a candidate is replaced, for ranking
only, by its prediction at the top rung: boosted trees
(:class:`speechnas.search.wer_predictor.WerPredictor`) fitted on the architectures of this
study that completed both the candidate's rung and the top rung, from the architecture's
encoding plus its value at the lower rung (a learning curve of one point). The trees learn
the change from that value while the pairs are few (it ranks like the observed values then),
and the top-rung value itself from ``VALUE_FROM`` pairs on. Measured on the benchmark table at
150 architectures (``bench/wer_predictor.py --sizes``, 20 random training sets per size),
promoting from 400 to 1,000 steps, Kendall tau on the held-out architectures: trained on 15,
the change 0.43 and the value 0.37; on 30, 0.47 and 0.48; on 60, 0.52 and 0.56; on 90, 0.53
and 0.58. (At about 100 architectures the value already led from 15 on: a threshold fitted to one
state of the table moves, so it sits where the value form never did worse in either.) The
lower rung's own WER ranked at 0.44-0.48 at every size, better than either form below 30 pairs;
from 150 steps, still in CTC's blank phase, it ranked at -0.10 and the predictions at 0.17
(10 pairs) to 0.56 (90). Other objectives
(latency, size) do not change with training and are kept. The vectors are then ranked as
``fidelity.promotion`` ranks observed ones (Pareto order or the scalar).

Until ``MIN_PAIRS`` architectures have both values, promotion is by the observed values, and the
promoted trial records which of the two decided (``promotion`` attribute) and, for a
prediction, its form (``promotion_form``: "change" or "value").
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

__all__ = ["MIN_PAIRS", "VALUE_FROM", "fit_top_predictor", "predicted_top"]

#: Architectures with values at both rungs before predictions replace observations.
MIN_PAIRS = 5
#: Pairs from which the trees learn the top-rung value itself rather than the change.
VALUE_FROM = 30


def fit_top_predictor(x: np.ndarray, y: Sequence[float], *, seed: int) -> tuple[WerPredictor, str]:
    """A predictor of the top-rung value from rows ``x`` (an encoding whose last column is the
    lower rung's value) and the top-rung values ``y``, and its form: "change" (the trees learn
    the change from the lower rung's value) below ``VALUE_FROM`` pairs, "value" from there on.
    """
    form = "value" if len(y) >= VALUE_FROM else "change"
    baseline = None if form == "value" else -1
    return WerPredictor(seed=seed, folds=0, baseline=baseline).fit(x, y), form


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
) -> tuple[list[tuple[float, ...]], str | None]:
    """The vectors to rank ``cands`` (finished trials of one rung, all with values) by, and the
    predictor's form if they are predictions (None: the observed values, too few pairs to learn
    from)."""
    observed = [tuple(c.values or ()) for c in cands]
    if not cands:
        return observed, None
    by_number = {t.number: t for t in trials}
    rung = int(by_number[cands[0].number].user_attrs.get("rung", 0))
    low, top = _completed(trials, rung), _completed(trials, top_rung)
    pairs = [(low[k][0], low[k][1], top[k][1]) for k in low if k in top]
    errors = [j for j, o in enumerate(objectives) if objective_kind(o) == "error"]
    if rung >= top_rung or len(pairs) < MIN_PAIRS or not errors:
        return observed, None
    x = np.stack([encode(a, space, vocab_size=vocab_size) for a, _, _ in pairs])
    cand_archs = [arch_of(by_number[c.number]) for c in cands]
    xc = np.stack([encode(a, space, vocab_size=vocab_size) for a in cand_archs if a])
    out = [list(v) for v in observed]
    form = None
    for j in errors:
        model, form = fit_top_predictor(
            np.column_stack([x, [lo[j] for _, lo, _ in pairs]]),
            [hi[j] for _, _, hi in pairs],
            seed=seed,
        )
        pred = model.predict(np.column_stack([xc, [v[j] for v in observed]])).median
        for i, p in enumerate(pred):
            out[i][j] = float(p)
    return [tuple(v) for v in out], form
