"""Search spaces from YAML: a file path, or the name of a built-in space in `spaces/`."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from speechnas.space.space import SearchSpace

_SUFFIXES = (".yaml", ".yml")


def _builtin_dir() -> Traversable:
    return resources.files("speechnas.space").joinpath("spaces")


def builtin_spaces() -> list[str]:
    """The names of the built-in spaces."""
    return sorted(
        p.name.rsplit(".", 1)[0] for p in _builtin_dir().iterdir() if p.name.endswith(_SUFFIXES)
    )


def space_from_yaml(text: str, *, source: str = "<string>") -> SearchSpace:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"search space {source}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"search space {source}: expected a mapping at the top level")
    try:
        return SearchSpace.from_dict(data)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def load_space(path_or_name: str | Path) -> SearchSpace:
    """Load a space from a YAML file, or a built-in one by name (`load_space("speech-all")`)."""
    path = Path(path_or_name)
    if isinstance(path_or_name, Path) or path.suffix in _SUFFIXES or path.exists():
        if not path.is_file():
            raise ValueError(f"search space file {str(path)!r} does not exist")
        return space_from_yaml(path.read_text(encoding="utf-8"), source=str(path))
    names = builtin_spaces()
    if path_or_name not in names:
        raise ValueError(
            f"search space {path_or_name!r} is not a built-in space ({', '.join(names)}) "
            "nor a .yaml file"
        )
    entry = _builtin_dir().joinpath(f"{path_or_name}.yaml")
    return space_from_yaml(entry.read_text(encoding="utf-8"), source=f"built-in {path_or_name}")
