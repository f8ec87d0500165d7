"""Hardware in the loop: deployment targets, a latency/RTF/memory profiler, and a latency
predictor calibrated per target from micro-benchmarks of the building blocks.

"Latency" has one definition throughout (see :mod:`speechnas.hardware.profiler`): the time of
the inference work of one utterance of N seconds, batch 1, from model input to output scores.
"""

from speechnas.hardware.backends import Backend, OrtBackend, TorchBackend, backend_for
from speechnas.hardware.evaluation import accuracy, measure_archs
from speechnas.hardware.predictor import LatencyPredictor
from speechnas.hardware.profiler import LATENCY_DEFINITION, LengthResult, Profile, profile
from speechnas.hardware.target import (
    CLOCKS,
    PRECISIONS,
    RUNTIMES,
    Target,
    builtin_targets,
    load_target,
    target_from_dict,
)

__all__ = [
    "CLOCKS",
    "LATENCY_DEFINITION",
    "PRECISIONS",
    "RUNTIMES",
    "Backend",
    "LatencyPredictor",
    "LengthResult",
    "OrtBackend",
    "Profile",
    "Target",
    "TorchBackend",
    "accuracy",
    "backend_for",
    "builtin_targets",
    "load_target",
    "measure_archs",
    "profile",
    "target_from_dict",
]
