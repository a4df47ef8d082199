"""The sync worker's C serve path (gateway/workers/_serve.c): whether a worker can use it,
and the Python it calls back.

The C path serves a request that arrived whole in the first read of a new connection
without FCGI_KEEP_CONN (nginx's default), and one that arrived whole on a kept-alive
connection (``Server.serve_request``: the connection's codec adopts it before and ends it;
a few lines of the worker's Python count it after): it calls the app, implements
``start_response`` and ``write()``, and writes the response's records, with no other
per-request Python of the worker's own. It applies only when a request needs nothing else
from the worker: no status pages, scoreboard, access log, isolation layer, watchdog
(request timeouts), ``--forward-stderr``, ``--debug`` (its 500 pages show the reference's
tracebacks) or request threads; the Python path (``SyncWorker._serve`` and
``gateway.wsgi.handler.WSGIResponder``) stays the reference and takes everything else,
including, mid-request, every error (see ``handoff``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ..protocol import FastCGIConnection
from ..wsgi.fastpath import header_block, whole_request
from ..wsgi.handler import ClientGone, WSGIResponder, note, reference_head
from ..wsgi.streams import FileWrapper, InputStream

if TYPE_CHECKING:
    from .sync_worker import SyncWorker

try:
    from ._serve import Server
except ImportError:  # not built: the Python path serves every request
    Server = None


def make_server(worker: SyncWorker) -> Any | None:
    """The C serve path for ``worker``, or None when it cannot take its requests (not built,
    or a feature only the Python path has is on). Called once the worker is set up (its
    isolation layer, access log and status pages are assigned after __init__)."""
    cfg = worker.config
    if (
        Server is None
        or whole_request is None
        or header_block is None
        or worker.multithread
        or worker.pages is not None
        or worker.slot is not None
        or worker.access is not None
        or worker.isolation is not None
        or worker.watchdog.enabled
        or cfg.forward_stderr
        or cfg.debug
        or cfg.max_requests_per_connection == 0
    ):
        return None
    limit = cfg.max_body_bytes
    options = worker._codec_options

    def handoff(
        sock: Any,
        rid: int,
        environ: dict[str, Any],
        head: bytes | None,
        length: int | None,
        code: int,
        status: str | None,
        headers_sent: bool,
        body_bytes: int,
        ended: bool,
        codec: FastCGIConnection | None,
    ) -> WSGIResponder:
        """A Python responder in the C path's state, to go on with the request (on a kept
        connection: with its codec, which adopted the request)."""
        if codec is None:
            codec = FastCGIConnection(**options)
            codec.adopt(rid, False)
        responder = WSGIResponder(codec, rid, sock, environ, False)  # --debug: never here
        responder.head, responder.length, responder.code = head, length, code
        responder.status, responder.headers_sent, responder.body_bytes = status, headers_sent, body_bytes
        responder.ended = ended
        return responder

    return Server(
        app=worker.app,
        baseline=worker._baseline,
        base=worker._base,
        root_path=worker._root_path,
        max_params_bytes=worker._max_params_bytes,
        max_params_count=worker._max_params_count,
        max_body_bytes=limit,
        errors=worker._errors,
        parse=whole_request,
        header_block=header_block,
        reference_head=reference_head,
        make_input=functools.partial(InputStream.whole, limit=limit),
        handoff=handoff,
        note=note,
        file_wrapper=FileWrapper,
        client_gone=ClientGone,
    )
