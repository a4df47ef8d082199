"""The four front-ends of tests/deploy/test_frontends.py, started from their recipes: nginx,
Apache mod_proxy_fcgi, lighttpd mod_fastcgi and Caddy's fastcgi transport, each a real
process on a free loopback port in front of a gateway's unix socket (or TCP port).

A ``Variant`` names a recipe as written (a file of examples/*/deploy/, or a block of
docs/deployment.md marked ``<!-- recipe: NAME -->``) and the few literal edits that make
the common alternatives users write (Caddy's ``split .php``, lighttpd without
``check-local``, a prefix mount). ``start(variant, workdir, upstream)`` writes the main
config around it (state, logs and pid in ``workdir``) and returns the running ``Proc`` and
its base URL; the caller stops it. Host paths go through ``Rewriter`` like every recipe;
the recipe's socket ``/run/fcgi-gateway/flask.sock`` becomes the given upstream's.
``Gateways`` starts the gateways behind them (an app of tests/deploy/frontend_apps.py, with
or without ``--root-path``), each once, on a unix socket and a loopback TCP port.

- nginx: ``nginx_main_conf`` (``user root;`` when root), as the other nginx recipe tests.
- Apache: ``apache_conf``; its workers run as www-data, so the gateway's socket has that
  group. Needs root.
- lighttpd: Debian's own ``/etc/lighttpd/lighttpd.conf`` (its URL normalisation options
  included) with its port, paths and ``include conf-enabled/*.conf`` pointed here;
  ``lighttpd -D`` runs in the foreground.
- Caddy: a global block (``admin off``: no admin endpoint on port 2019, so tests can run
  side by side) above the recipe's site block, whose ``:8080`` becomes
  ``http://127.0.0.1:PORT``; HOME and XDG dirs in ``workdir`` for its storage.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.client import ClientError, FastCGIClient
from tests.conftest import REPO_ROOT
from tests.deploy._procs import (
    APACHE,
    Proc,
    apache_available,
    apache_conf,
    wait_port,
    write_nginx,
)
from tests.deploy._render import FLASK_DEPLOY, Rewriter, doc_recipe, listen_on
from tests.integration.nginx import NGINX, can_connect, free_port

LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
CADDY = shutil.which("caddy") or "/usr/bin/caddy"
DEBIAN_LIGHTTPD_CONF = Path("/etc/lighttpd/lighttpd.conf")
RECIPE_SOCKET = "/run/fcgi-gateway/flask.sock"
#: the front-ends' environment: a service's PATH (Apache passes its own on as a param)
SERVICE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
#: the mount point of the prefixed variants (the gateway runs with --root-path PREFIX)
PREFIX = "/notes-site"


@dataclass(frozen=True)
class Upstream:
    """Where a gateway listens: its unix socket and its TCP port on 127.0.0.1."""

    socket: str
    port: int


@dataclass(frozen=True)
class Variant:
    name: str
    server: str  # nginx | apache | lighttpd | caddy
    recipe: str  # a file of examples/flask_app/deploy/, or a doc recipe name
    edits: tuple[tuple[str, str], ...] = ()  # literal replacements, each must apply
    prefix: str = ""  # mount point (the gateway runs with --root-path)
    static: bool = True  # the recipe serves /static/ from disk

    def text(self) -> str:
        path = FLASK_DEPLOY / self.recipe
        text = path.read_text() if path.is_file() else doc_recipe(self.recipe)
        for old, new in self.edits:
            assert old in text, f"{self.name}: {old!r} not in recipe {self.recipe}"
            text = text.replace(old, new)
        return text


_CADDY_TRANSPORT = "transport fastcgi\n"
_LIGHTTPD_ROOT = '"/" => (('
_LIGHTTPD_CHECK = '"check-local" => "disable",'

VARIANTS = [
    Variant("nginx", "nginx", "nginx.conf"),
    Variant("nginx-prefix", "nginx", "nginx.conf", (("location / {", f"location {PREFIX}/ {{"),), PREFIX),
    Variant("apache-proxypass", "apache", "apache-proxypass.conf"),
    Variant(
        "apache-proxypass-tcp",
        "apache",
        "apache-proxypass.conf",
        ((f"unix:{RECIPE_SOCKET}|fcgi://localhost/", "fcgi://127.0.0.1:9000/"),),
    ),
    Variant(
        "apache-proxypass-prefix",
        "apache",
        "apache-proxypass.conf",
        (("ProxyPass / unix:", f"ProxyPass {PREFIX}/ unix:"),),
        PREFIX,
    ),
    Variant("apache-sethandler", "apache", "apache-sethandler.conf"),
    # Without the recipe's ProxyFCGISetEnvIf: Apache's own SCRIPT_NAME/PATH_INFO split arrives.
    Variant(
        "apache-sethandler-split",
        "apache",
        "apache-sethandler.conf",
        (('        ProxyFCGISetEnvIf "true" !PATH_INFO\n', ""),),
    ),
    Variant("lighttpd", "lighttpd", "lighttpd"),
    Variant(
        "lighttpd-fix-root-scriptname",
        "lighttpd",
        "lighttpd",
        ((_LIGHTTPD_CHECK, _LIGHTTPD_CHECK + '\n        "fix-root-scriptname" => "enable",'),),
    ),
    Variant("lighttpd-prefix", "lighttpd", "lighttpd", ((_LIGHTTPD_ROOT, f'"{PREFIX}" => (('),), PREFIX),
    Variant("caddy", "caddy", "caddy"),
    # The form Caddy's documentation shows for its fastcgi transport.
    Variant(
        "caddy-split",
        "caddy",
        "caddy",
        ((_CADDY_TRANSPORT, "transport fastcgi {\n\t\t\t\tsplit .php\n\t\t\t}\n"),),
    ),
    Variant("caddy-prefix", "caddy", "caddy", (("\thandle {", f"\thandle {PREFIX}/* {{"),), PREFIX),
    Variant("caddy-handle-path", "caddy", "caddy", (("\thandle {", f"\thandle_path {PREFIX}/* {{"),), PREFIX),
]
BY_NAME = {v.name: v for v in VARIANTS}


def available(server: str) -> str | None:
    """Why ``server`` cannot run here, or None."""
    if server == "nginx":
        return None if os.path.exists(NGINX) else "nginx is not installed"
    if server == "apache":
        if not apache_available():
            return "apache2 is not installed (scripts/setup-env)"
        return None if os.geteuid() == 0 else "needs root: Apache starts as root and serves as www-data"
    binary = {"lighttpd": LIGHTTPD, "caddy": CADDY}[server]
    return None if os.path.exists(binary) else f"{server} is not installed (scripts/setup-env)"


def rewriter(workdir: Path, upstream: Upstream) -> Rewriter:
    rewrite = Rewriter.for_dir(workdir)
    rewrite.add(RECIPE_SOCKET, upstream.socket, first=True)
    rewrite.add("127.0.0.1:9000", f"127.0.0.1:{upstream.port}", first=True)
    return rewrite


def start(variant: Variant, workdir: Path, upstream: Upstream) -> tuple[Proc, str]:
    """The front-end of ``variant`` running in ``workdir``, and its base URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    text = rewriter(workdir, upstream)(variant.text())
    port = free_port()
    starter = {"nginx": _nginx, "apache": _apache, "lighttpd": _lighttpd, "caddy": _caddy}[variant.server]
    return starter(text, workdir, port), f"http://127.0.0.1:{port}"


