"""Search drivers: the ways a search fills its study with trials, one module each.

- :mod:`~speechnas.search.drivers.pool`: workers that claim slots of the successive-halving
  plan, each proposed by a strategy (random, evolution, tpe, nsga2, reinforce, warmstart,
  predictor) and trained as its own trial;
- :mod:`~speechnas.search.drivers.oneshot`: one weight-sharing supernet, searched by inherited
  weights, whose best paths are fine-tuned as the trials.

The contract is :class:`~speechnas.search.drivers.base.Driver`. The registry is every driver
module of this package: a new driver is one new file here, found by :func:`drivers`.

    driver = driver_for(cfg.strategy.name)(cfg)
"""

from __future__ import annotations

import importlib
import pkgutil

from speechnas.search.drivers.base import REGISTRY, Driver


def drivers() -> dict[str, type[Driver]]:
    """Every driver by name (importing the driver modules of this package once)."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return dict(REGISTRY)


def get_driver(name: str) -> type[Driver]:
    """The driver called ``name``; a ValueError listing the drivers otherwise."""
    known = drivers()
    if name not in known:
        raise ValueError(f"driver: {name!r} is not one of {sorted(known)}")
    return known[name]


def strategy_names() -> list[str]:
    """Every ``strategy.name`` some driver runs."""
    return sorted(s for d in drivers().values() for s in d.strategies)


def driver_for(strategy: str) -> type[Driver]:
    """The driver that runs ``strategy`` (a ``strategy.name``); a ValueError listing every
    strategy name otherwise."""
    for d in drivers().values():
        if strategy in d.strategies:
            return d
    raise ValueError(f"strategy.name: {strategy!r} is not one of {strategy_names()}")


__all__ = ["Driver", "driver_for", "drivers", "get_driver", "strategy_names"]
