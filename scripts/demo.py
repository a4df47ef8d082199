"""Run an example app behind a real nginx on 127.0.0.1 (used by scripts/demo).

Generates an nginx config in a temp dir (static files served by nginx, everything else
through ``fastcgi_pass`` to fcgi-gateway on a unix socket), starts both, prints the URL,
and stops both on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "django": (ROOT / "examples" / "django_site", "mysite.wsgi:application", "mysite.asgi:application"),
    "flask": (ROOT / "examples" / "flask_app", "app:app", None),
}


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def nginx_conf(tmp: Path, port: int, sock: Path, static: Path | None) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    static_block = f"location /static/ {{ alias {static}/; expires 1h; }}\n" if static else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  include /etc/nginx/mime.types;
  access_log {tmp}/nginx-access.log;
  client_body_temp_path {tmp}/cb; fastcgi_temp_path {tmp}/fc; proxy_temp_path {tmp}/px;
  uwsgi_temp_path {tmp}/uw; scgi_temp_path {tmp}/sc;
  client_max_body_size 100m;
  upstream gateway {{ server unix:{sock}; keepalive 8; }}
  server {{
    listen 127.0.0.1:{port};
    {static_block}
    location / {{
      include /etc/nginx/fastcgi_params;
      fastcgi_keep_conn on;
      fastcgi_pass gateway;
    }}
  }}
}}
"""


def wait_for_socket(path: Path, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fcgi-gateway exited with status {proc.returncode}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.1)
    raise SystemExit("fcgi-gateway did not start listening in time")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("example", nargs="?", default="django", choices=sorted(EXAMPLES))
    ap.add_argument("--asgi", action="store_true", help="serve Django's asgi.py instead of wsgi.py")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    app_dir, wsgi_app, asgi_app = EXAMPLES[args.example]
    app = asgi_app if args.asgi and asgi_app else wsgi_app
    tmp = Path(tempfile.mkdtemp(prefix="fcgi-gateway-demo-"))
    sock = tmp / "gateway.sock"
    static = None
    env = dict(os.environ, FCGI_EXAMPLE_CREATE_SUPERUSER="1")
    if args.example == "django":
        static = app_dir / "staticfiles"
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
            cwd=app_dir,
            env=env,
            check=True,
        )
    port = free_port(args.port)
    (tmp / "nginx.conf").write_text(nginx_conf(tmp, port, sock, static))
    gw_cmd = [sys.executable, "-m", "gateway", "--bind", f"unix:{sock}", "--chdir", str(app_dir), app]
    if args.workers:
        gw_cmd[3:3] = ["--workers", str(args.workers)]
    procs = []
    try:
        gw = subprocess.Popen(gw_cmd, env=env, start_new_session=True)
        procs.append(gw)
        wait_for_socket(sock, gw)
        ngx = subprocess.Popen(
            [nginx_binary(), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx-error.log")],
            start_new_session=True,
        )
        procs.append(ngx)
        time.sleep(0.5)
        if ngx.poll() is not None:
            print((tmp / "nginx-error.log").read_text(), file=sys.stderr)
            return 1
        print(f"\n  {args.example} example ({app}) served by fcgi-gateway behind nginx:\n")
        print(f"    http://127.0.0.1:{port}/\n")
        if args.example == "django":
            print(f"    admin: http://127.0.0.1:{port}/admin/  (user admin, password admin)\n")
        print("  Ctrl-C to stop.", flush=True)
        stop: list[int] = []
        signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))  # only records
        while not stop and all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 0 if stop else 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C or TERM must not cut the clean-up short (it would leave the
        # gateway and nginx running).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
