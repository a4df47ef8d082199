"""The Kubernetes recipe (examples/k8s/, issue 18 part 4): its properties, and the pod's stop
replayed on loopback with the manifest's own values.

- The manifests agree with the image (tests/deploy/_dockerfile.py reads the Dockerfile):
  the socket directory is an ``emptyDir`` mounted in both containers at the image's socket
  directory; the probes run ``fcgi-gateway ping`` on the image's socket; the numeric
  user and group are the image's; the grace period is above the gateway's shutdown delay +
  graceful timeout (``fcgi-gateway check --grace-period`` agrees); nginx's preStop waits,
  then quits gracefully, before the gateway's delay ends; the liveness probe cannot fail
  during a stop; the Service, the PDB and the HPAs point at the Deployment. Their schemas are
  checked by ``scripts/check-k8s`` (kubernetes-validate, a step of .ci/run).
- The pod's stop, as the kubelet runs it: the gateway runs as the image's command with the
  image's and the Deployment's environment, nginx with the ConfigMap's server blocks, the
  two sharing a socket directory (a temp dir). Under ``wrk`` through nginx, "the kubelet"
  sends SIGTERM to the gateway (no preStop) and at the same moment runs nginx's preStop
  command as written (``nginx`` on PATH is this nginx), then nginx's stop signal (SIGQUIT,
  the nginx images' STOPSIGNAL). The Service's endpoint removal is modelled by the load
  stopping one second before nginx's preStop sleep ends. Every request gets 200; the ping
  probe fails from the first moment; nginx exits before the gateway stops accepting; the
  gateway exits 0 within its delay + graceful timeout, inside the grace period.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_duration
from tests.conftest import REPO_ROOT
from tests.deploy._dockerfile import image, parse
from tests.deploy._procs import base_env, request, start_nginx
from tests.deploy._render import DOC, Rewriter, doc_recipe, listen_on
from tests.integration.nginx import NGINX, free_port
from tests.process._load import Wrk, wait_until

yaml = pytest.importorskip("yaml")

K8S = REPO_ROOT / "examples" / "k8s"
IMAGE = image(parse(REPO_ROOT / "Dockerfile"))


def manifests() -> dict[str, dict[str, Any]]:
    """``kind/name`` -> the resource, from every file of examples/k8s."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out[f"{doc['kind']}/{doc['metadata']['name']}/{path.name}"] = doc
    return out


def one(kind: str) -> dict[str, Any]:
    found = [doc for key, doc in manifests().items() if key.startswith(kind + "/")]
    assert len(found) == 1, f"{len(found)} {kind} in examples/k8s"
    return found[0]


def container(name: str) -> dict[str, Any]:
    pod = one("Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == name)


def gateway_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container("gateway").get("env", [])}


def stop_values() -> tuple[float, float, float, float]:
    """(nginx's preStop sleep, the gateway's shutdown delay, its graceful timeout, the grace period)."""
    hook = container("nginx")["lifecycle"]["preStop"]["exec"]["command"]
    m = re.fullmatch(r"sleep (\d+(?:\.\d+)?) && nginx -s quit", hook[-1])
    assert hook[:2] == ["/bin/sh", "-c"] and m, hook
    env = gateway_env()
    pod = one("Deployment")["spec"]["template"]["spec"]
    return (
        float(m.group(1)),
        parse_duration(env["FCGI_GATEWAY_SHUTDOWN_DELAY"]),
        parse_duration(env["FCGI_GATEWAY_GRACEFUL_TIMEOUT"]),
        float(pod["terminationGracePeriodSeconds"]),
    )


def image_socket() -> str:
    return IMAGE.env["FCGI_GATEWAY_BIND"].removeprefix("unix:")


# -- the manifests ----------------------------------------------------------------------


