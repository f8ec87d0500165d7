"""Model parts built once per configuration, for builds that only count (:func:`shared_layers`).

Counting an architecture's parameters builds it on the ``meta`` device, and even there PyTorch
spends most of the time constructing and "initialising" every module (20-50 ms per
architecture). The searches count many thousands (feasibility tests, the WER
predictor's encoding of every candidate). Inside :func:`shared_layers`, the builder takes each
encoder layer, the subsampling and the decoder from a memo keyed by the factory and the
arguments' ``repr`` (numbers, strings and tuples of them), so a build hands the same module to
every slot configured alike, and later builds reuse it; :func:`parameter_count` counts each
slot. A model built this way is only for counting: its parts are shared."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from torch import nn

#: parts a memo keeps, the least recently used dropped first (about 80 kB each, on meta)
LIMIT = 2_000

_MEMO: ContextVar[dict[str, nn.Module] | None] = ContextVar("shared_layers", default=None)
_COUNTS: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()  # own params
_USES: ContextVar[list[nn.Module] | None] = ContextVar("shared_layer_uses", default=None)


def _plain(value: Any) -> bool:
    """Whether ``value``'s repr says all of it: numbers, strings, None and tuples of them (an
    object's default repr holds its address, which a later object may reuse)."""
    if isinstance(value, tuple | list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def _key(
    factory: Callable[..., nn.Module], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """The memo key of a call, or None when an argument is not :func:`_plain`."""
    func = getattr(factory, "func", factory)  # functools.partial: its function and bound keywords
    bound = sorted(getattr(factory, "keywords", {}).items())
    if not _plain([*args, *kwargs.values(), *(v for _, v in bound)]):
        return None
    name = f"{func.__module__}.{func.__qualname__}"
    return repr((name, bound, args, sorted(kwargs.items())))


def make_layer(factory: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
    """``factory(*args, **kwargs)``, or inside :func:`shared_layers` the memo's module for that
    call (built on first use); a call with other than plain arguments (see :func:`_plain`) is
    built afresh."""
    memo = _MEMO.get()
    key = None if memo is None else _key(factory, args, kwargs)
    if memo is None or key is None:
        return factory(*args, **kwargs)
    layer = memo.pop(key, None)  # put back below as the most recently used
    if layer is None:
        while len(memo) >= LIMIT:  # dicts keep insertion order: the least recent first
            try:
                del memo[next(iter(memo))]
            except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                break
        # Built with the memo off, so the parts inside it are its own, not shared (a shared
        # part counts its parameters once however many slots inside it hold them).
        t1, t2 = _MEMO.set(None), _USES.set(None)
        try:
            layer = factory(*args, **kwargs)
        finally:
            _MEMO.reset(t1)
            _USES.reset(t2)
    memo[key] = layer
    uses = _USES.get()
    if uses is not None:
        uses.append(layer)
    return layer


@contextmanager
def shared_layers(memo: dict[str, nn.Module]) -> Iterator[list[nn.Module]]:
    """Builds inside take their layers from ``memo``; yields the list of layers handed out."""
    uses: list[nn.Module] = []
    t1, t2 = _MEMO.set(memo), _USES.set(uses)
    try:
        yield uses
    finally:
        _MEMO.reset(t1)
        _USES.reset(t2)


def parameter_count(model: nn.Module, uses: list[nn.Module]) -> int:
    """Parameters of ``model`` built inside :func:`shared_layers` as if no layer were shared:
    its distinct parameters outside the shared layers plus each slot's layer's own (counted
    once per layer and kept with it)."""
    shared = {id(m) for m in uses}
    seen: set[int] = set()
    total = 0
    stack = [model]
    while stack:  # the modules outside the shared layers, parameters tied among them once
        m = stack.pop()
        for p in m._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        stack.extend(c for c in m._modules.values() if c is not None and id(c) not in shared)
    for layer in uses:
        count = _COUNTS.get(layer)
        if count is None:
            count = _COUNTS[layer] = sum(p.numel() for p in layer.parameters())
        total += count
    return total
