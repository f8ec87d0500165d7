"""The search-space vocabulary: choices, spaces, the immutable `Arch`, built-in spaces as YAML."""

from speechnas.space.arch import Arch, Scalar, Value
from speechnas.space.choice import Choice, Constraint
from speechnas.space.loading import builtin_spaces, load_space, space_from_yaml
from speechnas.space.space import SearchSpace, describe

__all__ = [
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
