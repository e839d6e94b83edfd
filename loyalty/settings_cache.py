"""The programme's settings that every write reads (the earning rules, the tier ladder), kept in
this process for a few seconds.

A purchase needs both: the rate and the return window from the rules, the multiplier, the
upgrade thresholds and the tier's name from the ladder. Read from the database they cost two
round trips per purchase, for rows that change when marketing edits them, a few times a year.

So each process keeps what it read for LOYALTY_SETTINGS_CACHE_SECONDS (5). A change committed in
this process is seen here at once: the cache is emptied when a transaction that wrote a watched
table commits (a session event, so every writer is covered, the seed and tests included). Other
processes (gunicorn workers, the scheduler) see it within those seconds. A transaction that has
written a watched table and not committed yet reads the database, and keeps nothing: its view
is its own until it commits.

Values are immutable (frozen dataclasses, tuples): they outlive the session that read them.
"""
import threading
import time
from itertools import chain

from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from loyalty.extensions import db
from loyalty.config import settings

_WATCHED: dict[type, str] = {}  # mapped class -> the cache name its rows feed
_CHANGED = "settings_cache_changed"  # session.info: names this session's flushes wrote


class _Cache:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}  # name -> (read at, value)
        self.generation = 0  # bumped by every forget: a read that began before it keeps nothing


def watch(model, name):
    """Rows of `model` feed the cached value `name`: writing them forgets it."""
    _WATCHED[model] = name


def cached(name, load):
    """The value `name`, from this process's cache or, if missing or too old, from `load()`."""
    cache = _cache()
    ttl = settings().settings_cache_seconds
    session = db.session()
    if name in session.info.get(_CHANGED, ()) or _pending_writes(session, name):
        return load()  # this transaction changed it: its own view, never shared
    hit = cache.values.get(name)
    if hit is not None and time.monotonic() - hit[0] < ttl:
        return hit[1]
    generation = cache.generation
    value = load()
    with cache.lock:
        if cache.generation == generation:
            cache.values[name] = (time.monotonic(), value)
    return value


def forget(*names):
    """Forget `names` (all if none) in this app's cache (outside an app, there is none)."""
    if not has_app_context():
        return
    cache = _cache()
    with cache.lock:
        cache.generation += 1
        for name in names or list(cache.values):
            cache.values.pop(name, None)


def _cache():
    return current_app.extensions.setdefault("loyalty_settings_cache", _Cache())


def _pending_writes(session, name):
    return any(_WATCHED.get(type(obj)) == name for obj in chain(session.new, session.dirty, session.deleted))


@event.listens_for(Session, "after_flush")
def _remember_writes(session, flush_context):
    names = {_WATCHED[type(obj)] for obj in chain(session.new, session.dirty, session.deleted)
             if type(obj) in _WATCHED}
    if names:
        session.info.setdefault(_CHANGED, set()).update(names)
        forget(*names)  # a twin in this process reading now gets the old value, and keeps nothing


@event.listens_for(Session, "after_commit")
def _forget_committed(session):
    names = session.info.pop(_CHANGED, None)
    if names:
        forget(*names)


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session):
    names = session.info.pop(_CHANGED, None)
    if names:
        forget(*names)
