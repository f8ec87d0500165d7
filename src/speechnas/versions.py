"""Versions recorded with every result."""

from __future__ import annotations

import platform
from importlib import metadata


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("speechnas", "torch", "numpy", "soundfile", "soxr", "jiwer", "espeakng-loader"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
