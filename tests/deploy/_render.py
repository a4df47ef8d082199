"""Reading the deployment recipes the way their consumers do, and rewriting them for a test.

The recipes (``examples/*/deploy/*``) are written for a real host: the checkout in
``/srv/fcgi-gateway``, sockets in ``/run/fcgi-gateway``, nginx on port 8080. A test runs
them *as written* except for those host paths and ports, which ``Rewriter`` maps into a
temp dir and free loopback ports. This module also parses what is needed to run them:
systemd units (sections, continuation lines, ``%i``), supervisord program blocks, and the
fenced code blocks of ``docs/deployment.md`` (``<!-- snippet: PATH -->`` marks a block
that must equal the body of that file, i.e. the file without its leading comment header;
``<!-- recipe: NAME -->`` marks a recipe that lives in the doc only, which the tests run as
``doc_recipe(NAME)``).
"""

from __future__ import annotations

import configparser
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "deployment.md"
FLASK_DEPLOY = REPO_ROOT / "examples" / "flask_app" / "deploy"
DJANGO_DEPLOY = REPO_ROOT / "examples" / "django_site" / "deploy"
HOST_ROOT = "/srv/fcgi-gateway"
#: the programs of the recipes -> what runs them here (the interpreter running the tests)
PROGRAMS = {
    f"{HOST_ROOT}/.venv/bin/fcgi-gateway": [sys.executable, "-m", "gateway"],
    f"{HOST_ROOT}/.venv/bin/python": [sys.executable],
}


@dataclass
class Rewriter:
    """Ordered literal replacements: host paths -> a temp dir, recipe ports -> free ports."""

    pairs: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def for_dir(cls, workdir: Path) -> Rewriter:
        w = str(workdir)
        return cls(
            [
                ("/run/fcgi-gateway", f"{w}/run"),
                ("/var/lib/fcgi-gateway", f"{w}/lib"),
                ("/var/log/supervisor", f"{w}/log"),
                ("/etc/fcgi-gateway", f"{w}/etc"),
                ("/etc/ssl/certs/fcgi-gateway-example.pem", f"{w}/cert.pem"),
                ("/etc/ssl/private/fcgi-gateway-example.key", f"{w}/key.pem"),
                (HOST_ROOT, str(REPO_ROOT)),
            ]
        )

    def add(self, old: str, new: str, first: bool = False) -> Rewriter:
        if first:
            self.pairs.insert(0, (old, new))
        else:
            self.pairs.append((old, new))
        return self

    def __call__(self, text: str) -> str:
        for old, new in self.pairs:
            text = text.replace(old, new)
        return text


def listen_on(text: str, ports: dict[int, int]) -> str:
    """nginx ``listen N[ ssl];`` -> ``listen 127.0.0.1:M[ ssl];``; IPv6 listens dropped."""
    text = re.sub(r"^\s*listen \[::\]:\d+[^;]*;\n", "", text, flags=re.M)

    def repl(m: re.Match[str]) -> str:
        return f"listen 127.0.0.1:{ports[int(m.group(1))]}{m.group(2)};"

    return re.sub(r"listen (\d+)([^;]*);", repl, text)


def body(path: Path) -> str:
    """The file without its leading comment header (``#``/``;`` lines and blank lines; a
    ``#!`` line is kept)."""
    lines = path.read_text().splitlines()
    shebang = lines[:1] if lines and lines[0].startswith("#!") else []
    i = len(shebang)
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith(("#", ";"))):
        i += 1
    return "\n".join(shebang + lines[i:]).rstrip() + "\n"


# -- docs/deployment.md ---------------------------------------------------------------


@dataclass
class Block:
    lang: str
    text: str
    line: int
    snippet: str | None  # repo-relative path from a preceding <!-- snippet: PATH -->
    recipe: str | None = None  # the name from a preceding <!-- recipe: NAME -->


