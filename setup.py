"""Build hook for the optional C speedup; everything else about the package is in
pyproject.toml. ``optional=True``: without a C compiler the install still succeeds and the
pure-Python code is used (the reference implementation; tests compare the two).

- gateway/protocol/_pairs.c: the codec's scanners (bytes -> tuples): the record splitter
  and the name-value pairs decoder.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gateway.protocol._pairs",
            ["gateway/protocol/_pairs.c"],
            depends=["gateway/protocol/_pairs_items.h"],
            optional=True,
        ),
    ]
)
