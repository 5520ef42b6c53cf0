"""A run's example database: failing scripts kept for the next run, in a directory or in Redis.

``open_corpus("DIR")`` is Hypothesis's :class:`DirectoryBasedExampleDatabase`;
``open_corpus("redis://host:port/N")`` is its
:class:`~hypothesis.extra.redis.RedisExampleDatabase` over the ``redis``
client, which is how campaigns on several machines pool one corpus. Either
comes wrapped in :class:`CountingDatabase`, which counts the saved scripts
replayed (the evidence that a campaign resumed).

What is kept is scripts, not Hypothesis's choice sequences: the search never
raises on a violation (see :mod:`harness.run.runner`), so Hypothesis has no
failing example of its own to save. Each reproducer's script is saved under
:data:`FAILING_KEY` as JSON with the property it broke, and a run replays
every saved script before it draws new ones; one that no longer breaks its
property is forgotten, as Hypothesis forgets a fixed failure. A script is
the harness's own format, readable, the same on every Hypothesis version and
every machine of a campaign.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase

from harness.model.errors import ScriptError, UsageError
from harness.model.script import Script

_FOREVER = timedelta(days=3650)
#: Where reproducers' scripts are kept (one value per script and property).
FAILING_KEY = b"epoll-harness:failing-scripts"


class CorpusError(UsageError):
    """The example database cannot be opened or reached; the message says why."""


class CountingDatabase(ExampleDatabase):
    """``inner``, counting the examples fetched (replayed) from it."""

    def __init__(self, inner: ExampleDatabase, where: str) -> None:
        super().__init__()
        self.inner = inner
        self.where = where
        self.replayed = 0

    def save(self, key: bytes, value: bytes) -> None:
        self.inner.save(key, value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        for value in self.inner.fetch(key):
            self.replayed += 1
            yield value

    def delete(self, key: bytes, value: bytes) -> None:
        self.inner.delete(key, value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self.inner.move(src, dest, value)

    def __repr__(self) -> str:
        return f"CountingDatabase({self.where})"


def open_corpus(spec: str) -> CountingDatabase:
    """The database named by ``spec``: a ``redis://`` URL, or a directory (created if missing)."""
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return CountingDatabase(_redis(spec), spec)
    from pathlib import Path

    path = Path(spec)
    if path.exists() and not path.is_dir():
        raise CorpusError(f"--db {spec}: not a directory (give a directory or a redis:// URL)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"--db {spec}: cannot create the directory: {exc.strerror}") from None
    return CountingDatabase(DirectoryBasedExampleDatabase(str(path)), str(path))


def _redis(url: str) -> ExampleDatabase:
    try:
        import redis
        from hypothesis.extra.redis import RedisExampleDatabase
    except ImportError:
        raise CorpusError(
            f"--db {url}: a Redis corpus needs the redis client: pip install 'epoll-harness[campaign]'"
        ) from None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
        client.ping()
    except ValueError as exc:
        raise CorpusError(f"--db {url}: not a Redis URL ({exc})") from None
    except redis.RedisError as exc:
        raise CorpusError(f"--db {url}: cannot reach Redis ({exc}); is redis-server running there?") from None
    # Hypothesis's Redis database expires entries (8 days by default): a corpus is kept for good.
    return RedisExampleDatabase(client, expire_after=_FOREVER, key_prefix=b"epoll-harness:")


@dataclass(frozen=True)
class SavedFailure:
    """A script the corpus holds, the property it broke when saved, and its stored form."""

    property_name: str
    script: Script
    stored: bytes


def save_failure(database: ExampleDatabase, property_name: str, script: Script) -> None:
    """Keep ``script`` as a failure of ``property_name`` (saving the same one twice keeps one)."""
    database.save(FAILING_KEY, _stored(property_name, script))


def forget_failure(database: ExampleDatabase, property_name: str, script: Script) -> None:
    """No longer keep ``script`` for ``property_name`` (a smaller one replaces it, say)."""
    database.delete(FAILING_KEY, _stored(property_name, script))


def _stored(property_name: str, script: Script) -> bytes:
    value = {"property": property_name, "script": script.to_json()}
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def saved_failures(database: ExampleDatabase) -> tuple[list[SavedFailure], int]:
    """The scripts the corpus holds, and how many of its values could not be read.

    A value that does not parse (written by hand, cut short, from a later
    version) is left where it is and counted: it is not this run's to delete.
    """
    found: list[SavedFailure] = []
    unreadable = 0
    for stored in database.fetch(FAILING_KEY):
        try:
            value = json.loads(stored)
            found.append(SavedFailure(str(value["property"]), Script.from_json(value["script"]), stored))
        except (ValueError, KeyError, TypeError, ScriptError):
            unreadable += 1
    return found, unreadable


def forget(database: ExampleDatabase, saved: SavedFailure) -> None:
    database.delete(FAILING_KEY, saved.stored)
