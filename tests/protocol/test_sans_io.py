"""The codec stays sans-IO: no module in gateway/protocol imports anything that does I/O,
concurrency or process control (checked on the source with ``ast``, so imports inside
functions and ``from x import y`` forms count too).

Its one import from outside the package is the speedups switch, ``from ..speedups import
load_native`` (the decision to use the native decoder is made where the environment may be
read); gateway/speedups.py must stay a leaf that imports nothing from the gateway, and it
may import only the native modules registered in it, all inside gateway/protocol."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway.protocol

PROTOCOL_DIR = Path(gateway.protocol.__file__).resolve().parent
MODULES = sorted(PROTOCOL_DIR.glob("*.py"))

#: Top-level modules a sans-IO codec must not import.
FORBIDDEN = frozenset(
    {
        "asyncio",
        "concurrent",
        "fcntl",
        "io",
        "mmap",
        "multiprocessing",
        "os",
        "select",
        "selectors",
        "signal",
        "socket",
        "socketserver",
        "ssl",
        "subprocess",
        "threading",
        "_thread",
        "time",
        "trio",
        "anyio",
        "uvloop",
        "shutil",
        "tempfile",
        "pathlib",
        "http",
        "urllib",
    }
)


def imported_modules(source: str) -> set[str]:
    """Top-level names of every absolute import, plus dynamic ``__import__``/``importlib``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.add("__import__")
    return found


def test_the_codec_modules_are_all_checked():
    names = {p.name for p in MODULES}
    assert {"constants.py", "errors.py", "records.py", "events.py", "state.py", "connection.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_protocol_module_imports_nothing_that_does_io(path):
    imports = imported_modules(path.read_text(encoding="utf-8"))
    assert not imports & FORBIDDEN, f"{path.name} imports {sorted(imports & FORBIDDEN)}"
    assert "importlib" not in imports and "__import__" not in imports, f"{path.name} imports dynamically"


#: The only import allowed to climb out of gateway.protocol: the speedups switch.
SWITCH_IMPORT = (2, "speedups", ("load_native",))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_protocol_module_imports_stay_inside_the_package_or_stdlib_basics(path):
    """Relative imports must not climb out of gateway.protocol (imports point one way:
    protocol <- asgi/wsgi <- worker), and no absolute gateway import sneaks in; the one
    exception is ``from ..speedups import load_native``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            where = f"{path.name}: from {'.' * node.level}{node.module} import ..."
            if node.level > 1:
                names = tuple(alias.name for alias in node.names)
                assert (node.level, node.module, names) == SWITCH_IMPORT, where
            if node.level == 0:
                assert node.module and not node.module.startswith("gateway"), path.name


def test_the_speedups_switch_is_a_leaf_that_loads_only_protocol_modules():
    """What the codec imports from outside imports nothing from the gateway in turn (so
    gateway.protocol still stands alone, and no cycle), and the native modules it may load
    are all scanners inside gateway/protocol."""
    from gateway import speedups

    source = Path(speedups.__file__).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("gateway"), node.module
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith("gateway") for alias in node.names)
    assert speedups.NATIVE
    for name in speedups.NATIVE:
        package, _, leaf = name.rpartition(".")
        assert package == gateway.protocol.__name__ and leaf.startswith("_"), name


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "from asyncio import Protocol",
        "from socket import socket as s",
        "def f():\n    import threading",
        "import selectors, struct",
        "x = __import__('select')",
    ],
)
def test_the_checker_catches_io_imports(source):
    found = imported_modules(source)
    assert found & (FORBIDDEN | {"__import__"})


def test_the_checker_allows_pure_imports():
    lines = ["from __future__ import annotations", "import struct", "from collections import deque"]
    source = "\n".join([*lines, "from . import x"])
    assert not imported_modules(source) & FORBIDDEN
