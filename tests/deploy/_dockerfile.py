"""Reading a Dockerfile the way ``docker build`` does, for the container recipe's tests.

Enough of the format for the repository's Dockerfiles: comment lines dropped, backslash
continuations joined, instructions split into stages at ``FROM``, ``--flag=value`` options
read, the exec (JSON) form of ``CMD``/``ENTRYPOINT``/``HEALTHCHECK CMD`` and ``ENV K=V``
pairs parsed. ``Image`` is the configuration a stage ends with, inherited from the stage it
is built ``FROM`` as an image is (environment, user, workdir, entrypoint, command, volumes,
stop signal, health check).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case
    flags: dict[str, str]  # --name=value options before the arguments
    args: str  # the rest, as written (continuations joined)
    line: int

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"line {self.line}: {self.keyword} is not in exec form"
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def runs(self) -> list[str]:
        return [i.args for i in self.all("RUN")]


@dataclass
class Image:
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stopsignal: str | None = None
    healthcheck: Instruction | None = None

    def healthcheck_cmd(self) -> list[str]:
        assert self.healthcheck is not None
        kind, _, rest = self.healthcheck.args.partition(" ")
        assert kind == "CMD", f"HEALTHCHECK {kind}"
        return json.loads(rest)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    current, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.lstrip().startswith("#") or (not raw.strip() and not current):
            continue  # comments go, inside a continuation too
        if not current:
            start = number
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        out.append((start, (current + raw).strip()))
        current = ""
    return out


def _instruction(line: int, text: str) -> Instruction:
    keyword, _, rest = text.partition(" ")
    flags: dict[str, str] = {}
    rest = rest.strip()
    while (m := re.match(r"--([\w-]+)(?:=(\S*))?\s+", rest)) is not None:
        flags[m.group(1)] = m.group(2) or ""
        rest = rest[m.end() :]
    return Instruction(keyword.upper(), flags, rest, line)


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, in order (``ARG`` before the first ``FROM`` is dropped)."""
    stages: list[Stage] = []
    for line, text in _logical_lines(path.read_text()):
        ins = _instruction(line, text)
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(ins)
    return stages


def env_pairs(args: str, env: dict[str, str]) -> dict[str, str]:
    """``ENV A=1 B="x y" PATH=/x:$PATH`` -> pairs, ``$NAME``/``${NAME}`` expanded from ``env``."""
    out: dict[str, str] = {}
    for item in shlex.split(args):
        name, sep, value = item.partition("=")
        assert sep, f"ENV {item!r}: only the NAME=VALUE form is read"
        out[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), value)
    return out


def image(stages: list[Stage], name: str | None = None) -> Image:
    """The configuration of stage ``name`` (the last stage by default) as an image has it."""
    stage = stages[-1] if name is None else next(s for s in stages if s.name == name)
    earlier = [s for s in stages[: stages.index(stage)] if s.name == stage.base]
    img = image(stages, stage.base) if earlier else Image()
    img = Image(**{**img.__dict__, "env": dict(img.env), "volumes": list(img.volumes)})
    for ins in stage.instructions:
        if ins.keyword == "ENV":
            img.env.update(env_pairs(ins.args, img.env))
        elif ins.keyword == "USER":
            img.user = ins.args
        elif ins.keyword == "WORKDIR":
            img.workdir = ins.args
        elif ins.keyword == "ENTRYPOINT":
            img.entrypoint, img.cmd = ins.exec_form(), []  # a new ENTRYPOINT resets CMD
        elif ins.keyword == "CMD":
            img.cmd = ins.exec_form()
        elif ins.keyword == "VOLUME":
            img.volumes += json.loads(ins.args) if ins.args.startswith("[") else ins.args.split()
        elif ins.keyword == "STOPSIGNAL":
            img.stopsignal = ins.args
        elif ins.keyword == "HEALTHCHECK":
            img.healthcheck = ins
    return img
