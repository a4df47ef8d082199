"""The first request after idle with ``--pm ondemand``, with and without ``--preload``.

For each variant, starts fcgi-gateway on a unix socket in a temporary directory with
``--pm ondemand --process-idle-timeout 1`` and the Django example (WSGI, SQLite in the
temporary directory), then, round after round: waits until the pool has no worker, sends
one request with the project's FastCGI client and times it to the last byte (the fork, the
app's import without ``--preload``, the request), then a second one on the warm worker.
Prints the median, minimum and maximum per variant, and a ``--pm static`` pool's warm
request for comparison.

    .venv/bin/python bench/ondemand.py [--rounds 10] [--path /api/notes]

Numbers on a shared 2-core machine are noisy; compare variants of one run.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.client import FastCGIClient  # noqa: E402

SITE = ROOT / "examples" / "django_site"
APP = "mysite.wsgi:application"


def has_workers(pid: int) -> bool:
    """Whether the master ``pid`` has a child process now (``pgrep -P``)."""
    return subprocess.run(["pgrep", "-P", str(pid)], stdout=subprocess.DEVNULL, check=False).returncode == 0


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def timed(client: FastCGIClient, path: str) -> float:
    start = time.perf_counter()
    response = client.request("GET", path)
    elapsed = time.perf_counter() - start
    if response.status != 200:
        raise SystemExit(f"{path}: status {response.status}")
    return elapsed * 1000


def run_variant(tmp: Path, name: str, args: list[str], rounds: int, path: str) -> dict[str, list[float]]:
    sock = tmp / f"{name}.sock"
    env = {**os.environ, "FCGI_EXAMPLE_DJANGO_DB": str(tmp / "bench.sqlite3"), "PYTHONPATH": str(SITE)}
    cmd = [sys.executable, "-m", "gateway", "--bind", f"unix:{sock}", "--chdir", str(SITE), *args, APP]
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    out: dict[str, list[float]] = {"first": [], "warm": []}
    try:
        wait(lambda: sock.exists(), 30, "the socket")
        client = FastCGIClient(f"unix:{sock}", timeout=60)
        timed(client, path)  # the probe worker (ondemand) or the pool: migrations, caches on disk
        for _ in range(rounds):
            if "ondemand" in args:
                wait(lambda: not has_workers(proc.pid), 30, "an empty pool")
            out["first"].append(timed(client, path))
            out["warm"].append(timed(client, path))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--path", default="/api/notes")
    opts = parser.parse_args()
    ondemand = ["--pm", "ondemand", "--process-idle-timeout", "1", "--max-workers", "2"]
    variants = {
        "ondemand": ondemand,
        "ondemand --preload": [*ondemand, "--preload"],
        "ondemand --preload, no isolation checkers": [*ondemand, "--preload", "--isolation-checkers", "none"],
        "static -w 1": ["-w", "1"],
    }
    print(f"{opts.path} on the Django example, {opts.rounds} rounds, ms to the last byte")
    print(f"{'variant':<42} {'request':<8} {'median':>8} {'min':>8} {'max':>8}")
    with tempfile.TemporaryDirectory(prefix="fcgw-ondemand-") as tmp:
        for name, args in variants.items():
            result = run_variant(Path(tmp), name.replace(" ", "_"), args, opts.rounds, opts.path)
            kinds = ("first", "warm") if "ondemand" in args else ("warm",)
            for kind in kinds:
                v = result[kind]
                print(f"{name:<42} {kind:<8} {statistics.median(v):8.1f} {min(v):8.1f} {max(v):8.1f}")


if __name__ == "__main__":
    main()
