"""A campaign's example database: a directory, or Redis for several machines.

``open_corpus("DIR")`` is Hypothesis's :class:`DirectoryBasedExampleDatabase`;
``open_corpus("redis://host:port/N")`` is its
:class:`~hypothesis.extra.redis.RedisExampleDatabase` over the ``redis``
client, which is how campaigns on several machines pool one corpus. Either
comes wrapped in :class:`CountingDatabase`, which counts the saved examples
replayed (the evidence that a campaign resumed).

A worker's first search round uses the corpus as Hypothesis does: replays it,
saves what fails, prunes what no longer does. Its later rounds ignore the
properties already found, so a saved failure of one would pass there and be
pruned: they get :class:`SaveOnlyDatabase`, which saves new failures and
neither replays nor deletes anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase

from harness.model.errors import UsageError

_FOREVER = timedelta(days=3650)


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


class SaveOnlyDatabase(ExampleDatabase):
    """Saves through ``inner``; replays nothing and deletes nothing (see the module docstring)."""

    def __init__(self, inner: ExampleDatabase) -> None:
        super().__init__()
        self.inner = inner

    def save(self, key: bytes, value: bytes) -> None:
        self.inner.save(key, value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        return ()

    def delete(self, key: bytes, value: bytes) -> None:
        pass

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self.inner.save(dest, value)

    def __repr__(self) -> str:
        return f"SaveOnlyDatabase({self.inner!r})"


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