def _nginx(text: str, workdir: Path, port: int) -> Proc:
    write_nginx(workdir, listen_on(text, {8080: port}))
    conf = workdir / "nginx.conf"
    argv = [NGINX, "-p", f"{workdir}/", "-c", str(conf), "-e", str(workdir / "error.log")]
    proc = Proc(argv, workdir / "out.log", env=SERVICE_ENV, cwd=workdir)
    proc.log = workdir / "error.log"
    wait_port("127.0.0.1", port, proc)
    return proc


def _apache(text: str, workdir: Path, port: int) -> Proc:
    assert "<VirtualHost *:8080>" in text
    vhost = text.replace("<VirtualHost *:8080>", f"<VirtualHost *:{port}>")
    conf = apache_conf(workdir, port, vhost, ["proxy", "proxy_fcgi", "alias", "mime"])
    argv = [APACHE, "-f", str(conf), "-DFOREGROUND"]
    proc = Proc(argv, workdir / "apache.out", env=SERVICE_ENV, cwd=workdir)
    proc.log = workdir / "error.log"
    wait_port("127.0.0.1", port, proc)
    return proc


def lighttpd_main_conf(workdir: Path, port: int, recipe: Path) -> str:
    """Debian's lighttpd.conf with its port, paths and conf-enabled/ pointed at ``workdir``
    and the recipe; a minimal equivalent where that file is missing."""
    root = workdir / "www"
    root.mkdir(exist_ok=True)
    (workdir / "uploads").mkdir(exist_ok=True)
    text = DEBIAN_LIGHTTPD_CONF.read_text() if DEBIAN_LIGHTTPD_CONF.exists() else _MINIMAL_LIGHTTPD
    settings = {
        "server.document-root": f'"{root}"',
        "server.upload-dirs": f'( "{workdir}/uploads" )',
        "server.errorlog": f'"{workdir}/error.log"',
        "server.pid-file": f'"{workdir}/lighttpd.pid"',
        "server.port": str(port),
    }
    for key, value in settings.items():
        text, n = re.subn(rf"^{re.escape(key)}\s*=.*$", f"{key} = {value}", text, flags=re.M)
        assert n == 1, f"{key} not set once in the lighttpd main config"
    if os.geteuid() != 0:  # only root can switch to www-data
        text = re.sub(r"^server\.(username|groupname)\s*=.*$", "", text, flags=re.M)
    else:  # it opens its error log after switching
        user = re.search(r'^server\.username\s*=\s*"([^"]+)"', text, flags=re.M)
        if user:
            shutil.chown(workdir, user.group(1))
            shutil.chown(workdir / "uploads", user.group(1))
    text = re.sub(r'^include_shell "/usr/share/lighttpd/use-ipv6\.pl.*$', "", text, flags=re.M)
    text, n = re.subn(
        r'^include "/etc/lighttpd/conf-enabled/\*\.conf"$', f'include "{recipe}"', text, flags=re.M
    )
    assert n == 1, "no include of conf-enabled/*.conf in the lighttpd main config"
    return text + '\nserver.bind = "127.0.0.1"\n'


