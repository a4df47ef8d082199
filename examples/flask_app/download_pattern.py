"""Deterministic byte pattern served by the examples' ``GET /download?size=N`` routes.

This module is shared by the example apps: ``examples/flask_app/download_pattern.py`` and
``examples/django_site/notes/download_pattern.py`` are byte-for-byte identical copies (each
example stays self-contained), and it has no dependencies, so tests can load it by file path.

The pattern
-----------
The byte at absolute offset ``i`` of a download is ``i % 251``::

    b"\\x00\\x01\\x02 ... \\xfa\\x00\\x01 ..."

i.e. ``bytes(range(251))`` repeated and truncated to ``size`` bytes. 251 is prime and does not
divide the 64 KiB chunk size, so a chunk that is lost, duplicated, reordered or truncated
changes the bytes at the following offsets and is detected by comparing content (or
:func:`expected_sha256`), not only the length.

The response body is produced lazily by :func:`iter_pattern` in chunks of
:data:`CHUNK_SIZE` (64 KiB) bytes, the last one possibly shorter; ``size=0`` yields nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

PERIOD = 251
CHUNK_SIZE = 64 * 1024
MAX_SIZE = 1 << 30  # the example routes refuse larger downloads (1 GiB)

_BLOCK = bytes(range(PERIOD))
# A window long enough that any CHUNK_SIZE slice can start at any phase of the period.
_WINDOW = _BLOCK * (CHUNK_SIZE // PERIOD + 2)


def pattern_bytes(offset: int, length: int) -> bytes:
    """Return ``length`` bytes of the pattern starting at absolute ``offset``."""
    if offset < 0 or length < 0:
        raise ValueError("offset and length must be non-negative")
    start = offset % PERIOD
    if start + length <= len(_WINDOW):
        return _WINDOW[start : start + length]
    return (_BLOCK * ((start + length) // PERIOD + 1))[start : start + length]


def iter_pattern(size: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the first ``size`` bytes of the pattern in ``chunk_size`` pieces."""
    if size < 0:
        raise ValueError("size must be non-negative")
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    offset = 0
    while offset < size:
        n = min(chunk_size, size - offset)
        yield pattern_bytes(offset, n)
        offset += n


def expected_sha256(size: int) -> str:
    """Hex SHA-256 of a ``size``-byte download, for checking a response without storing it."""
    digest = hashlib.sha256()
    for chunk in iter_pattern(size):
        digest.update(chunk)
    return digest.hexdigest()


def parse_size(raw: str | None) -> int:
    """Parse the ``size`` query parameter; raise ``ValueError`` if missing, negative or too big."""
    if raw is None or raw.strip() == "":
        raise ValueError("missing 'size' query parameter")
    size = int(raw.strip(), 10)
    if size < 0:
        raise ValueError("'size' must be >= 0")
    if size > MAX_SIZE:
        raise ValueError(f"'size' must be <= {MAX_SIZE}")
    return size
