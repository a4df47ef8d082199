"""A WSGI app whose workers die 0.2 s after loading it (tests/process: crash loop).

Only with PROC_CRASHLOOP=1 in the environment, so importing it anywhere else is harmless.
"""

from __future__ import annotations

import os
import threading

if os.environ.get("PROC_CRASHLOOP") == "1":
    threading.Timer(0.2, os._exit, (1,)).start()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"about to die"]
