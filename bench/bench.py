#!/usr/bin/env python3
"""fcgi-gateway's benchmark: the gateway and its peers behind one nginx, measured with wrk.

    bench/run                        # set up what is missing, then the full run (~13 min)
    bench/run --tiny --no-install    # a smoke run with the current interpreter (the test)
    bench/run --help

Every backend serves the same app on a unix socket; one nginx (one worker, one generated
config) puts each (scenario, backend) pair on its own 127.0.0.1 port: ``fastcgi_pass`` for
the FastCGI servers, ``proxy_pass`` with HTTP/1.1 keepalive for gunicorn and uvicorn.
wrk (or, when wrk is missing, a small Python client) loads one port at a time, in
interleaved rounds (A B C C B A ...), so a machine that drifts during the run moves every
row alike. Results: median req/s over the rounds (and their spread), ratio to uWSGI in
the same scenario, p50/p99 latency, the backend's CPU time per request, non-2xx + socket
errors, and memory from /proc: the RSS of the largest worker process (idle, after the
load, and its growth to the peak) and the sum over all of the backend's processes. The
memory scenarios (100 MiB upload, 100 MiB streamed download) send a few requests to fresh
processes and report the worker's RSS growth. See docs/benchmarks.md.

This file is the entry point only (``bench/run`` executes it); the harness is the
``harness`` package beside it (``harness/__init__.py`` maps its modules). Standard library
only; matplotlib for ``--chart``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.cli import main

if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