def test_containers_share_the_socket_directory_as_the_image_has_it() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    sock_dir = os.path.dirname(image_socket())
    assert sock_dir in IMAGE.volumes
    for name in ("gateway", "nginx"):
        mounts = [m for m in container(name)["volumeMounts"] if m["mountPath"] == sock_dir]
        assert len(mounts) == 1, f"{name} does not mount {sock_dir}"
        assert "emptyDir" in volumes[mounts[0]["name"]]
    conf = one("ConfigMap")["data"]["default.conf"]
    assert f"server unix:{image_socket()};" in conf
    assert "fastcgi_keep_conn on;" in conf


def test_security_context_matches_the_image() -> None:
    uid, gid = (int(x) for x in (IMAGE.user or "").split(":"))
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == gid, "the socket directory's group is nginx's"
    gw = container("gateway")["securityContext"]
    assert (gw["runAsUser"], gw["runAsGroup"]) == (uid, gid)
    assert container("nginx")["securityContext"]["runAsGroup"] == gid, "nginx reaches the 0660 socket"
    for name in ("gateway", "nginx"):
        ctx = container(name)["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"]


def test_probes_ping_the_image_socket() -> None:
    gw = container("gateway")
    assert IMAGE.env.get("FCGI_GATEWAY_PING_PATH") == "/ping"
    for probe in ("readinessProbe", "livenessProbe"):
        cmd = gw[probe]["exec"]["command"]
        assert cmd[:3] == ["fcgi-gateway", "ping", f"unix:{image_socket()}"], cmd


