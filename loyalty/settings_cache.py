"""The programme's settings that every write reads (the earning rules, the tier ladder, the webhook
subscribers, later the promotions), kept in this process and dropped the moment any process changes
one.

A purchase needs them all: the rate and the return window from the rules, the multiplier, the
upgrade thresholds and the tier's name from the ladder, whether anyone listens for its events.
Read from the database they would cost a round trip each per purchase, for rows that marketing
changes a few times a week.

So each process keeps what it read, tagged with the **settings version** it read it under: one
counter in one row (`settings_version`), bumped in the same transaction as every change of a
watched table (a session event, so every ORM writer is covered, the seed and the tests included).
A request reads the version with a statement it sends anyway: its API key's check (`auth._ACTIVE_KEY`),
or, when the key was checked here in the last few seconds, its data (a member read, a purchase's
lock); so it learns of a change committed anywhere, by any process, without another round trip, and a
value kept under an older version is read again. Outside a request (a
job, the CLI) the first cached read of a session asks for the version once.

A transaction that has written a watched table and not committed yet reads the database and keeps
nothing: its view is its own until it commits. LOYALTY_SETTINGS_CACHE_SECONDS (300) is a safety net
only: a change written behind the service's back (psql, say) bumps no version, and is seen once the
value is that old.

Values are immutable (frozen dataclasses, tuples): they outlive the session that read them.
"""
import threading
import time
from itertools import chain
from typing import Any, Callable, TypeVar

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Mapped, Session, mapped_column

from loyalty.config import settings
from loyalty.database import transaction
from loyalty.extensions import Model, db

T = TypeVar("T")

_WATCHED: dict[type, str] = {}  # mapped class -> the cache name its rows feed
_CHANGED = "settings_cache_changed"  # session.info: names this session's flushes wrote
_SEEN = "settings_version_seen"  # session.info: the version this session's request (or job) read
_KEPT = "settings_cache_kept"  # session.info: (this app's _Cache, its safety net in seconds), for `cached`


class SettingsVersion(Model):
    """One row (id 1): how many times the watched settings have changed. Bumped by every change, in
    the change's own transaction."""

    __tablename__ = "settings_version"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)


# The version as a scalar subquery, for statements a request runs anyway (the API-key lookup).
VERSION = (sa.select(SettingsVersion.version).where(SettingsVersion.id == 1)
           .scalar_subquery().label("settings_version"))
_READ_VERSION = sa.select(VERSION)
_BUMP = sa.update(SettingsVersion).where(SettingsVersion.id == 1).values(version=SettingsVersion.version + 1)


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, tuple[float, int, Any]] = {}  # name -> (read at, version, value)
        self.generation = 0  # bumped by every forget: a read that began before it keeps nothing


def watch(model: type, name: str) -> None:
    """Rows of `model` feed the cached value `name`: writing them bumps the version and forgets it."""
    _WATCHED[model] = name


def observe(version: int | None) -> None:
    """This session's request read `version` (with its API key): cached values are trusted only if
    they were read under it."""
    db.session().info[_SEEN] = version or 0


def seen() -> int | None:
    """The version this session's request (or job) has read, if any."""
    return db.session().info.get(_SEEN)


def changed_here() -> bool:
    """Has this session's transaction written a watched table (and so moved the version, uncommitted)?
    A version it reads now is its own: nothing is to be kept under it (`cached`, auth's key cache)."""
    return bool(db.session().info.get(_CHANGED))


def renew() -> None:
    """Forget the version this session has seen: its next cached read asks again (a job does this
    before each batch, as a request does with its key)."""
    db.session().info.pop(_SEEN, None)


def bump() -> None:
    """Move the version in this transaction for a change no watched row shows (a member's tokens
    revoked, a member closed or erased): every process's next read with a cached credential then
    checks it again (auth.roles). Rare writes only: each costs every process a
    re-read of its cached settings."""
    db.session.execute(_BUMP)
    # Like a watched change: what this transaction reads now is under its own uncommitted version.
    db.session().info.setdefault(_CHANGED, set()).add("settings_version")


def seed_version() -> None:
    """The version row, if missing (the migration writes it; tests that empty every table call this)."""
    with transaction():
        if db.session.get(SettingsVersion, 1) is None:
            db.session.add(SettingsVersion(id=1, version=0))


def cached(name: str, load: Callable[[], T]) -> T:
    """The value `name`, from this process's cache if it was read under the version this session
    has seen (and not longer ago than the safety net), else from `load()`."""
    session = db.session()
    info = session.info
    if not info.get(_CHANGED) and not session.identity_map.check_modified() and not session.new \
            and not session.deleted:
        # Nothing written or about to be by this session (a request's usual case): the kept value,
        # with nothing more asked than the version seen.
        seen = info.get(_SEEN)
        kept = info.get(_KEPT)
        if seen is not None and kept is not None:
            hit = kept[0].values.get(name)
            if hit is not None and hit[1] == seen and time.monotonic() - hit[0] < kept[1]:
                return hit[2]
    cache = _cache()
    if info.get(_CHANGED) or _pending_writes(session, name):
        # This transaction changed a setting (this one or another): it reads its own view, and keeps
        # nothing under the version it moved and has not committed.
        return load()
    info[_KEPT] = (cache, settings().settings_cache_seconds)
    seen = session.info.get(_SEEN)
    if seen is None:
        seen = session.info[_SEEN] = session.execute(_READ_VERSION).scalar() or 0
    hit = cache.values.get(name)
    if hit is not None and hit[1] == seen and time.monotonic() - hit[0] < settings().settings_cache_seconds:
        return hit[2]
    generation = cache.generation
    value = load()
    with cache.lock:
        current = cache.values.get(name)
        # Keep it unless a forget came in between, or another thread already keeps a newer read.
        if cache.generation == generation and (current is None or current[1] <= seen):
            cache.values[name] = (time.monotonic(), seen, value)
    return value


def forget(*names: str) -> None:
    """Forget `names` (all if none) in this app's cache (outside an app, there is none)."""
    if not has_app_context():
        return
    cache = _cache()
    with cache.lock:
        cache.generation += 1
        for name in names or list(cache.values):
            cache.values.pop(name, None)


def _cache() -> _Cache:
    return current_app.extensions.setdefault("loyalty_settings_cache", _Cache())


def _pending_writes(session: Session, name: str) -> bool:
    return any(_WATCHED.get(type(obj)) == name for obj in chain(session.new, session.dirty, session.deleted))


@event.listens_for(Session, "after_flush")
def _remember_writes(session: Session, flush_context: Any) -> None:
    names = {_WATCHED[type(obj)] for obj in chain(session.new, session.dirty, session.deleted)
             if type(obj) in _WATCHED}
    if names:
        if not session.info.get(_CHANGED):
            # Once per transaction: every process's next request sees a new version when this commits.
            session.connection().execute(_BUMP)
        session.info.setdefault(_CHANGED, set()).update(names)
        forget(*names)  # a twin in this process reading now gets the old value, and keeps nothing


@event.listens_for(Session, "after_commit")
def _forget_committed(session: Session) -> None:
    names = session.info.pop(_CHANGED, None)
    if names:
        session.info.pop(_SEEN, None)  # this session's next read learns the version it made
        forget(*names)


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session: Session) -> None:
    names = session.info.pop(_CHANGED, None)
    if names:
        session.info.pop(_SEEN, None)  # it may be the version the rolled-back transaction made
        forget(*names)
