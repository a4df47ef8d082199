"""What the run needs from the machine: installing nginx, wrk and the bench venv (unless
``--no-install``), probing which servers an interpreter has, the backends' environment,
and the machine description that goes into the JSON's ``meta``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from . import REPO
from .nginx import find_nginx

DEFAULT_VENV = os.environ.get("FCGI_BENCH_VENV", "/tmp/fcgi-gateway-bench-venv")
#: What the bench venv holds besides this project (``pip install -e REPO``). httptools is
#: what ``uvicorn[standard]`` adds for HTTP parsing: uvicorn as people deploy it.
VENV_PACKAGES = (
    "uwsgi",
    "flup",
    "fcgisgi",
    "gunicorn",
    "uvicorn",
    "httptools",
    "uvloop",
    "flask",
    "django",
    "matplotlib",
)


def probe(python: str, names: list[str], project: Path) -> dict[str, bool]:
    """Which modules (or ``bin:NAME`` executables beside python) the interpreter has."""
    mods = [n for n in names if not n.startswith("bin:")]
    code = (
        "import importlib.util, json, sys\n"
        "def has(m):\n    try:\n        return importlib.util.find_spec(m) is not None\n"
        "    except Exception:\n        return False\n"
        "print(json.dumps({m: has(m) for m in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [python, "-c", code, *mods], capture_output=True, text=True, env=backend_env(project)
    )
    found = json.loads(out.stdout) if out.returncode == 0 else dict.fromkeys(mods, False)
    bindir = os.path.dirname(python)
    for n in names:
        if n.startswith("bin:"):
            found[n] = os.access(os.path.join(bindir, n[4:]), os.X_OK)
    return found


def backend_env(project: Path, data_dir: Path | None = None) -> dict[str, str]:
    """The environment of every backend: ``project`` first on the path (the gateway under
    test is that checkout's code), no FCGI_GATEWAY_* from outside, the database directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_GATEWAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project), env.get("PYTHONPATH")]))
    if data_dir is not None:
        env["FCGI_BENCH_DATA"] = str(data_dir)
    return env


def compile_sources(python: str, project: Path, apps: Path) -> None:
    """Byte-compile the gateway and the bench apps before any server starts, as an install
    would: with PYTHONDONTWRITEBYTECODE set (or stale .pyc files), every worker would
    compile them again at import, and the compiler's garbage would show in its idle RSS
    (about 1 MiB, varying with which files changed). Peers' packages in the venv are
    compiled by pip."""
    subprocess.run(
        [python, "-m", "compileall", "-q", str(project / "gateway"), str(apps)],
        check=False,
        stdout=subprocess.DEVNULL,
    )


def _run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def ensure_system_tools(need_wrk: bool, need_valgrind: bool = False) -> None:
    """nginx, wrk and valgrind (for --instructions) from apt when missing."""
    missing = [
        p
        for p, ok in (
            ("nginx", find_nginx()),
            ("wrk", shutil.which("wrk") or not need_wrk),
            ("valgrind", shutil.which("valgrind") or not need_valgrind),
        )
        if not ok
    ]
    if not missing:
        return
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]
    _run([*prefix, "apt-get", "update", "-qq"])
    _run([*prefix, *env_prefix, "apt-get", "install", "-y", "-qq", *missing])


def ensure_venv(venv: Path) -> str:
    """The bench venv with the peers and this project (editable); reinstalled when
    pyproject.toml, setup.py, the C speedup or this list changed, or the speedup is unbuilt."""
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)])
    want = " ".join(VENV_PACKAGES) + "\n" + str(REPO) + "\n"
    stamp = venv / ".fcgi-bench-installed"
    current = stamp.read_text() if stamp.exists() else ""
    # The editable install also compiles the C speedups in place (setup.py): redo it when a
    # checkout lacks a built module, or setup.py / a C source changed.
    sources = [*(REPO / "gateway").rglob("*.c"), *(REPO / "gateway").rglob("*.h")]
    built = all(list(c.parent.glob(c.stem + ".*.so")) for c in sources if c.suffix == ".c")
    inputs = [REPO / "pyproject.toml", REPO / "setup.py", *sources]
    newest = max(p.stat().st_mtime for p in inputs if p.exists())
    if current != want or not built or newest > stamp.stat().st_mtime:
        if not shutil.which("gcc") and not shutil.which("cc"):  # uWSGI is built from source
            prefix = [] if os.geteuid() == 0 else ["sudo"]
            _run([*prefix, "apt-get", "update", "-qq"])
            _run([*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "gcc"])
        _run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
        _run([str(python), "-m", "pip", "install", "-q", *VENV_PACKAGES, "-e", str(REPO)])
        stamp.write_text(want)
    return str(python)


def machine_info(python: str, nginx: str | None, client: str, project: Path) -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else ""

    def out(cmd: list[str], any_status: bool = False) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=backend_env(project))
        except (OSError, subprocess.TimeoutExpired):
            return ""
        text = (done.stdout + done.stderr).strip()  # nginx -v writes to stderr
        return text.splitlines()[0] if text and (done.returncode == 0 or any_status) else ""

    versions = subprocess.run(
        [
            python,
            "-c",
            "import sys, importlib.metadata as m\nfor n in sys.argv[1:]:\n"
            "    try: print(n, m.version(n))\n    except Exception: pass",
            "fcgi-gateway",
            *VENV_PACKAGES,
        ],
        capture_output=True,
        text=True,
        env=backend_env(project),
    ).stdout.split()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": out([python, "-c", "import sys; print(sys.version.split()[0])"]),
        "nginx": out([nginx, "-v"]) if nginx else "",
        "client": " ".join(out(["wrk", "-v"], any_status=True).split()[:2])
        if client == "wrk"
        else "python client (no wrk)",
        "project": str(project),
        "git": out(["git", "-C", str(project), "describe", "--always", "--dirty"]),
        "packages": dict(zip(versions[::2], versions[1::2], strict=False)),
    }