def test_stop_timings_lose_nothing() -> None:
    sleep, delay, graceful, grace = stop_values()
    gw = container("gateway")
    assert "lifecycle" not in gw, "the gateway waits itself (--shutdown-delay), no preStop sleep"
    assert sleep + 2 <= delay, "nginx has quit (and finished its requests) before the gateway stops accepting"
    assert delay + graceful < grace, "the kubelet's SIGKILL comes after the gateway's drain"
    live = gw["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > grace, "a stopping gateway is never restarted"
    strategy = one("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_service_pdb_and_hpas_point_at_the_deployment() -> None:
    deploy = one("Deployment")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert one("Service")["spec"]["selector"].items() <= labels.items()
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in container("nginx")["ports"]}
    assert {p["targetPort"] for p in one("Service")["spec"]["ports"]} <= ports
    hpas = [doc for key, doc in manifests().items() if key.startswith("HorizontalPodAutoscaler/")]
    assert len(hpas) == 2
    for hpa in hpas:
        assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "ContainerResource":
                assert metric["containerResource"]["container"] == "gateway"


def test_the_doc_applies_and_names_every_file() -> None:
    apply = doc_recipe("k8s-apply")
    named = set(re.findall(r"-f (examples/k8s/\S+)", apply))
    files = {str(p.relative_to(REPO_ROOT)) for p in K8S.glob("*.yaml")}
    assert named == files - {"examples/k8s/hpa-busy-workers.yaml"}, "one HPA of the two"
    text = DOC.read_text()
    assert all(os.path.basename(f) in text for f in files)


def test_adapter_rule_serves_the_metric_the_hpa_reads() -> None:
    (rule,) = yaml.safe_load(doc_recipe("k8s-adapter-rule"))
    hpa = next(d for k, d in manifests().items() if k.endswith("/hpa-busy-workers.yaml"))
    assert rule["name"]["as"] == hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    found = re.findall(r"\b(fcgi_gateway_\w+)\{", rule["metricsQuery"] + rule["seriesQuery"])
    assert set(found) == set(ADAPTER_METRICS)


#: the status page's gauges the adapter rule divides (the pod test scrapes them)
ADAPTER_METRICS = ("fcgi_gateway_active_processes", "fcgi_gateway_total_processes")


def check(env: dict[str, str], grace: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "check",
        "--grace-period",
        f"{grace:g}s",
        *container("gateway")["args"],
    ]
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_check_accepts_the_grace_period_and_refuses_a_short_one(workdir: Path) -> None:
    _, delay, graceful, grace = stop_values()
    rewrite = Rewriter.for_dir(workdir)
    env = base_env({k: rewrite(v) for k, v in {**IMAGE.env, **gateway_env()}.items() if k != "PATH"})
    app = REPO_ROOT / "examples" / "flask_app"
    done = check(env, grace, app)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"a stop takes up to {delay + graceful:g}s" in done.stdout
    done = check(env, delay + graceful, app)
    assert done.returncode == 2 and "--grace-period" in done.stderr, done.stdout + done.stderr


# -- the pod's stop, on loopback ----------------------------------------------------------


def test_pod_stop_under_load_loses_nothing(workdir: Path, launch, tmp_path: Path) -> None:
    sleep, delay, graceful, grace = stop_values()
    rewrite = Rewriter.for_dir(workdir)
    app = workdir / "app"
    shutil.copytree(
        REPO_ROOT / "examples" / "flask_app", app, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3")
    )
    env = {k: rewrite(v) for k, v in {**IMAGE.env, **gateway_env()}.items() if k != "PATH"}
    gateway = launch(
        [sys.executable, "-m", "gateway", *container("gateway")["args"]], "gateway", env=env, cwd=app
    )
    probe = [sys.executable, "-m", "gateway", *container("gateway")["readinessProbe"]["exec"]["command"][1:]]
    probe = [rewrite(a) for a in probe]

    def ready() -> bool:
        return subprocess.run(probe, env=base_env(), capture_output=True, timeout=30).returncode == 0

    assert wait_until(ready, timeout=30, interval=0.2), gateway.log_text()

    port, metrics = free_port(), free_port()
    conf = listen_on(rewrite(one("ConfigMap")["data"]["default.conf"]), {8080: port, 9145: metrics})
    ndir = workdir / "nginx"
    nginx = start_nginx(ndir, conf, [port, metrics])
    bin_dir = workdir / "bin"  # `nginx` in the preStop hook is this nginx
    bin_dir.mkdir()
    (bin_dir / "nginx").write_text(
        f'#!/bin/sh\nexec {NGINX} -p {ndir}/ -c {ndir}/nginx.conf -e {ndir}/error.log "$@"\n'
    )
    (bin_dir / "nginx").chmod(0o755)
    base = f"http://127.0.0.1:{port}"
    assert request("GET", f"{base}/health").status == 200
    assert request("GET", f"{base}/fcgi-status").status == 404, "the status page is not public"
    scraped = request("GET", f"http://127.0.0.1:{metrics}/metrics")
    assert scraped.status == 200, scraped.body[:500]
    assert all(f"{m}{{" in scraped.text for m in ADAPTER_METRICS), scraped.text[:3000]

    # The endpoint removal: the load stops 1 s before nginx's preStop sleep ends.
    load = Wrk(tmp_path, f"{base}/health", duration=int(sleep), connections=8).start()
    try:
        time.sleep(1.0)
        sent = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)  # no preStop: SIGTERM at once
        hook = subprocess.Popen(
            container("nginx")["lifecycle"]["preStop"]["exec"]["command"],
            env=base_env({"PATH": f"{bin_dir}:{os.environ['PATH']}"}),
            start_new_session=True,
        )
        assert wait_until(lambda: not ready(), timeout=1.0, interval=0.05), "readiness still passes"
        not_ready = time.monotonic() - sent
        assert hook.wait(sleep + 10) == 0
        if nginx.proc.poll() is None:
            nginx.proc.send_signal(signal.SIGQUIT)  # then the kubelet's stop signal
        result = load.result()
        nginx_status = nginx.proc.wait(10)
        nginx_exit = time.monotonic() - sent
        status = gateway.wait(delay + graceful + 5)
        took = time.monotonic() - sent
    finally:
        load.stop()
    print(
        f"not ready after {not_ready:.2f}s; load: {result.summary()}; nginx exited {nginx_status} "
        f"after {nginx_exit:.2f}s; the gateway exited {status} after {took:.2f}s"
    )
    assert result.failed == 0 and result.ok > 100, result.summary()
    assert nginx_status == 0
    assert nginx_exit < delay, "nginx is gone before the gateway stops accepting"
    assert status == 0
    assert delay <= took < min(delay + graceful, grace)
    assert "shutdown delay over: graceful stop" in gateway.log_text()