def doc_blocks(text: str | None = None) -> list[Block]:
    text = DOC.read_text() if text is None else text
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    pending: str | None = None
    recipe: str | None = None
    while i < len(lines):
        line = lines[i]
        m = re.match(r"<!-- (snippet|recipe): (\S+) -->", line.strip())
        if m and m.group(1) == "snippet":
            pending = m.group(2)
        elif m:
            recipe = m.group(2)
        fence = re.match(r"^(```+)(\w*)\s*$", line)
        if fence:
            start = i
            i += 1
            inner = []
            while i < len(lines) and lines[i] != fence.group(1):
                inner.append(lines[i])
                i += 1
            blocks.append(Block(fence.group(2), "\n".join(inner) + "\n", start + 1, pending, recipe))
            pending = recipe = None  # a marker applies to the next fenced block only
        i += 1
    return blocks


def doc_recipe(name: str) -> str:
    """The block of docs/deployment.md marked ``<!-- recipe: NAME -->``."""
    found = [b.text for b in doc_blocks() if b.recipe == name]
    assert len(found) == 1, f"docs/deployment.md has {len(found)} blocks marked <!-- recipe: {name} -->"
    return found[0]


# -- systemd units --------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections -> [(key, value)] in order; continuation lines joined; comments dropped."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    logical = ""
    for raw in text.splitlines():
        if not logical and (not raw.strip() or raw.lstrip().startswith(("#", ";"))):
            continue
        if raw.rstrip().endswith("\\"):
            logical += raw.rstrip()[:-1] + " "
            continue
        line = (logical + raw).strip()
        logical = ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def specifiers(value: str, instance: str | None) -> str:
    def repl(m: re.Match[str]) -> str:
        spec = m.group(1)
        if spec == "%":
            return "%"
        if spec in "iI" and instance is not None:
            return instance
        raise ValueError(f"specifier %{spec} not supported by the test renderer")

    return re.sub(r"%(.)", repl, value)


@dataclass
class Unit:
    path: Path
    sections: dict[str, list[tuple[str, str]]]
    instance: str | None = None

    @classmethod
    def load(cls, path: Path, instance: str | None = None) -> Unit:
        return cls(path, parse_unit(path.read_text()), instance)

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        values = self.all(section, key)
        return values[-1] if values else default

    def all(self, section: str, key: str) -> list[str]:
        return [specifiers(v, self.instance) for k, v in self.sections.get(section, []) if k == key]

    def make_directories(self, rewrite: Rewriter) -> None:
        """What systemd creates before ExecStartPre=: StateDirectory= and RuntimeDirectory=."""
        for key, root in (("StateDirectory", "/var/lib/"), ("RuntimeDirectory", "/run/")):
            for value in self.all("Service", key):
                for name in value.split():
                    Path(rewrite(root + name)).mkdir(parents=True, exist_ok=True)

    def environment(self, rewrite: Rewriter) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.all("Service", "Environment"):
            for item in shlex.split(value):
                name, _, val = item.partition("=")
                env[name] = rewrite(val)
        return env

    def command(self, key: str, rewrite: Rewriter) -> list[str]:
        """ExecStart= (etc.) as argv: the recipe's program mapped by PROGRAMS, paths rewritten."""
        value = self.get("Service", key)
        assert value, f"{self.path.name} has no {key}="
        argv = shlex.split(value.lstrip("-@+!:"))
        return [*PROGRAMS.get(argv[0], [argv[0]]), *(rewrite(a) for a in argv[1:])]


def duration_s(text: str) -> float:
    """systemd/gateway durations: ``45``, ``45s``, ``1min``, ``2m``."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?", text.strip())
    assert m, f"unsupported duration {text!r}"
    factor = {None: 1, "ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
    return float(m.group(1)) * factor


def option(argv: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` / ``--name=VALUE`` in argv."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


# -- supervisord ----------------------------------------------------------------------


def supervisor_program(path: Path) -> tuple[str, configparser.SectionProxy]:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read_string(path.read_text())
    name = next(s for s in parser.sections() if s.startswith("program:"))
    return name, parser[name]
