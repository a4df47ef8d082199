"""The container recipe: the ``Dockerfile`` at the root, ``examples/django_site/deploy/Dockerfile``
built on it, ``examples/flask_app/deploy/nginx-container.conf`` and the commands of
docs/deployment.md, "Containers", checked without a container engine (CI has none, so the
image itself is never built; hadolint lints both Dockerfiles in scripts/check-package).

- The Dockerfile keeps its properties: several stages, a wheel built with ``python -m build``
  in one, a slim runtime stage installing it, a numeric non-root ``USER`` that is the user it
  creates, ``STOPSIGNAL SIGTERM``, a ``HEALTHCHECK`` running ``fcgi-gateway ping`` on the
  socket the image binds (``FCGI_GATEWAY_BIND``) at the path it answers itself
  (``FCGI_GATEWAY_PING_PATH``), the socket directory a ``VOLUME`` owned by that user and
  group, ``ENTRYPOINT ["fcgi-gateway"]``. The Django one keeps the same user and sets a CMD.
- ``.dockerignore`` keeps every file the Dockerfiles copy or mount.
- The doc's commands agree with the files: the tmpfs volume's uid/gid/mode, where each
  container mounts it, the nginx config mounted, a stop timeout above the graceful timeout,
  the image names.
- The image's command on loopback: a wheel built from what the build stage copies,
  installed with the example's requirements into a fresh venv (``--version`` and ``check``
  from there, importing the installed copy); then ``ENTRYPOINT`` + ``CMD`` with the image's
  ``ENV`` and ``WORKDIR`` (a copy of the app), behind nginx running nginx-container.conf as
  written. The ``HEALTHCHECK`` command passes, requests (a database write included) work,
  ``STOPSIGNAL`` makes the server exit 0 and the health check fail. As root, the server runs
  as the image's uid:gid, and nginx's uid/gid 101 reaches the socket while another user
  cannot.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest

import gateway
from gateway.config import Config
from tests.conftest import REPO_ROOT
from tests.deploy._dockerfile import Image, Stage, image, parse
from tests.deploy._procs import base_env, request, start_nginx
from tests.deploy._render import DJANGO_DEPLOY, FLASK_DEPLOY, Rewriter, doc_recipe, listen_on
from tests.integration.nginx import free_port

DOCKERFILE = REPO_ROOT / "Dockerfile"
DJANGO_DOCKERFILE = DJANGO_DEPLOY / "Dockerfile"
NGINX_CONTAINER = FLASK_DEPLOY / "nginx-container.conf"
STAGES = parse(DOCKERFILE)
SETPRIV = shutil.which("setpriv")


def stage(name: str) -> Stage:
    found = [s for s in STAGES if s.name == name]
    assert found, f"the Dockerfile has no stage named {name!r}"
    return found[0]


def ids(img: Image) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+):(\d+)", img.user or "")
    assert m, f"USER {img.user!r}: numeric uid:gid (Kubernetes' runAsNonRoot can only check a number)"
    return int(m.group(1)), int(m.group(2))


def socket_path(img: Image) -> str:
    bind = img.env.get("FCGI_GATEWAY_BIND", "")
    assert bind.startswith("unix:/"), f"FCGI_GATEWAY_BIND={bind!r}: the image listens on a unix socket"
    return bind.removeprefix("unix:")


def sources(stages: list[Stage]) -> list[str]:
    """Paths of the build context that COPY instructions and RUN bind mounts use."""
    out: list[str] = []
    for s in stages:
        for ins in s.all("COPY"):
            if "from" not in ins.flags:
                out += ins.args.split()[:-1]
        for ins in s.all("RUN"):
            mount = dict(kv.split("=", 1) for kv in ins.flags.get("mount", "").split(",") if "=" in kv)
            if mount.get("type") == "bind" and "from" not in mount:
                out.append(mount["source"])
    return out


# -- the Dockerfile -------------------------------------------------------------------


def test_multi_stage_wheel_into_slim_runtime() -> None:
    assert len(STAGES) >= 2, "multi-stage: a build stage and a runtime stage"
    build = [s for s in STAGES if any("python -m build" in r for r in s.runs())]
    assert len(build) == 1 and build[0].name, "one named stage builds the wheel with `python -m build`"
    runtime = stage("runtime")
    assert re.search(r"-slim\b", runtime.base), f"runtime FROM {runtime.base}: a slim image"
    installs = [
        r for ins in runtime.all("RUN") if f"from={build[0].name}" in ins.flags.get("mount", "")
        for r in [ins.args] if re.search(r"pip install .*\.whl", r)
    ]  # fmt: skip
    assert installs, "the runtime stage installs the wheel of the build stage"
    assert not any("apt-get" in r or "gcc" in r for r in runtime.runs()), "no compiler in the runtime"


@pytest.mark.parametrize("name", ["runtime", None], ids=["runtime", "last-stage"])
def test_image_config(name: str | None) -> None:
    img = image(STAGES, name)
    uid, gid = ids(img)
    assert uid != 0, "the server must not run as root"
    created = " ".join(stage("runtime").runs())
    assert re.search(rf"useradd .*--uid {uid}\b", created), "USER is the user the image creates"
    assert re.search(rf"groupadd .*--gid {gid}\b", created)
    assert img.stopsignal == "SIGTERM"
    assert img.entrypoint == ["fcgi-gateway"]
    sock = socket_path(img)
    sock_dir = os.path.dirname(sock)
    assert sock_dir in img.volumes, f"VOLUME {sock_dir}: the socket directory, shared with nginx"
    assert re.search(rf"install -d -o \S+ -g \S+ -m 0750 {re.escape(sock_dir)}\b", created)
    assert img.healthcheck is not None
    cmd = img.healthcheck_cmd()
    assert cmd[:3] == ["fcgi-gateway", "ping", f"unix:{sock}"], cmd
    path = cmd[cmd.index("--path") + 1] if "--path" in cmd else "/ping"
    assert img.env.get("FCGI_GATEWAY_PING_PATH") == path, "the gateway answers the probe itself"
    ping_timeout = float(cmd[cmd.index("--timeout") + 1].rstrip("s"))
    assert ping_timeout < float(img.healthcheck.flags["timeout"].rstrip("s"))


def test_django_dockerfile_builds_on_the_runtime() -> None:
    stages = parse(DJANGO_DOCKERFILE)
    assert stages[-1].base == "${GATEWAY_IMAGE}"
    img = image(stages)
    assert img.user == image(STAGES, "runtime").user, "back to the server's user after installing"
    assert img.cmd and not img.entrypoint, "the base's ENTRYPOINT (fcgi-gateway) runs the CMD"
    for src in sources(stages):
        assert (DJANGO_DEPLOY.parent / src).exists(), src


def ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch(p, pattern[3:]) for p in parts):
                return True
        elif any(fnmatch(p, pattern) for p in prefixes):
            return True
    return False


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, DJANGO_DOCKERFILE], ids=["root", "django"])
def test_dockerignore_keeps_the_sources(dockerfile: Path) -> None:
    context = REPO_ROOT if dockerfile == DOCKERFILE else DJANGO_DEPLOY.parent
    ignore = context / ".dockerignore"
    patterns = [x.strip() for x in ignore.read_text().splitlines() if x.strip() and not x.startswith("#")]
    for src in sources(parse(dockerfile)):
        src = src.rstrip("/") or "."
        assert src == "." or not ignored(src, patterns), f"{src} is excluded by {ignore}"
    if context == REPO_ROOT:  # an in-place build of the C speedup stays out of the image
        assert ignored("gateway/protocol/_pairs.cpython-311-x86_64-linux-gnu.so", patterns)


# -- docs/deployment.md ---------------------------------------------------------------


def test_doc_commands_agree_with_the_files() -> None:
    build, run = doc_recipe("container-build"), doc_recipe("container-run")
    img = image(STAGES)
    uid, gid = ids(img)
    sock = socket_path(img)
    sock_dir = os.path.dirname(sock)
    assert re.search(r"docker build -t (\S+) \.\s", build)
    base = re.search(r"docker build --target runtime -t (\S+) \.", build)
    assert base, "the runtime image's build command"
    assert f"GATEWAY_IMAGE={base.group(1)}\n" in DJANGO_DOCKERFILE.read_text()
    assert f"o=uid={uid},gid={gid},mode=0750" in run, "the tmpfs volume belongs to the image's user and group"
    volume = re.search(r"docker volume create .* (\S+)\n", run.replace("\\\n", " "))
    assert volume
    mounts = re.findall(rf"-v {re.escape(volume.group(1))}:(\S+)", run)
    assert len(mounts) == 2 and {m.removesuffix(":ro") for m in mounts} == {sock_dir}, mounts
    assert "examples/flask_app/deploy/nginx-container.conf:/etc/nginx/conf.d/default.conf" in run
    assert f"server unix:{sock};" in NGINX_CONTAINER.read_text()
    stop = re.search(r"--stop-timeout (\d+)", run)
    graceful = next(f.default for f in dataclasses.fields(Config) if f.name == "graceful_timeout_s")
    assert stop and int(stop.group(1)) > graceful, "docker stop must wait longer than the drain"


# -- the image's command, on loopback ---------------------------------------------------


def clean_env() -> dict[str, str]:
    """No PYTHONPATH (conftest's points at the checkout): the venv's copy is what runs."""
    return base_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""})


@pytest.fixture(scope="module")
def venv() -> Iterator[Path]:
    """The runtime stage's /opt/venv: a wheel built from what the build stage copies, and the
    example's requirements, in a fresh venv."""
    root = Path(tempfile.mkdtemp(prefix="fcgw-image-", dir="/tmp"))
    root.chmod(0o755)  # the image's user reads it (as root)
    try:
        context = root / "context"
        for src in sources([s for s in STAGES if any("python -m build" in r for r in s.runs())]):
            if (REPO_ROOT / src).is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")
                shutil.copytree(REPO_ROOT / src, context / src, ignore=ignore)
            else:
                (context / src).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO_ROOT / src, context / src)
        run = dict(env=clean_env(), capture_output=True, text=True, timeout=300)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
             str(root / "dist"), str(context)], **run,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        wheels = list((root / "dist").glob("*.whl"))
        assert len(wheels) == 1, wheels
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
        requirements = REPO_ROOT / "examples" / "flask_app" / "requirements.txt"
        pip = str(root / "venv" / "bin" / "pip")
        done = subprocess.run([pip, "install", "-q", str(wheels[0]), "-r", str(requirements)], **run)
        assert done.returncode == 0, done.stdout + done.stderr
        yield root / "venv"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_wheel_in_a_fresh_venv(venv: Path, tmp_path: Path) -> None:
    env = clean_env()
    code = "import gateway, importlib.util as u; print(gateway.__file__, gateway.__version__, "
    code += "u.find_spec('gateway.protocol._pairs') is not None)"
    out = subprocess.run([venv / "bin" / "python", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()  # fmt: skip
    assert out[0].startswith(str(venv)), f"imported {out[0]}, not the installed wheel"
    assert out[1] == gateway.__version__
    if importlib.util.find_spec("gateway.protocol._pairs") is not None:  # a compiler is here
        assert out[2] == "True", "the wheel has the C speedup"
    run = dict(env=env, capture_output=True, text=True, timeout=60)
    done = subprocess.run([venv / "bin" / "fcgi-gateway", "--version"], **run)
    assert done.returncode == 0 and done.stdout.strip() == f"fcgi-gateway, version {gateway.__version__}"
    (tmp_path / "hello.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'hello']\n"
    )
    check = [venv / "bin" / "fcgi-gateway", "check", "--bind", f"unix:{tmp_path}/s.sock", "hello:app"]
    done = subprocess.run(check, cwd=tmp_path, **run)
    assert done.returncode == 0, done.stdout + done.stderr


def health(argv: list[str], env: dict[str, str], as_ids: tuple[int, int] | None = None) -> int:
    prefix = [SETPRIV, f"--reuid={as_ids[0]}", f"--regid={as_ids[1]}", "--clear-groups"] if as_ids else []
    return subprocess.run([*prefix, *argv], env=env, capture_output=True, timeout=30).returncode


def test_image_command_behind_nginx(venv: Path, workdir: Path, launch) -> None:
    img = image(STAGES)
    uid, gid = ids(img)
    as_root = os.geteuid() == 0 and SETPRIV is not None and health([str(venv / "bin" / "python"), "-c", ""],
                                                                    clean_env(), (uid, gid)) == 0  # fmt: skip
    app_src = [s for s in sources(STAGES[-1:]) if not s.endswith(".txt")]
    assert len(app_src) == 1, app_src
    app = workdir / "app"
    shutil.copytree(REPO_ROOT / app_src[0], app, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    rewrite = Rewriter.for_dir(workdir).add("/opt/venv", str(venv))
    env = clean_env()
    env.update({k: rewrite(v).replace("$PATH", os.environ["PATH"]) for k, v in img.env.items()})
    program = shutil.which(img.entrypoint[0], path=env["PATH"])
    assert program == str(venv / "bin" / "fcgi-gateway")
    argv = [program, *img.entrypoint[1:], *img.cmd]
    if as_root:  # the directories as the runtime stage makes them, the server as its user
        os.chown(workdir / "run", uid, gid)
        (workdir / "run").chmod(0o750)
        os.chown(workdir / "lib", uid, gid)
        (workdir / "lib").chmod(0o700)
        argv = [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
    print(f"the server runs as {'uid:gid ' + img.user if as_root else 'this user'} (setpriv: {SETPRIV})")
    assert img.workdir == "/app"
    server = launch(argv, "image", env=env, cwd=app)
    probe_cmd = img.healthcheck_cmd()
    probe = [shutil.which(probe_cmd[0], path=env["PATH"]) or "", *map(rewrite, probe_cmd[1:])]
    deadline = time.monotonic() + 30
    while health(probe, env) != 0:
        assert server.proc.poll() is None, f"the server exited:\n{server.log_text()}"
        assert time.monotonic() < deadline, f"HEALTHCHECK never passed:\n{server.log_text()}"
        time.sleep(0.2)

    port = free_port()
    conf = listen_on(rewrite(NGINX_CONTAINER.read_text()), {8080: port})
    nginx = start_nginx(workdir / "nginx", conf, [port])
    try:
        base = f"http://127.0.0.1:{port}"
        r = request("GET", f"{base}/health")
        assert r.status == 200 and r.json()["status"] == "ok", r.body[:300]
        body = json.dumps({"title": "from the image", "body": "written to the data directory"}).encode()
        r = request("POST", f"{base}/api/notes", body=body, headers={"Content-Type": "application/json"})
        assert r.status == 201, r.body[:300]
        assert request("GET", f"{base}/ping").status == 200  # the gateway's own page, through nginx
    finally:
        nginx.stop()
    if as_root:
        assert (workdir / "lib" / "flask.sqlite3").stat().st_uid == uid
        assert health(probe, env, (101, 101)) == 0, "nginx's uid/gid 101 reaches the socket"
        assert health(probe, env, (65534, 65534)) != 0, "another user cannot"

    os.kill(server.pid, signal.Signals[img.stopsignal or "SIGTERM"])
    assert server.wait(40) == 0, server.log_text()
    assert health(probe, env) != 0
