"""Build hook for the optional compiled speedups; everything else about the package is in
pyproject.toml. Without them the pure-Python code is used (the reference implementation;
tests compare the two).

- gateway/protocol/_pairs.c: the codec's scanners (bytes -> tuples): the record splitter
  and the name-value pairs decoder. ``optional=True``: without a C compiler the install
  still succeeds.
- With ``FCGI_GATEWAY_MYPYC=1`` at build time (prototype, issue 16): the sync worker's
  per-request path (``gateway.speedups.COMPILED``) compiled with mypyc from the same
  ``.py`` files, which stay next to their compiled modules as the reference and the
  fallback (``FCGI_GATEWAY_NO_SPEEDUPS=1`` imports them instead). Needs mypy in the build
  environment (``pip install --no-build-isolation`` with mypy installed) and a C
  compiler; a failure fails the build (it was asked for).
"""

import hashlib
import json
import os
import re
from pathlib import Path

from setuptools import Extension, setup

ext_modules = [
    Extension(
        "gateway.protocol._pairs",
        ["gateway/protocol/_pairs.c"],
        depends=["gateway/protocol/_pairs_items.h"],
        optional=True,
    ),
]


def compiled_modules() -> list[str]:
    """``gateway.speedups.COMPILED``, read from its source (importing the package at build
    time would need its dependencies)."""
    source = (Path(__file__).parent / "gateway" / "speedups.py").read_text()
    block = re.search(r"^COMPILED: tuple\[str, \.\.\.\] = \((.*?)^\)", source, re.M | re.S)
    assert block is not None, "gateway/speedups.py: COMPILED not found"
    return re.findall(r'"([\w.]+)"', block.group(1))


if os.environ.get("FCGI_GATEWAY_MYPYC", "").strip().lower() not in ("", "0", "false", "no", "off"):
    from mypyc.build import mypycify

    paths = [name.replace(".", "/") + ".py" for name in compiled_modules()]
    # What the build was made from: gateway/speedups.py imports the .py files instead when
    # one no longer matches (an edited source with a stale build; mtimes cannot tell, a
    # wheel's files are all written at install time). Package data, not in git.
    Path("gateway/_compiled_sources.json").write_text(
        json.dumps({p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}, indent=1) + "\n"
    )
    ext_modules += mypycify(
        ["--config-file", "mypyc.ini", *paths],
        group_name="gateway._compiled",  # the shared library: gateway/_compiled__mypyc.*.so
        opt_level="3",
    )

setup(ext_modules=ext_modules)
