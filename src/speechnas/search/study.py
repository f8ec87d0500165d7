"""The search's record: an Optuna study in which one trial is one (architecture, fidelity)
evaluation.

Storage: :class:`optuna.storages.RDBStorage` on SQLite by default (``study.db`` in the output
folder), any SQLAlchemy URL for a database server, or ``journal:PATH`` for an Optuna journal
file. SQLite is the default because it needs no server and one file holds the whole study; its
only hazard with several processes is a writer finding the file locked, and a busy timeout of
60 s makes it wait instead of failing (a search writes a handful of rows per trial, minutes
apart, so waits are milliseconds). The journal file is the alternative where SQLite's file
locking is unreliable (some network file systems). PostgreSQL (``postgresql+psycopg2://...``,
the ``cluster`` extra) shares one study between machines; its claims need no shared folder.

Each trial carries its parameters (``flatten(arch)`` with the space's categorical
distributions) and user attributes: ``slot``/``bracket``/``rung``/``proposal``, ``arch`` (JSON)
and ``arch_key``, ``fidelity``, ``seed``, ``versions``, ``worker``, ``metrics``, ``status`` (the
reason of a failure: "diverged: ...", "rejected: ...", the exception, "interrupted"),
``output_dir`` and ``checkpoint``, ``reused_from`` and ``promoted_from``.

States: COMPLETE with the objective values; FAIL with ``status``; PRUNED for a promotion place
that no candidate could fill (fewer finished the rung below than there are places). Candidates
that are not promoted stay COMPLETE at their rung: their values are real measurements at that
fidelity, and a finished Optuna trial cannot change state when the promotion is decided later.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechnas.search.fidelity import SlotState
from speechnas.space import Arch

if TYPE_CHECKING:
    import optuna
    import sqlalchemy
    from optuna.trial import FrozenTrial

INTERRUPTED = "interrupted"
SQLITE_TIMEOUT_S = 60
#: The first half of the PostgreSQL advisory lock key of a study's claims (the second is the
#: study id): an arbitrary constant that other users of the same database are unlikely to pick.
CLAIM_LOCK_KEY = 0x5E_A5C4


def shown_url(url: str) -> str:
    """``url`` with its password masked, for messages and files."""
    import sqlalchemy

    if url.startswith("journal:"):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: ``journal:PATH``, or an SQLAlchemy URL (SQLite gets a
    60 s busy timeout so concurrent writers wait for one another). A ValueError says what is
    wrong with a database URL that cannot be used (missing driver, server not reachable)."""
    import optuna
    import sqlalchemy

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    try:
        shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError as e:
        raise ValueError(
            f"storage {url!r} is not a database URL ({e}); give an SQLAlchemy URL such as "
            "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB, sqlite:///PATH or journal:PATH"
        ) from None
    try:
        return _rdb_storage(url, kwargs)
    except ImportError as e:
        raise ValueError(
            f"storage {shown}: the database driver is not installed ({e}); for PostgreSQL "
            "install it with pip install 'speechnas[cluster]' (psycopg2-binary)"
        ) from None
    except sqlalchemy.exc.OperationalError as e:
        why = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e)
        raise ValueError(
            f"cannot connect to the study storage {shown}: {why}; check that the server runs "
            "and the host, port, user, password and database name are right (a local test "
            "server: bash scripts/pg.sh start DIR prints its URL)"
        ) from None


#: Tries to open a database that other processes may be creating at the same moment.
CREATE_TRIES = 6


def _rdb_storage(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, tried again when another process is creating the same new database.

    Opening a database creates its tables and stamps its schema version when they are missing.
    Two processes doing that at once (a search and a worker joining it, or a search and a
    reader of its progress) collide: one finds a table made since it looked ("already
    exists"), a duplicate version row (an IntegrityError, which Optuna reports as a commit
    error), or tables half made. Optuna does not retry these; the one that lost does here,
    after a short pause, and then finds the database complete. Measured without this: 12 of
    90 processes failed, three at a time opening a new SQLite file.
    """
    import random

    import optuna
    import sqlalchemy

    collisions = (sqlalchemy.exc.IntegrityError, optuna.exceptions.StorageInternalError)
    for attempt in range(CREATE_TRIES - 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except collisions:
            pass
        except sqlalchemy.exc.OperationalError as e:
            if "already exists" not in str(e):
                raise
        time.sleep(0.05 * 2**attempt * (1 + random.random()))
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)  # raises what it meets


@dataclass(frozen=True, slots=True)
class SearchStudy:
    """The Optuna study with its storage and id, for the writes the ``Study`` API lacks
    (creating a RUNNING trial with its parameters in one write, failing an orphaned trial)."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage
    study_id: int

    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)


