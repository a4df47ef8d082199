"""Where the benchmark's SQLite databases live, and the rows they hold.

The directory is ``$FCGI_BENCH_DATA`` (the harness points it at its temp dir), else
``<tmp>/fcgi-gateway-bench-data``. Each app creates its database the first time it is
imported, under an exclusive lock, so backends starting at the same moment do not race.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator

ROWS = 50  # rows in the table; each page shows the latest 10


def data_dir() -> str:
    path = os.environ.get("FCGI_BENCH_DATA") or os.path.join(tempfile.gettempdir(), "fcgi-gateway-bench-data")
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def creation_lock(name: str) -> Iterator[None]:
    with open(os.path.join(data_dir(), f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def posts() -> list[tuple[str, str]]:
    """(title, body) of every row."""
    return [
        (f"Post number {i}", f"Body of post {i}. " + "Lorem ipsum dolor sit amet. " * 8) for i in range(ROWS)
    ]