_MINIMAL_LIGHTTPD = """server.modules = ("mod_indexfile", "mod_access", "mod_alias", "mod_redirect")
server.document-root = "/var/www/html"
server.upload-dirs = ( "/var/cache/lighttpd/uploads" )
server.errorlog = "/var/log/lighttpd/error.log"
server.pid-file = "/run/lighttpd.pid"
server.port = 80
include "/etc/lighttpd/conf-enabled/*.conf"
server.modules += ("mod_staticfile")
"""


def _lighttpd(text: str, workdir: Path, port: int) -> Proc:
    recipe = workdir / "50-fcgi-gateway.conf"
    recipe.write_text(text)
    conf = workdir / "lighttpd.conf"
    conf.write_text(lighttpd_main_conf(workdir, port, recipe))
    check = subprocess.run([LIGHTTPD, "-tt", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, (
        f"lighttpd -tt failed:\n{check.stdout}{check.stderr}\n--- recipe ---\n{text}"
    )
    proc = Proc([LIGHTTPD, "-D", "-f", str(conf)], workdir / "out.log", env=SERVICE_ENV, cwd=workdir)
    proc.log = workdir / "error.log"
    wait_port("127.0.0.1", port, proc)
    return proc


def caddyfile(text: str, workdir: Path, port: int) -> str:
    """The recipe's site block on ``http://127.0.0.1:port``, under a global block that turns
    the admin endpoint off and keeps Caddy's storage in ``workdir``."""
    site, n = re.subn(r"^:8080 \{", f"http://127.0.0.1:{port} {{", text, flags=re.M)
    assert n == 1, "the Caddy recipe's site address is not :8080"
    return f"{{\n\tadmin off\n\tstorage file_system {workdir}/caddy-data\n}}\n\n{site}"


def caddy_env(workdir: Path) -> dict[str, str]:
    home = workdir / "caddy-home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home)}


def _caddy(text: str, workdir: Path, port: int) -> Proc:
    conf = workdir / "Caddyfile"
    conf.write_text(caddyfile(text, workdir, port))
    argv = [CADDY, "run", "--config", str(conf), "--adapter", "caddyfile"]
    proc = Proc(argv, workdir / "caddy.log", env={**SERVICE_ENV, **caddy_env(workdir)}, cwd=workdir)
    wait_port("127.0.0.1", port, proc)
    return proc


# -- the gateways behind them -------------------------------------------------------------


def _socket_owner() -> list[str]:
    """Apache's (and Debian lighttpd's) workers run as www-data: give the socket that group."""
    if os.geteuid() != 0:
        return []
    try:
        grp.getgrnam("www-data")
    except KeyError:
        return []
    return ["--socket-owner", "root:www-data"]


#: app name -> the gateway's options and APP
_APPS = {
    "wsgi": ["--interface", "wsgi", "tests.deploy.frontend_apps:wsgi"],
    "wsgi-async": ["--interface", "wsgi", "--worker", "async", "tests.deploy.frontend_apps:wsgi"],
    "asgi": ["--interface", "asgi", "tests.deploy.frontend_apps:asgi"],
    "dump": ["--interface", "asgi", "tests.deploy.frontend_apps:dump"],
}


class Gateways:
    """Gateways serving ``tests.deploy.frontend_apps:APP``, started on first use and kept;
    ``stop()`` kills each one's process group. ``wsgi-async`` is the WSGI app on the async
    worker (through the a2wsgi bridge)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.started: dict[tuple[str, str], tuple[Upstream, Proc]] = {}

    def get(self, app: str, prefix: str = "") -> Upstream:
        """The gateway serving ``app`` (``wsgi``, ``wsgi-async``, ``asgi`` or ``dump``) at
        ``prefix``."""
        key = (app, prefix)
        if key not in self.started:
            self.started[key] = self._start(app, prefix)
        return self.started[key][0]

    def _start(self, app: str, prefix: str) -> tuple[Upstream, Proc]:
        name = f"{app}{prefix.replace('/', '-')}"
        upstream = Upstream(str(self.dir / f"{name}.sock"), free_port())
        mount = ["--root-path", prefix] if prefix else []
        argv = [sys.executable, "-m", "gateway", "--bind", f"unix:{upstream.socket}",
                "--bind", f"127.0.0.1:{upstream.port}", *_socket_owner(), *mount, *_APPS[app]]  # fmt: skip
        proc = Proc(argv, self.dir / f"{name}.log", cwd=REPO_ROOT)
        deadline = time.monotonic() + 30
        while True:  # the master listens before its worker has loaded the app: ask the app
            if proc.proc.poll() is not None:
                raise RuntimeError(f"gateway {name} exited:\n{proc.log_text()}")
            if can_connect(upstream.socket):
                try:
                    with FastCGIClient(f"unix:{upstream.socket}", timeout=20) as client:
                        if client.request("GET", f"{prefix}/").status == 200:
                            return upstream, proc
                except ClientError:
                    pass
            if time.monotonic() > deadline:
                proc.stop()
                raise RuntimeError(f"gateway {name} not serving after 30s:\n{proc.log_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        for upstream, proc in self.started.values():
            status = proc.stop()
            print(f"----- gateway {upstream.socket} (exit {status}) -----\n{proc.log_text()[-3000:]}")
        self.started.clear()
