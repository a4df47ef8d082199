"""Build hook for the optional C speedups; everything else about the package is in
pyproject.toml. ``optional=True``: without a C compiler the install still succeeds and the
pure-Python code paths are used (the reference implementations; tests compare the two).

- gateway/protocol/_pairs.c: the codec's name-value pairs decoder;
- gateway/wsgi/_fastpath.c: the sync worker's whole-request parse + environ, and
  start_response's header block;
- gateway/asgi/_fastpath.c: the async worker's whole-request parse + scope, and the
  response's header block;
- gateway/workers/_serve.c: the sync worker's serve path for a whole request on a new
  connection (the app call, start_response, the response's records and their write).
"""

from setuptools import Extension, setup

_PAIRS_H = ["gateway/protocol/_pairs_items.h"]
_WHOLE_H = ["gateway/protocol/_whole_request.h", "gateway/protocol/_unquote.h"]

setup(
    ext_modules=[
        Extension("gateway.protocol._pairs", ["gateway/protocol/_pairs.c"], depends=_PAIRS_H, optional=True),
        Extension(
            "gateway.wsgi._fastpath",
            ["gateway/wsgi/_fastpath.c"],
            depends=[*_PAIRS_H, *_WHOLE_H, "gateway/wsgi/_environ_fixups.h"],
            optional=True,
        ),
        Extension(
            "gateway.asgi._fastpath",
            ["gateway/asgi/_fastpath.c"],
            depends=[*_PAIRS_H, *_WHOLE_H],
            optional=True,
        ),
        Extension(
            "gateway.workers._serve",
            ["gateway/workers/_serve.c"],
            depends=["gateway/workers/_serve_call.h", "gateway/workers/_serve_send.h"],
            optional=True,
        ),
    ]
)
