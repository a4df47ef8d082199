"""``--workers auto`` (issue 17, part 5): gateway/cpus.py on fake cgroup trees, and the
command line under a real CPU affinity (a subprocess pinned with sched_setaffinity, as
``taskset -c 0`` does): ``check`` prints the inputs. The master booting that many workers
is in tests/process/test_proc_workers_auto.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cpus import CpuBudget, Quota, cgroup_quota, cpu_budget
from tests.conftest import APPS_DIR


def fake_cgroup(
    tmp_path: Path, proc_cgroup: str, mounts: list[tuple[str, str, str, str]], files: dict[str, str]
) -> tuple[str, str]:
    """/proc/self/cgroup and /proc/self/mountinfo stand-ins; ``mounts`` are (fstype, root,
    mount point under tmp_path, super options); ``files`` are written under tmp_path."""
    lines = []
    for i, (fstype, root, point, options) in enumerate(mounts):
        lines.append(
            f"{30 + i} 23 0:{40 + i} {root} {tmp_path / point} rw,relatime - {fstype} {fstype} {options}"
        )
    lines.insert(0, "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw")
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text + "\n")
    (tmp_path / "cgroup").write_text(proc_cgroup)
    (tmp_path / "mountinfo").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "cgroup"), str(tmp_path / "mountinfo")


def test_v2_quota_of_the_cgroup_and_its_ancestors(tmp_path):
    paths = fake_cgroup(
        tmp_path,
        "0::/system.slice/app.service\n",
        [("cgroup2", "/", "sys/fs/cgroup", "rw,nsdelegate")],
        {
            "sys/fs/cgroup/cpu.max": "max 100000",
            "sys/fs/cgroup/system.slice/cpu.max": "250000 100000",  # the slice: 2.5 CPUs
            "sys/fs/cgroup/system.slice/app.service/cpu.max": "max 100000",
        },
    )
    quota = cgroup_quota(*paths)
    assert quota is not None and quota.cpus == 2.5
    assert quota.source == str(tmp_path / "sys/fs/cgroup/system.slice/cpu.max")
    # the smallest wins
    (tmp_path / "sys/fs/cgroup/system.slice/app.service/cpu.max").write_text("50000 100000\n")
    assert cgroup_quota(*paths) == Quota(
        50000, 100000, str(tmp_path / "sys/fs/cgroup/system.slice/app.service/cpu.max")
    )


def test_v2_inside_a_container_reads_the_mount_root(tmp_path):
    # without a cgroup namespace the path names the container's cgroup, which is the
    # mount's root: its files are at the mount point itself
    paths = fake_cgroup(
        tmp_path,
        "0::/docker/abc\n",
        [("cgroup2", "/docker/abc", "sys/fs/cgroup", "rw")],
        {"sys/fs/cgroup/cpu.max": "100000 100000"},
    )
    assert cgroup_quota(*paths) == Quota(100000, 100000, str(tmp_path / "sys/fs/cgroup/cpu.max"))


def test_v2_without_a_limit(tmp_path):
    paths = fake_cgroup(
        tmp_path, "0::/\n", [("cgroup2", "/", "sys/fs/cgroup", "rw")], {"sys/fs/cgroup/cpu.max": "max 100000"}
    )
    assert cgroup_quota(*paths) is None


def test_v1_cfs_quota(tmp_path):
    mounts = [
        ("cgroup", "/", "sys/fs/cgroup/cpu,cpuacct", "rw,cpu,cpuacct"),
        ("cgroup", "/", "sys/fs/cgroup/memory", "rw,memory"),
        ("cgroup2", "/", "sys/fs/cgroup/unified", "rw"),  # hybrid: no controllers on v2
    ]
    base = "sys/fs/cgroup/cpu,cpuacct"
    paths = fake_cgroup(
        tmp_path,
        "5:memory:/kubepods/pod1\n3:cpu,cpuacct:/kubepods/pod1\n0::/kubepods/pod1\n",
        mounts,
        {
            f"{base}/cpu.cfs_quota_us": "-1",
            f"{base}/cpu.cfs_period_us": "100000",
            f"{base}/kubepods/pod1/cpu.cfs_quota_us": "50000",
            f"{base}/kubepods/pod1/cpu.cfs_period_us": "100000",
        },
    )
    quota = cgroup_quota(*paths)
    assert quota is not None and quota.cpus == 0.5
    (tmp_path / base / "kubepods/pod1/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(*paths) is None


def test_missing_or_garbled_files_mean_no_quota(tmp_path):
    assert cgroup_quota(str(tmp_path / "nope"), str(tmp_path / "nope")) is None
    paths = fake_cgroup(
        tmp_path,
        "0::/a\n",
        [("cgroup2", "/", "cg", "rw")],
        {"cg/a/cpu.max": "lots 100000", "cg/cpu.max": "1 0"},
    )
    assert cgroup_quota(*paths) is None


@pytest.mark.parametrize(
    ("affinity", "quota", "usable"),
    [(8, None, 8), (8, 2.5, 3), (2, 4.0, 2), (16, 0.1, 1), (1, None, 1), (4, 1.0, 1)],
)
def test_usable_cpus_and_the_formula(affinity, quota, usable):
    budget = CpuBudget(affinity, Quota(int(quota * 100000), 100000, "cpu.max") if quota else None)
    assert budget.usable == usable
    assert budget.auto_workers == usable  # one worker per usable CPU (README, docs/deployment.md)


def test_the_real_process_budget_is_its_affinity_at_most():
    budget = cpu_budget()
    assert 1 <= budget.usable <= len(os.sched_getaffinity(0))


# -- the command line under a real affinity ---------------------------------------------------


def pinned(cpus: set[int]):
    return lambda: os.sched_setaffinity(0, cpus)


def env(**extra: str) -> dict[str, str]:
    out = {
        k: v for k, v in os.environ.items() if not k.startswith("FCGI_GATEWAY_") and k != "WEB_CONCURRENCY"
    }
    out.update(extra)
    return out


def check_rows(*args: str, cpus: set[int], **extra: str) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "proc_apps:app", *args],
        cwd=APPS_DIR, env=env(**extra), capture_output=True, text=True, timeout=60, preexec_fn=pinned(cpus),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {
        k.strip(): v.strip()
        for k, sep, v in (line.partition(":") for line in proc.stdout.splitlines())
        if sep
    }


def test_workers_auto_under_an_affinity_of_one_cpu():
    first = min(os.sched_getaffinity(0))
    rows = check_rows("--workers", "auto", cpus={first})
    assert rows["worker"].startswith("sync (auto), 1 process (auto)"), rows["worker"]
    quota = cgroup_quota()
    assert rows["cpus"].startswith(
        f"affinity 1, cgroup quota {quota.describe() if quota else 'none'} -> 1 usable"
    )
    assert rows["cpus"].endswith("--workers auto = 1")


def test_web_concurrency_sets_the_count_below_the_options_and_the_file(tmp_path):
    first = {min(os.sched_getaffinity(0))}
    assert check_rows(cpus=first, WEB_CONCURRENCY="3")["worker"].startswith(
        "sync (auto), 3 processes (WEB_CONCURRENCY)"
    )
    rows = check_rows(cpus=first, WEB_CONCURRENCY="auto")
    assert rows["worker"].startswith("sync (auto), 1 process (auto from WEB_CONCURRENCY)")
    cfg = tmp_path / "gw.toml"
    cfg.write_text("workers = 4\n")
    assert check_rows("--config", str(cfg), cpus=first, WEB_CONCURRENCY="3")["worker"].startswith(
        "sync (auto), 4 processes,"
    )  # the file beats the platform's variable
    rows = check_rows("--config", str(cfg), cpus=first, WEB_CONCURRENCY="3", FCGI_GATEWAY_WORKERS="5")
    assert rows["worker"].startswith("sync (auto), 5 processes,")
    assert check_rows("-w", "2", cpus=first, FCGI_GATEWAY_WORKERS="5")["worker"].startswith(
        "sync (auto), 2 processes,"
    )


def test_a_bad_web_concurrency_exits_2_naming_it():
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "proc_apps:app"],
        cwd=APPS_DIR, env=env(WEB_CONCURRENCY="lots"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "WEB_CONCURRENCY='lots'" in proc.stderr
