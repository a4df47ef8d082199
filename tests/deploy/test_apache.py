"""Apache httpd in front of the gateway: the three recipes of examples/flask_app/deploy/.

Debian's apache2 runs in the foreground with a generated httpd.conf in a temp dir (state,
logs, a free loopback port) that includes the recipe's ``<VirtualHost>`` as written, host
paths rewritten. Apache refuses to serve as root, so its workers run as www-data (or
``$APACHE_RUN_USER``): the gateway's socket gets that group, as the systemd unit's
``Group=www-data`` does. Each test creates a note through Apache and reads it back.

- mod_proxy_fcgi with ProxyPass, and with SetHandler (whose PATH_INFO split the recipe
  drops: /api/notes/<id> must reach the app whole);
- mod_fcgid: Apache spawns ``notes.fcgi``, which execs the gateway with the listening socket
  on fd 0; the gateway must serve on it and exit 0 on mod_fcgid's SIGTERM at shutdown.

Skipped only when apache2 is not installed (``scripts/setup-env`` installs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy._procs import APACHE_MODULES, Proc, apache_available, apache_conf, request, start_apache
from tests.deploy._render import FLASK_DEPLOY, HOST_ROOT, Rewriter
from tests.integration.nginx import free_port
from tests.process._load import children, wait_until

pytestmark = pytest.mark.skipif(not apache_available(), reason="apache2 is not installed (scripts/setup-env)")

APACHE_USER = os.environ.get("APACHE_RUN_USER", "www-data")
APACHE_GROUP = os.environ.get("APACHE_RUN_GROUP", "www-data")
STYLE = (REPO_ROOT / "examples" / "flask_app" / "static" / "style.css").read_bytes()


def needs_root_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: Apache starts as root and serves as www-data")


def vhost(recipe: str, rewrite: Rewriter, port: int) -> str:
    text = rewrite((FLASK_DEPLOY / recipe).read_text())
    assert "<VirtualHost *:8080>" in text
    return text.replace("<VirtualHost *:8080>", f"<VirtualHost *:{port}>")


def notes_round_trip(base: str, title: str) -> None:
    r = request("POST", f"{base}/api/notes", body=json.dumps({"title": title, "body": "via Apache"}).encode(),
                headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status == 201, (r.status, r.body[:500])
    note = r.json()
    assert r.header("Location").endswith(f"/api/notes/{note['id']}")
    again = request("GET", f"{base}/api/notes/{note['id']}")
    assert again.status == 200 and again.json() == note
    assert title in request("GET", f"{base}/").text
    assert request("GET", f"{base}/api/notes/999999").status == 404


def static_from_disk(base: str) -> None:
    r = request("GET", f"{base}/static/style.css")
    assert r.status == 200 and r.body == STYLE


@pytest.mark.parametrize("recipe", ["apache-proxypass.conf", "apache-sethandler.conf"])
def test_mod_proxy_fcgi(recipe: str, workdir: Path, unit_gateway, launch) -> None:
    needs_root_or_skip()
    rewrite = Rewriter.for_dir(workdir)
    gw = unit_gateway(
        FLASK_DEPLOY / "fcgi-gateway-flask.service", extra=("--socket-owner", f"root:{APACHE_GROUP}")
    )
    port = free_port()
    conf = apache_conf(
        workdir / "apache", port, vhost(recipe, rewrite, port), ["proxy", "proxy_fcgi", "alias", "mime"]
    )
    apache = start_apache(conf, port)
    base = f"http://127.0.0.1:{port}"
    try:
        notes_round_trip(base, f"Apache {recipe} \u2713")
        r = request("GET", f"{base}/health")
        assert r.status == 200 and r.json()["pid"] in children(gw.pid)
        gw.proc.proc.send_signal(signal.SIGTERM)  # the static files do not need the gateway
        assert gw.proc.wait(35) == 0
        static_from_disk(base)
        assert request("GET", f"{base}/health").status == 503
    finally:
        apache.stop()
        print(f"----- apache error log -----\n{apache.log_text()[-4000:]}")


def www_data_python(workdir: Path) -> tuple[str, str]:
    """(interpreter, PYTHONPATH) with which Apache's user can run the gateway and Flask."""
    check = "import gateway, flask, flask_sqlalchemy"
    candidates = [(sys.executable, str(REPO_ROOT))]
    if os.path.exists("/usr/bin/python3"):
        candidates.append(("/usr/bin/python3", f"{REPO_ROOT}:{sysconfig.get_paths()['purelib']}"))
    for python, path in candidates:
        probe = subprocess.run(
            ["runuser", "-u", APACHE_USER, "--", "env", f"PYTHONPATH={path}", python, "-c", check],
            capture_output=True, cwd="/", timeout=60,
        )  # fmt: skip
        if probe.returncode == 0:
            same = subprocess.run(
                [python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True
            )
            if python == sys.executable or same.stdout.strip() == str(sys.version_info[:2]).encode():
                return python, path
    pytest.skip(f"no Python interpreter usable by {APACHE_USER} can import the gateway and Flask")


def test_mod_fcgid_spawns_the_gateway_on_fd_0(workdir: Path, launch) -> None:
    needs_root_or_skip()
    if not os.path.exists(f"{APACHE_MODULES}/mod_fcgid.so"):
        pytest.skip("mod_fcgid is not installed (libapache2-mod-fcgid; scripts/setup-env)")
    python, pythonpath = www_data_python(workdir)
    rewrite = Rewriter.for_dir(workdir)
    rewrite.add(f"{HOST_ROOT}/examples/flask_app/deploy/", f"{workdir}/", first=True)
    rewrite.add(f"{HOST_ROOT}/.venv/bin/fcgi-gateway", f"{python} -m gateway", first=True)
    wrapper = rewrite((FLASK_DEPLOY / "notes.fcgi").read_text())
    assert os.access(FLASK_DEPLOY / "notes.fcgi", os.X_OK), "notes.fcgi must be executable"
    shebang, rest = wrapper.split("\n", 1)
    (workdir / "notes.fcgi").write_text(f"{shebang}\nexport PYTHONPATH={pythonpath}\n{rest}")
    (workdir / "notes.fcgi").chmod(0o755)
    db_dir = workdir / "lib" / "flask"
    db_dir.mkdir(parents=True)
    subprocess.run(["chown", f"{APACHE_USER}:{APACHE_GROUP}", str(db_dir)], check=True)
    port = free_port()
    conf = apache_conf(
        workdir / "apache", port, vhost("apache-fcgid.conf", rewrite, port), ["fcgid", "alias", "mime"]
    )
    apache: Proc = start_apache(conf, port)
    base = f"http://127.0.0.1:{port}"
    try:
        notes_round_trip(base, "Apache mod_fcgid \u2713")
        static_from_disk(base)
        log = apache.log_text()
        assert f"serving WSGI on unix:{workdir}/apache/fcgid/" in log, log[-3000:]  # fd 0 adopted
        assert "booted worker" in log
        # Graceful stop: mod_fcgid SIGTERMs its processes; the gateway must exit 0.
        apache.proc.send_signal(signal.SIGTERM)
        apache.wait(30)
        assert wait_until(lambda: "Process manager" in apache.log_text().split("caught SIGTERM")[-1], 10)
        exits = [line for line in apache.log_text().splitlines() if "notes.fcgi(" in line and "exit(" in line]
        assert exits and all("return code: 0" in line for line in exits), exits
    finally:
        apache.stop()
        print(f"----- apache error log -----\n{apache.log_text()[-5000:]}")
