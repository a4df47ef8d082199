"""``--workers auto`` with real processes (issue 17, part 5): a master pinned to N CPUs
(``sched_setaffinity`` in the child before exec, as ``taskset`` does) boots one worker per
usable CPU, and ``--workers auto`` beats a ``WEB_CONCURRENCY`` set by the platform."""

from __future__ import annotations

import os
import sys

import pytest

from gateway.cpus import cgroup_quota
from tests.conftest import APPS_DIR
from tests.process._load import children, wait_until


@pytest.mark.parametrize("count", [1, 2])
def test_the_master_boots_as_many_workers_as_usable_cpus(spawn, sock_dir, count):
    available = sorted(os.sched_getaffinity(0))
    if len(available) < count:
        pytest.skip(f"needs {count} CPUs")
    quota = cgroup_quota()
    expected = min(count, max(1, -(-quota.quota_us // quota.period_us))) if quota else count
    address = f"unix:{sock_dir}/auto.sock"
    cmd = [sys.executable, "-m", "gateway", "--bind", address, "--workers", "auto", "proc_apps:app"]
    gw = spawn(
        cmd,
        cwd=APPS_DIR,
        env={"WEB_CONCURRENCY": "7"},
        preexec_fn=lambda: os.sched_setaffinity(0, set(available[:count])),
    )
    assert wait_until(lambda: f"{expected} worker(s) ready" in gw.log_text(), timeout=20), gw.log_text()
    assert len(children(gw.pid)) == expected
