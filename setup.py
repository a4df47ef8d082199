"""Build hook for the optional C speedup (gateway/protocol/_pairs.c); everything else
about the package is in pyproject.toml. ``optional=True``: without a C compiler the
install still succeeds and the codec uses its pure-Python decoder."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gateway.protocol._pairs", ["gateway/protocol/_pairs.c"], optional=True),
    ]
)
