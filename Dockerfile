# syntax=docker/dockerfile:1
# fcgi-gateway in a container, with nginx in another container beside it sharing the socket
# directory (docs/deployment.md, "Containers"). Build from the root of a checkout:
#
#   docker build -t fcgi-gateway-flask .                   # the Flask example (last stage)
#   docker build --target runtime -t fcgi-gateway .        # the server alone, to add your app
#
# Stages:
#   build    a wheel built from the checkout with `python -m build` (the optional C speedup
#            compiles here, so the runtime image needs no compiler);
#   runtime  python slim + that wheel in /opt/venv, a non-root user, the socket directory
#            as a volume, SIGTERM as the stop signal, a health check with `fcgi-gateway ping`;
#   example  examples/flask_app on top of runtime.
# CI lints this file with hadolint (scripts/check-package) and
# tests/deploy/test_container.py keeps the properties above and runs the image's command on
# loopback; the image itself is not built there (no container engine in CI).

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-bookworm AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir build==1.2.2
COPY pyproject.toml setup.py README.md ./
COPY gateway/ gateway/
RUN python -m build --outdir /dist .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# The server runs as uid 10001, gid 101 (numeric, so that Kubernetes' runAsNonRoot can check
# it). Its socket gets group 101, the nginx group of the official nginx images (Debian and
# Alpine, nginx-unprivileged too): their workers connect with the default --socket-mode 0660.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    FCGI_GATEWAY_BIND=unix:/run/fcgi-gateway/app.sock \
    FCGI_GATEWAY_PING_PATH=/ping
RUN groupadd --system --gid 101 fcgi-gateway \
    && useradd --system --no-log-init --uid 10001 --gid fcgi-gateway \
       --home-dir /app --shell /usr/sbin/nologin fcgi-gateway \
    && install -d -o fcgi-gateway -g fcgi-gateway -m 0750 /run/fcgi-gateway \
    && install -d -o fcgi-gateway -g fcgi-gateway -m 0700 /var/lib/fcgi-gateway \
    && python -m venv /opt/venv
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    pip install --no-cache-dir /dist/*.whl
WORKDIR /app
# Shared with the nginx container: the unix socket lives here.
VOLUME ["/run/fcgi-gateway"]
USER 10001:101
# SIGTERM: stop accepting, finish in-flight requests (--graceful-timeout, 30s), exit 0. Give
# the container a longer stop timeout than that (docker run --stop-timeout 35).
STOPSIGNAL SIGTERM
# Answered by the gateway itself (--ping-path), without the app; 503 once it is stopping.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["fcgi-gateway", "ping", "unix:/run/fcgi-gateway/app.sock", "--timeout", "2s"]
ENTRYPOINT ["fcgi-gateway"]
CMD ["--help"]

FROM runtime AS example
USER 0:0
RUN --mount=type=bind,source=examples/flask_app/requirements.txt,target=/tmp/requirements.txt \
    pip install --no-cache-dir -r /tmp/requirements.txt
# The code stays owned by root (read-only for the server); the SQLite file goes to the data
# directory.
COPY examples/flask_app/ /app/
ENV FCGI_EXAMPLE_FLASK_DB=/var/lib/fcgi-gateway/flask.sqlite3
USER 10001:101
CMD ["app:app"]
