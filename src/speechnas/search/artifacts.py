"""Where trial checkpoints are kept when the workers do not share a folder: an artifact store.

``artifacts: URL`` in a search config (``--artifacts``) names it by an fsspec URL: a path or
``file:///shared/speechnas`` here, ``s3://bucket/prefix`` (with ``s3fs`` installed),
``gs://...`` (``gcsfs``), ``abfs://...`` (``adlfs``) or any other fsspec filesystem, with that
library's own credentials. A worker trains in its local trial folder as always, then copies the
folder's ``last`` and ``best`` checkpoints to ``URL/<study>/<trial folder>`` and records that
location on the trial (``artifact_uri``); a worker on another machine that continues the trial
at a higher rung fetches them from there into its own folder first. fsspec (a dependency of
PyTorch) does the transfers: its filesystems are the well-kept plug-ins for object storage.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CHECKPOINTS",
    "check_store",
    "fetch_checkpoints",
    "resume_source",
    "store_checkpoints",
    "trial_uri",
]

#: The checkpoint folders of a trial that a higher rung continues from.
CHECKPOINTS = ("last", "best")


def _fs(url: str):  # type: ignore[no-untyped-def]
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise ValueError(
            f"artifacts: {url!r} names no usable filesystem ({e}); give a path, file:///..., or "
            "a URL whose fsspec filesystem is installed (s3:// needs s3fs, gs:// gcsfs)"
        ) from None


def trial_uri(artifacts: str, study: str, trial_dir: Path) -> str:
    """Where the checkpoints of the trial trained in ``trial_dir`` go."""
    return f"{artifacts.rstrip('/')}/{study}/{trial_dir.name}"


def check_store(artifacts: str) -> None:
    """A ValueError naming the problem when the store cannot be written (before any work)."""
    fs, root = _fs(artifacts)
    try:
        fs.makedirs(root, exist_ok=True)
    except OSError as e:
        raise ValueError(f"artifacts: {artifacts!r} cannot be written: {e}") from None


def store_checkpoints(trial_dir: Path, uri: str) -> list[str]:
    """Copies ``trial_dir``'s checkpoint folders to ``uri``; returns the names copied."""
    fs, root = _fs(uri)
    copied = []
    for name in CHECKPOINTS:
        local = trial_dir / name
        if local.is_dir():
            remote = f"{root}/{name}"
            if fs.exists(remote):
                fs.rm(remote, recursive=True)
            fs.makedirs(remote, exist_ok=True)
            for f in sorted(local.iterdir()):
                fs.put_file(str(f), f"{remote}/{f.name}")
            copied.append(name)
    return copied


def fetch_checkpoints(uri: str, trial_dir: Path) -> list[str]:
    """Copies the checkpoint folders stored at ``uri`` into ``trial_dir``; returns their names
    (none when nothing is stored there)."""
    fs, root = _fs(uri)
    fetched = []
    for name in CHECKPOINTS:
        remote = f"{root}/{name}"
        if not fs.isdir(remote):
            continue
        local = trial_dir / name
        local.mkdir(parents=True, exist_ok=True)
        for entry in fs.ls(remote, detail=False):
            fs.get_file(entry, str(local / Path(entry).name))
        fetched.append(name)
    return fetched


def resume_source(source: dict[str, object], trial_dir: Path) -> str | None:
    """The folder a promoted trial continues from, given its lower rung's trial attributes:
    that trial's own folder where this machine sees it, else a local copy of its stored
    checkpoints (``artifact_uri``) next to ``trial_dir``; None when neither exists."""
    folder = source.get("output_dir")
    if folder and (Path(str(folder)) / "last").is_dir():
        return str(folder)
    uri = source.get("artifact_uri")
    if uri:
        staging = trial_dir.with_name(trial_dir.name + ".from-store")
        if (staging / "last").is_dir() or fetch_checkpoints(str(uri), staging):
            return str(staging)
    return str(folder) if folder else None
