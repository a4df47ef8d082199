"""docs/deployment.md and the recipe files are one source, and every config parses.

- A block marked ``<!-- snippet: PATH -->`` equals that file without its comment header, and
  every file in examples/*/deploy/ is named in the doc.
- Every ``nginx`` block of the doc and every nginx recipe file passes ``nginx -t``, wrapped
  in a minimal main config (paths rewritten into a temp dir, a self-signed certificate where
  one is named; a block with ``server``/``upstream`` goes in ``http {}``, one with
  ``location`` in a ``server {}``, bare directives in a ``location``; upstream names the
  block uses but does not define get a stub upstream).
- The Apache recipes pass ``apache2 -t``; the systemd units pass ``systemd-analyze verify``
  with nothing on stderr; shell blocks pass ``sh -n``.
- The ``lighttpd`` and ``caddyfile`` blocks (the recipes marked ``<!-- recipe: NAME -->``,
  which tests/deploy/test_frontends.py runs) pass ``lighttpd -tt`` inside Debian's
  lighttpd.conf and ``caddy validate``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy._frontends import CADDY, LIGHTTPD, caddy_env, caddyfile, lighttpd_main_conf
from tests.deploy._procs import apache_available, apache_conf, apache_test, nginx_test, self_signed_cert
from tests.deploy._render import DOC, HOST_ROOT, Rewriter, body, doc_blocks

DEPLOY_FILES = sorted(REPO_ROOT.glob("examples/*/deploy/*"))
NGINX_FILES = [p for p in DEPLOY_FILES if p.name.startswith("nginx")]
APACHE_FILES = [p for p in DEPLOY_FILES if p.name.startswith("apache")]
UNIT_FILES = [p for p in DEPLOY_FILES if p.suffix in (".service", ".socket")]
BLOCKS = doc_blocks()
NGINX_BLOCKS = [b for b in BLOCKS if b.lang == "nginx"]


def rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def test_doc_exists_with_snippets() -> None:
    assert len(NGINX_BLOCKS) >= 6, "docs/deployment.md lost its nginx recipes"
    assert any(b.snippet for b in BLOCKS)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.snippet], ids=lambda b: b.snippet)
def test_doc_snippet_equals_file(block) -> None:
    path = REPO_ROOT / block.snippet
    assert path.is_file(), f"docs/deployment.md:{block.line} names a missing file {block.snippet}"
    assert block.text == body(path), (
        f"docs/deployment.md:{block.line} differs from {block.snippet} (without its comment header); "
        "edit both (the file is what the tests run)"
    )


def test_every_recipe_file_is_in_the_doc() -> None:
    text = DOC.read_text()
    missing = [rel(p) for p in DEPLOY_FILES if rel(p) not in text]
    assert not missing, f"not mentioned in docs/deployment.md: {missing}"


def _context(text: str) -> str:
    top = re.sub(r"\{[^{}]*\}", "", re.sub(r"\{[^{}]*\}", "", text))  # drop nested blocks
    if re.search(r"^\s*(server|upstream|map)\b", text, re.M) and re.search(
        r"^(server|upstream|map)\b", top, re.M
    ):
        return "http"
    return "server" if re.search(r"^\s*location\b", text, re.M) else "location"


def wrap_nginx(text: str) -> str:
    context = _context(text)
    if context == "location":
        text = f"location / {{\n{text}}}"
    if context != "http":
        text = f"server {{\nlisten 127.0.0.1:8080;\n{text}}}"
    defined = set(re.findall(r"upstream\s+(\S+)\s*\{", text))
    used = set(re.findall(r"fastcgi_pass\s+([A-Za-z_][\w-]*)\s*;", text))
    stubs = "".join(f"upstream {name} {{ server 127.0.0.1:9; }}\n" for name in sorted(used - defined))
    return stubs + text


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    self_signed_cert(d)
    return d


def nginx_ok(workdir: Path, cert_dir: Path, text: str) -> None:
    for name in ("cert.pem", "key.pem"):
        shutil.copy(cert_dir / name, workdir / name)
    done = nginx_test(workdir, wrap_nginx(Rewriter.for_dir(workdir)(text)))
    assert done.returncode == 0, (
        f"nginx -t failed:\n{done.stderr}\n--- config ---\n{(workdir / 'nginx.conf').read_text()}"
    )


@pytest.mark.parametrize("block", NGINX_BLOCKS, ids=lambda b: f"line{b.line}")
def test_doc_nginx_block_parses(block, tmp_path: Path, cert_dir: Path) -> None:
    nginx_ok(tmp_path, cert_dir, block.text)


@pytest.mark.parametrize("path", NGINX_FILES, ids=rel)
def test_nginx_recipe_file_parses(path: Path, tmp_path: Path, cert_dir: Path) -> None:
    nginx_ok(tmp_path, cert_dir, path.read_text())


@pytest.mark.skipif(not apache_available(), reason="apache2 is not installed (scripts/setup-env)")
@pytest.mark.parametrize("path", APACHE_FILES, ids=rel)
def test_apache_recipe_parses(path: Path, tmp_path: Path) -> None:
    modules = ["proxy", "proxy_fcgi", "alias", "mime"]
    if "fcgid" in path.name:
        if not Path("/usr/lib/apache2/modules/mod_fcgid.so").exists():
            pytest.skip("mod_fcgid is not installed")
        modules = ["fcgid", "alias", "mime"]
    conf = apache_conf(tmp_path, 8080, Rewriter.for_dir(tmp_path)(path.read_text()), modules)
    done = apache_test(conf)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("path", UNIT_FILES, ids=rel)
def test_systemd_unit_verifies(path: Path, tmp_path: Path) -> None:
    program = REPO_ROOT / ".venv" / "bin" / "fcgi-gateway"
    rewrite = Rewriter.for_dir(tmp_path)
    rewrite.add(
        f"{HOST_ROOT}/.venv/bin/fcgi-gateway",
        str(program if program.exists() else sys.executable),
        first=True,
    )
    rewrite.add(f"{HOST_ROOT}/.venv/bin/python", sys.executable, first=True)
    for unit in UNIT_FILES:  # a .socket needs its .service next to it
        (tmp_path / unit.name).write_text(rewrite(unit.read_text()))
    name = path.name.replace("@.", "@1.")
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr + done.stdout


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "sh"], ids=lambda b: f"line{b.line}")
def test_doc_shell_block_parses(block) -> None:
    done = subprocess.run(["sh", "-n"], input=block.text, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not Path(LIGHTTPD).exists(), reason="lighttpd is not installed (scripts/setup-env)")
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "lighttpd"], ids=lambda b: f"line{b.line}")
def test_doc_lighttpd_block_parses(block, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.conf"
    recipe.write_text(Rewriter.for_dir(tmp_path)(block.text))
    conf = tmp_path / "lighttpd.conf"
    conf.write_text(lighttpd_main_conf(tmp_path, 8080, recipe))
    done = subprocess.run([LIGHTTPD, "-tt", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr


@pytest.mark.skipif(not Path(CADDY).exists(), reason="caddy is not installed (scripts/setup-env)")
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "caddyfile"], ids=lambda b: f"line{b.line}")
def test_doc_caddyfile_block_validates(block, tmp_path: Path) -> None:
    conf = tmp_path / "Caddyfile"
    conf.write_text(caddyfile(Rewriter.for_dir(tmp_path)(block.text), tmp_path, 8080))
    argv = [CADDY, "validate", "--config", str(conf), "--adapter", "caddyfile"]
    env = {**os.environ, **caddy_env(tmp_path)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_doc_has_the_frontend_recipes() -> None:
    # lighttpd, caddy: test_frontends.py; release-*: test_release_deploy.py; container-*:
    # test_container.py; k8s-*: test_k8s.py
    assert {b.recipe for b in BLOCKS if b.recipe} == {
        "lighttpd",
        "caddy",
        "release-serve",
        "release-deploy",
        "container-build",
        "container-run",
        "k8s-apply",
        "k8s-adapter-rule",
    }
