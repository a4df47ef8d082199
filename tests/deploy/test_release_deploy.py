"""docs/deployment.md, "Release directories": the two recipes run as written.

``release-serve`` starts the gateway in ``/srv/app/current`` (``--chdir``); nginx sits in
front; ``release-deploy`` is run with the name of the next release while wrk drives nginx.
The new release must be served afterwards, by the same master, and no request may fail.
Only ``/srv/app`` and ``/run/fcgi-gateway`` are mapped into the test's temp dir, and the
``fcgi-gateway`` program to this interpreter's ``-m gateway``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy._render import Rewriter, doc_recipe
from tests.integration.nginx import Nginx, http_get
from tests.process._load import Wrk, wait_until

APP = """import os

RELEASE = os.path.basename(os.path.dirname(os.path.abspath(__file__)))


def app(environ, start_response):
    body = RELEASE.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def serve_argv(rewrite: Rewriter) -> list[str]:
    words = shlex.split(rewrite(doc_recipe("release-serve")).replace("\\\n", " "))
    assert words[0] == "fcgi-gateway", words
    return [sys.executable, "-m", "gateway", *words[1:]]


@pytest.mark.slow
def test_release_deploy_recipe_flips_and_reloads_without_a_failed_request(workdir, launch):
    root = workdir / "srv-app"
    for name in ("20250301120000", "20250302093000"):
        (root / "releases" / name).mkdir(parents=True)
        (root / "releases" / name / "app.py").write_text(APP)
    (root / "current").symlink_to(root / "releases" / "20250301120000")  # the first deploy
    rewrite = Rewriter([("/srv/app", str(root)), ("/run/fcgi-gateway", str(workdir / "run"))])

    gw = launch(serve_argv(rewrite), "release-serve", env={"PYTHONDONTWRITEBYTECODE": "1"})
    sock = workdir / "run" / "app.sock"
    assert wait_until(lambda: sock.exists() and (workdir / "run" / "app.pid").exists(), timeout=15)
    master = int((workdir / "run" / "app.pid").read_text())
    assert master == gw.pid
    nginx = Nginx(workdir / "nginx", f"unix:{sock}")
    nginx.start()
    load = None
    try:
        assert http_get(nginx.url + "/").text == "20250301120000"
        load = Wrk(workdir, nginx.url + "/", duration=5, connections=8).start()
        time.sleep(1.5)
        deploy = rewrite(doc_recipe("release-deploy"))
        argv = ["sh", "-c", deploy, "deploy-release", "20250302093000"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        assert wait_until(lambda: "reload complete: generation 2 serving" in gw.log_text(), timeout=15)
        result = load.result()
        print(f"release deploy under load: {result.summary()}; bodies {dict(result.bodies)}")
        assert result.failed == 0, result.summary() + "\n" + result.output
        assert set(result.bodies) == {"20250301120000", "20250302093000"}
        assert {http_get(nginx.url + "/").text for _ in range(10)} == {"20250302093000"}
    finally:
        if load is not None:
            load.stop()
        nginx.stop()
    assert (root / "current").resolve() == (root / "releases" / "20250302093000").resolve()
    assert not (root / "current.new").exists()
    assert gw.proc.poll() is None and int((workdir / "run" / "app.pid").read_text()) == master
    assert "now resolves to" in gw.log_text()


def test_release_recipes_name_the_same_paths():
    serve, deploy = doc_recipe("release-serve"), doc_recipe("release-deploy")
    assert "--chdir /srv/app/current" in serve
    words = shlex.split(serve.replace("\\\n", " "))
    pid = next(w for w in words if w.startswith("/run/") and w.endswith(".pid"))
    assert pid in deploy and "/srv/app/current" in deploy
    assert Path(pid).parent == Path("/run/fcgi-gateway")
