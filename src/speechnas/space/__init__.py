"""The search-space vocabulary: choices, spaces, the immutable `Arch`, built-in spaces as YAML."""

from speechnas.space.arch import Arch, Scalar, Value
from speechnas.space.choice import Choice, Constraint
from speechnas.space.loading import builtin_spaces, load_space, space_from_yaml
from speechnas.space.space import SAMPLE_BY, SearchSpace, describe

__all__ = [
    "SAMPLE_BY",
    "Arch",
    "Choice",
    "Constraint",
    "Scalar",
    "SearchSpace",
    "Value",
    "builtin_spaces",
    "describe",
    "load_space",
    "space_from_yaml",
]
