#!/usr/bin/env python3
"""Instructions per request of the sync worker, in process and without timers: a
deterministic measure of the request path (the isolation layer's cost, the codec's).

    python bench/inprocess.py                     # hello, flask, django; layer off and on
    python bench/inprocess.py --apps hello --requests 2000,12000

A real SyncWorker serves the bench apps (``bench/apps``) on a kept connection through a
unix socket, driven from the same process (``tests/worker_rig.py``): no master, no
heartbeat, no nginx, so nothing that runs once a second is counted. Each (app, layer)
pair runs twice under ``valgrind --tool=callgrind`` with N1 and N2 requests; the result
is (instructions2 - instructions1) / (N2 - N1): start-up cancels out. The layer is
``--isolation-checkers none`` ("off") or the default layer, built as the worker builds it
("default"), watching the app's modules only (``FCGI_GATEWAY_ISOLATION_MODULES``), as in
a worker whose ``__main__`` is the gateway's. Needs valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: app -> (import target, the app's modules, the request path)
APPS = {
    "hello": ("hello:wsgi_app", "hello", "/"),
    "flask": ("flask_app:app", "flask_app,benchdata", "/"),
    "django": ("djangosite.wsgi:application", "djangosite,benchdata", "/"),
}


def serve(target: str, path: str, requests: int, layer: str) -> None:
    """The child: ``requests`` requests through a SyncWorker after one warm-up request."""
    sys.path[:0] = [str(ROOT), str(HERE / "apps")]
    from gateway.isolation.setup import build_layer
    from gateway.loading import import_from_string
    from tests.capture import captured_requests
    from tests.worker_rig import request_bytes, worker_rig

    app = import_from_string(target)
    fix = {b"REQUEST_URI": path.encode(), b"DOCUMENT_URI": path.encode(), b"SCRIPT_NAME": path.encode()}
    params = [(k, fix.get(k, b"" if k == b"PATH_INFO" else v)) for k, v in captured_requests()["/keep/1"]]
    data = request_bytes(params, keep=True)
    sock = tempfile.mktemp(prefix="fcgw-ip", suffix=".sock", dir="/tmp")
    with worker_rig(sock, app) as rig:
        worker = rig.worker
        if layer == "default":
            worker.isolation = build_layer("auto", (), {}, "auto", worker="sync")
            worker.isolation.after_load(app)
        rig.client.connect(sock)
        rig.client.sendall(data)
        worker._accept(rig.listener)
        conn = next(iter(worker._conns.values()))
        first = rig.client.recv(1 << 20)
        if b"Status: 200" not in first and b"Status:" in first:
            raise SystemExit(f"{target} {path}: {first[:200]!r}")
        for _ in range(requests):
            rig.client.sendall(data)
            worker._readable(conn)
            rig.client.recv(1 << 20)


def instructions(app: str, layer: str, requests: int) -> int:
    target, modules, path = APPS[app]
    env = dict(os.environ, FCGI_GATEWAY_ISOLATION_MODULES=modules)
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__]
    cmd += ["--child", target, path, str(requests), layer]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stderr
    match = re.search(r"Collected : ([\d,]+)", out)
    if match is None:
        raise SystemExit(f"no count from valgrind for {app}/{layer}:\n{out[-2000:]}")
    return int(match.group(1).replace(",", ""))


def per_request(app: str, layer: str, n1: int, n2: int) -> float:
    return (instructions(app, layer, n2) - instructions(app, layer, n1)) / (n2 - n1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", default="hello,flask,django")
    parser.add_argument("--requests", default="500,3000", help="N1,N2 (default 500,3000)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        target, path, n, layer = args.child
        serve(target, path, int(n), layer)
        return
    n1, n2 = (int(n) for n in args.requests.split(","))
    print("| app | layer off | default layer | cost |\n|---|---:|---:|---:|")
    for app in args.apps.split(","):
        off, on = (per_request(app, layer, n1, n2) for layer in ("off", "default"))
        cost = 100 * (on - off) / off
        print(f"| {app} | {off / 1000:,.1f}k | {on / 1000:,.1f}k | {cost:+.1f}% |", flush=True)


if __name__ == "__main__":
    main()
