"""A WSGI app with the classic mistake of yielding ``str``, whose ``close()`` (or a
generator's ``finally``) then calls the ``write()`` that ``start_response`` returned: the
server has answered 500 and ended the request by then, so that write must go nowhere.
``/ok`` answers normally (the worker must keep serving on the same connection)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class StrBody:
    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write

    def __iter__(self) -> Iterator[str]:
        yield "text, not bytes"

    def close(self) -> None:
        self.write(b"LATE BYTES AFTER THE END")


def generator(write: Callable[[bytes], None]) -> Iterator[Any]:
    try:
        yield "text, not bytes"
    finally:
        write(b"LATE BYTES AFTER THE END")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    path = environ.get("PATH_INFO", "")
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    if path == "/close":
        return StrBody(write)
    if path == "/generator":
        return generator(write)
    return [b"ok " + path.encode()]
