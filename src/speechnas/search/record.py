"""Writing trials into the study: one code path for every driver, so a trial carries the same
attributes whichever driver ran it.

A trial is opened RUNNING (:func:`open_trial`) with its parameters and the attributes of
:data:`CLAIM_KEYS` (where it sits, the architecture, fidelity, seed, versions, who runs it)
plus those of :data:`OUTCOME_KEYS` at their empty values. It ends (:func:`record_trial`)
COMPLETE with its objective values or FAIL with the reason in ``status``; the outcome
attributes are written either way. :func:`record_metrics` judges a trained trial's metrics
(hard limits, objective values) before recording them, and :func:`guarded` records what
escapes an evaluation (a divergence, a crash, an interrupt).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from speechnas.search.encoding import distributions, flatten
from speechnas.search.objectives import Scalarizer, objective_values, violations
from speechnas.search.study import INTERRUPTED, SearchStudy, add_trial, set_attrs
from speechnas.versions import versions

if TYPE_CHECKING:
    from speechnas.search.config import SearchConfig
    from speechnas.search.screen import Verdict
    from speechnas.search.trial import Fidelity
    from speechnas.space import Arch, SearchSpace

log = logging.getLogger(__name__)

#: Written when a trial is opened; ``extra`` attributes (``proposal``, ``promoted_from``, a
#: driver's own) go with them.
CLAIM_KEYS = (
    "slot", "bracket", "rung", "position", "fidelity", "seed", "worker", "strategy",
    "arch", "arch_key", "versions",
)  # fmt: skip
#: Every opened trial has these: ``status`` ("running", then "ok", "reused" or the reason of
#: the failure), ``metrics`` ({} until measured), ``scalar`` (the single-objective score of a
#: completed trial), ``output_dir`` and ``checkpoint`` (None until training wrote them).
OUTCOME_KEYS = ("status", "metrics", "scalar", "output_dir", "checkpoint")


def open_trial(
    ss: SearchStudy,
    space: SearchSpace,
    arch: Arch,
    *,
    cfg: SearchConfig,
    fidelity: Fidelity,
    worker: str,
    slot: str,
    bracket: int,
    rung: int,
    position: int,
    **extra: Any,
) -> int:
    """Creates the RUNNING trial of ``arch`` in one storage write and returns its number. An
    architecture outside ``space`` is still recorded (without parameters), to fail before any
    training."""
    from optuna.trial import TrialState

    attrs: dict[str, Any] = {
        "slot": slot,
        "bracket": bracket,
        "rung": rung,
        "position": position,
        "fidelity": fidelity.to_dict(),
        **_arch_attrs(arch, cfg, worker),
        "status": "running",
        "metrics": {},
        "scalar": None,
        "output_dir": None,
        "checkpoint": None,
        **extra,
    }
    return _add(ss, space, arch, TrialState.RUNNING, attrs)


def _arch_attrs(arch: Arch, cfg: SearchConfig, worker: str) -> dict[str, Any]:
    return {
        "seed": cfg.seed,
        "worker": worker,
        "strategy": cfg.strategy.name,
        "arch": arch.to_json(),
        "arch_key": arch.hash(),
        "versions": versions(),
    }


def _add(ss: SearchStudy, space: SearchSpace, arch: Arch, state: Any, attrs: dict[str, Any]) -> int:
    try:
        params = flatten(arch, space)
    except ValueError:
        params = {}
    dists = distributions(space)
    return add_trial(
        ss, state=state, params=params, distributions={k: dists[k] for k in params},
        user_attrs=attrs,
    )  # fmt: skip


def record_screened(
    ss: SearchStudy,
    space: SearchSpace,
    arch: Arch,
    *,
    cfg: SearchConfig,
    worker: str,
    proposal: int,
    verdict: Verdict,
    metrics: dict[str, Any],
) -> int:
    """Records a proposal screened before training (:mod:`speechnas.search.screen`): a PRUNED
    trial with no slot, its architecture, the predicted metrics and the verdict; returns its
    number."""
    from optuna.trial import TrialState

    attrs = {
        **_arch_attrs(arch, cfg, worker),
        "proposal": proposal,
        "screened": verdict.to_dict(),
        "status": verdict.reason(),
        "metrics": metrics,
    }
    return _add(ss, space, arch, TrialState.PRUNED, attrs)


def record_trial(
    ss: SearchStudy,
    number: int,
    *,
    status: str,
    values: Sequence[float] | None = None,
    scalar: float | None = None,
    **attrs: Any,
) -> str:
    """Ends trial ``number``: COMPLETE with ``values`` and ``scalar``, or FAIL (``values``
    None) with ``status`` as the reason. ``attrs`` (``metrics``, ``output_dir``,
    ``checkpoint``, or extras such as ``traceback`` or ``reused_from``) are written with it;
    outcome attributes not given keep their values. Returns "complete" or "fail"."""
    from optuna.trial import TrialState

    if values is None:
        set_attrs(ss, number, {**attrs, "status": status})
        ss.study.tell(number, state=TrialState.FAIL)
        log.info("trial %d failed: %s", number, status)
        return "fail"
    set_attrs(ss, number, {**attrs, "status": status, "scalar": scalar})
    ss.study.tell(number, list(values))
    return "complete"


def fail_trial(ss: SearchStudy, number: int, status: str, **attrs: Any) -> str:
    """Ends trial ``number`` FAIL with ``status`` as the reason (see :func:`record_trial`)."""
    return record_trial(ss, number, status=status, **attrs)


def record_metrics(
    ss: SearchStudy,
    number: int,
    cfg: SearchConfig,
    metrics: dict[str, Any],
    *,
    predicted: bool | Collection[str],
    **attrs: Any,
) -> str:
    """Records a trained trial: FAIL "rejected after training: ..." when a metric breaks a hard
    limit (``predicted`` says which metrics are predictions), FAIL "no objective values: ..."
    when an objective is missing or not finite, else COMPLETE with status "ok"."""
    attrs = {**attrs, "metrics": metrics}
    bad = violations(metrics, cfg.constraints.to_dict(), predicted=predicted)
    if bad:
        return fail_trial(ss, number, "rejected after training: " + "; ".join(bad), **attrs)
    try:
        values = objective_values(metrics, cfg.objectives)
    except ValueError as e:
        return fail_trial(ss, number, f"no objective values: {e}", **attrs)
    scalar = Scalarizer(cfg.objectives, cfg.latency_lambda)(values)
    return record_trial(ss, number, status="ok", values=values, scalar=scalar, **attrs)


def guarded(ss: SearchStudy, number: int, evaluate: Callable[[], str]) -> str:
    """Runs ``evaluate()``, which records trial ``number`` itself, and records what escapes it:
    a divergence ("diverged: ..."), any other exception ("crashed: ..." with the traceback's
    end), an interrupt ("interrupted", then raised again). Only the interrupt propagates."""
    from speechnas.train.trainer import Diverged

    try:
        return evaluate()
    except Diverged as e:
        return fail_trial(ss, number, f"diverged: {e}")
    except KeyboardInterrupt:
        fail_trial(ss, number, INTERRUPTED)
        raise
    except Exception as e:
        summary = "".join(traceback.format_exception(e, limit=-6))[-4000:]
        return fail_trial(ss, number, f"crashed: {type(e).__name__}: {e}", traceback=summary)


__all__ = [
    "CLAIM_KEYS",
    "OUTCOME_KEYS",
    "fail_trial",
    "guarded",
    "open_trial",
    "record_metrics",
    "record_screened",
    "record_trial",
]
