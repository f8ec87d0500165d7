"""speechnas: hardware-aware neural architecture search for speech models."""

__version__ = "0.1.0"
