"""Architecture search: strategies, the multi-fidelity runner, Pareto fronts and selection.

Submodules are imported where they are used; importing this package loads neither torch nor
Optuna.
"""

from __future__ import annotations

import importlib
from typing import Any

# The search's entry points, imported on first access (PEP 562) to keep the package import light.
_EXPORTS = {
    "SearchConfig": "speechnas.search.config",
    "load_search_config": "speechnas.search.config",
    "pareto_front": "speechnas.search.select",
    "retrain": "speechnas.search.select",
    "run_search": "speechnas.search.runner",
    "select_for_target": "speechnas.search.select",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
