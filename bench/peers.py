"""Starts a peer FastCGI server that has no command line of its own.

    python peers.py flup SOCKET APP_DIR MODULE:ATTR          flup's threaded WSGIServer
    python peers.py fcgisgi-wsgi SOCKET APP_DIR MODULE:ATTR  fcgisgi, WSGI adapter
    python peers.py fcgisgi-asgi SOCKET APP_DIR MODULE:ATTR  fcgisgi, ASGI adapter

Each serves the application on the unix socket SOCKET, in one process, with the server's
default settings (as its documentation's first example does).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys


def load(app_dir: str, spec: str):
    sys.path.insert(0, app_dir)
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def main(argv: list[str]) -> None:
    kind, sock, app_dir, spec = argv
    app = load(app_dir, spec)
    if os.path.exists(sock):
        os.unlink(sock)
    if kind == "flup":
        from flup.server.fcgi import WSGIServer

        WSGIServer(app, bindAddress=sock).run()
    elif kind in ("fcgisgi-wsgi", "fcgisgi-asgi"):
        import fcgisgi

        run = fcgisgi.run_wsgi_server if kind == "fcgisgi-wsgi" else fcgisgi.run_asgi_server
        asyncio.run(run(app, bind_address=sock))
    else:
        raise SystemExit(f"unknown peer {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