def open_study(url: str, name: str, n_objectives: int) -> SearchStudy:
    """Creates or re-opens the study (all objectives minimised)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(url)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=["minimize"] * n_objectives,
        load_if_exists=True,
    )
    if len(study.directions) != n_objectives:
        raise ValueError(
            f"study {name!r} in {url} has {len(study.directions)} objectives, the config "
            f"{n_objectives}; use another study_name or output_dir"
        )
    return SearchStudy(study, storage, storage.get_study_id_from_name(name))


@contextlib.contextmanager
def claim_lock(ss: SearchStudy, folder: Path) -> Iterator[None]:
    """An exclusive lock held while a worker reads the study and claims the next slot, so two
    workers never claim the same one.

    On PostgreSQL the lock is the database's: a session-level advisory lock keyed by the study
    id, taken on a connection of the study's own engine. Workers then need nothing in common but
    the database URL to coordinate, and the server releases the lock when a killed worker's
    connection drops. Elsewhere it is an ``flock``, which the kernel releases when a process
    dies (Linux NFS clients map it to NFS byte-range locks): for SQLite on a file beside the
    database (``study.db.claim.lock``), so every process on that database takes the same lock
    whatever its output folder (a search joined with another ``--output-dir``); otherwise (an
    in-memory database, journal files) on ``folder/.claim.lock``.
    """
    engine = getattr(ss.storage, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        with _advisory_lock(engine, CLAIM_LOCK_KEY, ss.study_id):
            yield
        return
    path = folder / ".claim.lock"
    database = engine.url.database if engine is not None and engine.dialect.name == "sqlite" else ""
    if database and database != ":memory:":
        path = Path(database).with_name(Path(database).name + ".claim.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(engine: sqlalchemy.engine.Engine, key: int, study_id: int) -> Iterator[None]:
    import sqlalchemy

    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k, :s)"), {"k": key, "s": study_id})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(
                sqlalchemy.text("SELECT pg_advisory_unlock(:k, :s)"), {"k": key, "s": study_id}
            )
            conn.commit()


# ------------------------------------------------------------------------------ trial views
def is_interrupted(t: FrozenTrial) -> bool:
    from optuna.trial import TrialState

    return t.state == TrialState.FAIL and t.user_attrs.get("status") == INTERRUPTED


def is_finished(t: FrozenTrial) -> bool:
    return t.state.is_finished()


def values_of(t: FrozenTrial) -> tuple[float, ...] | None:
    from optuna.trial import TrialState

    if t.state != TrialState.COMPLETE or t.values is None:
        return None
    return tuple(float(v) for v in t.values)


def arch_of(t: FrozenTrial) -> Arch | None:
    a = t.user_attrs.get("arch")
    return None if a is None else Arch.from_json(a)


def live_trials(ss: SearchStudy) -> list[FrozenTrial]:
    """Every trial except interrupted ones, in number order."""
    return [t for t in ss.trials() if not is_interrupted(t)]


def slot_table(trials: Sequence[FrozenTrial]) -> dict[str, SlotState]:
    """Slot id → the trial that holds it (the lowest number if ever two do)."""
    out: dict[str, SlotState] = {}
    for t in trials:
        slot = t.user_attrs.get("slot")
        if slot is None or slot in out or is_interrupted(t):
            continue
        out[slot] = SlotState(
            number=t.number,
            finished=is_finished(t),
            values=values_of(t),
            arch_key=t.user_attrs.get("arch_key", ""),
            seeded=t.user_attrs.get("seeded") is not None,
        )
    return out


def mark_interrupted(ss: SearchStudy) -> list[int]:
    """Marks every RUNNING trial FAIL with status "interrupted"; their slots are run again.

    Only for a study whose workers are all gone (a resume): a trial is RUNNING while a live
    worker trains it.
    """
    from optuna.trial import TrialState

    numbers = []
    for t in ss.trials():
        if t.state == TrialState.RUNNING:
            set_attrs(ss, t.number, {"status": INTERRUPTED})
            ss.storage.set_trial_state_values(ss.trial_id(t.number), TrialState.FAIL)
            numbers.append(t.number)
    return numbers


#: User attribute of a RUNNING trial: when its worker last said it was alive (Unix seconds).
HEARTBEAT = "heartbeat"


@contextlib.contextmanager
def beating(ss: SearchStudy, number: int, every: float) -> Iterator[None]:
    """Stamps trial ``number``'s :data:`HEARTBEAT` now and every ``every`` seconds while the
    block runs, from a thread, so that a search elsewhere on the same study (a worker joined
    from another machine, or the one it joined) can tell a live trial from a dead worker's.

    Written by hand: Optuna's own heartbeat serves only trials made by ``study.ask`` on an RDB
    storage, and these trials are claimed with ``add_trial`` on any storage."""
    stop = threading.Event()

    def stamp() -> None:
        with contextlib.suppress(Exception):  # a missed beat is only late, never fatal
            ss.storage.set_trial_user_attr(ss.trial_id(number), HEARTBEAT, time.time())

    def loop() -> None:
        while not stop.wait(every):
            stamp()

    stamp()
    thread = threading.Thread(target=loop, name=f"heartbeat-{number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every + 5.0)


def stale_running(ss: SearchStudy, grace: float, now: float | None = None) -> list[int]:
    """RUNNING trials whose worker has not stamped a heartbeat for ``grace`` seconds (counted
    from the claim when it never did): their workers are gone."""
    from optuna.trial import TrialState

    now = time.time() if now is None else now
    out = []
    for t in ss.trials():
        if t.state != TrialState.RUNNING:
            continue
        beat = t.user_attrs.get(HEARTBEAT)
        if beat is None and t.datetime_start is not None:
            beat = t.datetime_start.timestamp()
        if beat is not None and now - float(beat) > grace:
            out.append(t.number)
    return out


def mark_stale(ss: SearchStudy, grace: float) -> list[int]:
    """Marks the :func:`stale_running` trials FAIL with status "interrupted" (their slots are
    run again) and returns their numbers."""
    from optuna.trial import TrialState

    numbers = stale_running(ss, grace)
    for n in numbers:
        set_attrs(ss, n, {"status": INTERRUPTED, "interrupted_by": f"no heartbeat for {grace:g} s"})
        ss.storage.set_trial_state_values(ss.trial_id(n), TrialState.FAIL)
    return numbers


def release_worker(
    ss: SearchStudy, index: int, reason: str, worker: str | None = None
) -> list[int]:
    """Marks the RUNNING trials of worker ``index`` of this search (``worker`` attribute
    ``HOST:PID:INDEX``; exactly ``worker`` when given) FAIL with status "interrupted" and
    ``reason``, so their slots are run again; for a worker known to be dead. Returns their
    numbers."""
    from optuna.trial import TrialState

    def mine(name: str) -> bool:
        return name == worker if worker is not None else name.endswith(f":{index}")

    numbers = []
    for t in ss.trials():
        if t.state == TrialState.RUNNING and mine(str(t.user_attrs.get("worker", ""))):
            set_attrs(ss, t.number, {"status": INTERRUPTED, "interrupted_by": reason})
            ss.storage.set_trial_state_values(ss.trial_id(t.number), TrialState.FAIL)
            numbers.append(t.number)
    return numbers


def add_trial(
    ss: SearchStudy,
    *,
    state: optuna.trial.TrialState,
    params: dict[str, Any] | None = None,
    distributions: dict[str, Any] | None = None,
    user_attrs: dict[str, Any],
) -> int:
    """Creates a trial in ``state`` (RUNNING to claim a slot, PRUNED for an empty place) in one
    storage write, and returns its number."""
    from optuna.trial import create_trial

    template = create_trial(
        state=state,
        params=params or {},
        distributions=distributions or {},
        user_attrs=jsonable(user_attrs),
    )
    trial_id = ss.storage.create_new_trial(ss.study_id, template_trial=template)
    return ss.storage.get_trial_number_from_id(trial_id)


def set_attrs(ss: SearchStudy, number: int, attrs: dict[str, Any]) -> None:
    trial_id = ss.trial_id(number)
    for k, v in attrs.items():
        ss.storage.set_trial_user_attr(trial_id, k, jsonable(v))


def jsonable(v: Any) -> Any:
    """``v`` with non-finite floats as None, tuples as lists (for JSON and Optuna's storage)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v


@dataclass(frozen=True, slots=True)
class Reusable:
    """An earlier evaluation of the same architecture at the same fidelity."""

    number: int
    values: tuple[float, ...] | None
    attrs: dict[str, Any]


def find_evaluation(
    trials: Sequence[FrozenTrial], arch_key: str, fidelity: dict[str, Any]
) -> Reusable | None:
    """A finished trial that trained ``arch_key`` at ``fidelity``: a COMPLETE one, or one that
    diverged (deterministic on the CPU, so it would again). Reuses are followed to the
    original. Crashes are not reused: they may be transient."""
    from optuna.trial import TrialState

    for t in trials:
        a = t.user_attrs
        if a.get("arch_key") != arch_key or a.get("fidelity") != fidelity:
            continue
        if a.get("reused_from") is not None:
            continue
        if t.state == TrialState.COMPLETE:
            return Reusable(t.number, values_of(t), dict(a))
        if t.state == TrialState.FAIL and str(a.get("status", "")).startswith("diverged"):
            return Reusable(t.number, None, dict(a))
    return None


__all__ = [
    "HEARTBEAT",
    "INTERRUPTED",
    "Reusable",
    "SearchStudy",
    "add_trial",
    "arch_of",
    "beating",
    "claim_lock",
    "find_evaluation",
    "is_finished",
    "is_interrupted",
    "jsonable",
    "live_trials",
    "make_storage",
    "mark_interrupted",
    "mark_stale",
    "open_study",
    "release_worker",
    "set_attrs",
    "shown_url",
    "slot_table",
    "stale_running",
    "values_of",
]
