"""Which matrix instructions this CPU has, and which of them a precision needs.

Low-precision latency depends on the CPU more than fp32 latency does: int8 matmuls are fast
only with VNNI dot products (AVX-512 VNNI, AVX-VNNI) or AMX tiles, and bf16 matmuls only with
AVX-512 BF16 or AMX-BF16; without them the runtimes fall back to slower paths (or to fp32
arithmetic) and a profile would measure the fallback. The flags are read from
``/proc/cpuinfo`` (Linux), which names every extension; PyTorch's
``torch.backends.cpu.get_cpu_capability()`` only tells the widest vector ISA its kernels use
(e.g. "AVX512"), so it is reported alongside but not used to decide.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "MATRIX_FEATURES",
    "PRECISION_FEATURES",
    "check_precision",
    "cpu_features",
    "cpu_report",
    "cpu_ticks",
    "missing_features",
    "steal_share",
]

#: The /proc/cpuinfo flags that matter for low-precision matmuls.
MATRIX_FEATURES: tuple[str, ...] = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)

#: precision → alternatives: the CPU must have at least one flag of the tuple for the
#: precision's fast path. "fp32" and ORT's dynamic "int8" run anywhere (int8 then without
#: dot-product instructions, which the int8 target's timings then reflect).
PRECISION_FEATURES: Mapping[str, tuple[str, ...]] = {
    "bf16": ("avx512_bf16", "amx_bf16"),
    "int8-static": ("avx512_vnni", "avx_vnni", "amx_int8"),
}


def _cpuinfo_flags(text: str) -> set[str]:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def cpu_features(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's flags among :data:`MATRIX_FEATURES` (empty where /proc/cpuinfo is absent).
    ``cpuinfo``: the text of a /proc/cpuinfo to read instead of this machine's (tests)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        try:
            cpuinfo = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    return frozenset(_cpuinfo_flags(cpuinfo) & set(MATRIX_FEATURES))


def missing_features(precision: str, features: Iterable[str] | None = None) -> tuple[str, ...]:
    """The flags ``precision`` needs of which the CPU has none (all its alternatives), or ()
    when it has one of them or the precision needs none."""
    need = PRECISION_FEATURES.get(precision, ())
    have = cpu_features() if features is None else frozenset(features)
    return () if not need or have & set(need) else need


def check_precision(precision: str, features: Iterable[str] | None = None) -> None:
    """Raises a ValueError naming the precision and the missing flags when this CPU lacks
    every instruction set of the precision's fast path."""
    missing = missing_features(precision, features)
    if missing:
        have = sorted(cpu_features() if features is None else set(features))
        raise ValueError(
            f"target precision: {precision!r} needs one of the CPU features {list(missing)}, "
            f"this CPU ({platform.machine()}) has {have or 'none of ' + str(list(MATRIX_FEATURES))}"
        )


def cpu_report() -> dict[str, str]:
    """What a profile records about the CPU: its matrix flags and PyTorch's vector ISA."""
    out = {"cpu_features": ",".join(sorted(cpu_features())) or "none"}
    try:
        import torch

        out["torch_cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError):  # pragma: no cover - torch is a dependency
        out["torch_cpu_capability"] = "unknown"
    return out


def cpu_ticks(stat: str | None = None) -> tuple[int, ...] | None:
    """The machine's cumulative CPU time counters (the ``cpu`` line of /proc/stat: user, nice,
    system, idle, iowait, irq, softirq, steal, ...), or None where they cannot be read.
    ``stat``: the text of a /proc/stat to read instead of this machine's (tests)."""
    if stat is None:
        try:
            stat = Path("/proc/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            return None
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            try:
                return tuple(int(f) for f in fields[1:])
            except ValueError:
                return None
    return None


def steal_share(before: tuple[int, ...] | None, after: tuple[int, ...] | None) -> float | None:
    """The share of the CPU time between two :func:`cpu_ticks` readings that the hypervisor
    gave to other guests (``steal``): on a virtual machine, the part of a timing's noise that
    no care inside the machine removes. None without both readings or a steal counter."""
    if before is None or after is None or min(len(before), len(after)) < 8:
        return None
    spent = sum(after[:8]) - sum(before[:8])  # guest time is already inside user
    return (after[7] - before[7]) / spent if spent > 0 else None
