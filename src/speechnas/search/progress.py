"""Live progress of a search: a line per finished trial, a status line for the running ones."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.status import Status

from speechnas.search.config import SearchConfig
from speechnas.search.select import (
    format_value,
    front,
    normalized_hypervolume,
    reference_point,
    results,
)
from speechnas.search.study import SearchStudy, is_interrupted


class Progress:
    """Prints one line per finished trial with the state of the search after it, and (on a
    terminal) a status line naming the trials running now."""

    def __init__(self, cfg: SearchConfig, console: Console) -> None:
        self.cfg = cfg
        self.console = console
        self.shown: set[int] = set()
        self.counted = 0  # finished trials that count towards n_trials
        self.status: Status | None = None
        self.summary = "starting"
        self.total: int | None = cfg.n_trials  # shown as "k/total trials"

    def skip(self, ss: SearchStudy) -> None:
        """Marks the trials finished so far (a resumed study's) as shown."""
        for t in ss.trials():
            if t.state.is_finished():
                self.shown.add(t.number)
                self.counted += _counts(t)

    def update(self, ss: SearchStudy) -> None:
        trials = ss.trials()
        done = [t for t in trials if t.state.is_finished() and t.number not in self.shown]
        total = self.total
        for t in done:
            self.shown.add(t.number)
            self.counted += _counts(t)
            rows = results([x for x in trials if x.number in self.shown])
            fr = front(rows)
            ref = reference_point(
                self.cfg.objectives,
                rows,
                given=self.cfg.reference,
                constraints=self.cfg.constraints.to_dict(),
            )
            hv = normalized_hypervolume([r.values for r in rows], ref)
            a = t.user_attrs
            what = (
                " ".join(
                    f"{o} {format_value(o, v)}"
                    for o, v in zip(self.cfg.objectives, t.values, strict=True)
                )
                if t.values
                else f"[yellow]{t.state.name}[/] {a.get('status', '')}"
            )
            best = min((r.values[0] for r in rows), default=None)
            best_s = "-" if best is None else format_value(self.cfg.objectives[0], best)
            of = f"/{total}" if total else ""
            self.summary = (
                f"{self.counted}{of} trials | best {self.cfg.objectives[0]} {best_s}, "
                f"front {len(fr)}, HV {hv:.3f}"
            )
            self.console.print(
                f"[bold]#{t.number}[/] {_where(a)} {_fidelity_label(a)} "
                f"{a.get('arch_key', '')[:8]}  {what}  | {self.summary}",
                soft_wrap=True,
                highlight=False,
            )
        if self.status is not None:
            running = [
                f"#{t.number} rung {t.user_attrs.get('rung')} {t.user_attrs.get('arch_key', '')}"
                for t in trials
                if not t.state.is_finished()
            ]
            self.status.update(f"running {', '.join(running) or '-'} | {self.summary}")


def _counts(t: Any) -> bool:
    """Whether a finished trial counts towards ``n_trials``: not an interrupted one, nor a
    proposal screened before training (it holds no slot)."""
    return not is_interrupted(t) and "screened" not in t.user_attrs


def _where(attrs: dict[str, Any]) -> str:
    return "screened" if "screened" in attrs else f"rung {attrs.get('rung', '?')}"


def _fidelity_label(attrs: dict[str, Any]) -> str:
    f = attrs.get("fidelity") or {}
    if not f:
        return ""
    steps = f" {f['steps']} steps" if f.get("steps") else ""
    return f"{f['minutes']:g}min@{f['fraction']:g}{steps}"


__all__ = ["Progress"]
