"""The optional C fast path of the async worker (gateway/asgi/_fastpath.c), or None for each
function when it is not built (no C compiler at install time).

- ``whole_request(data, max_params_bytes, max_params_count)``: a request that arrived whole
  in one read on an idle connection (a new one, or a kept-alive one between requests) ->
  (request_id, keep_conn, params, body), or None (take the codec path);
- ``fast_scope(params, root_path, state, role, request_id, connection, asgi)`` -> the scope
  ``build_scope`` gives, or None (take ``build_scope``);
- ``fast_header_block(status, headers, status_lines)`` -> the block
  ``gateway.response.header_block`` gives, or None (take it: it also raises every error).

The pure-Python paths are the reference: tests/asgi/test_asgi_fastpath.py checks that these give
exactly what they give.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

whole_request: Callable[[bytes, int, int], tuple[int, bool, list[tuple[bytes, bytes]], bytes] | None] | None
fast_scope: Callable[..., dict[str, Any] | None] | None
fast_header_block: Callable[[Any, Any, dict[int, bytes]], bytes | None] | None
try:
    from ._fastpath import header_block as fast_header_block
    from ._fastpath import request as whole_request
    from ._fastpath import scope as fast_scope
except ImportError:  # not built: the codec, build_scope and response.header_block
    whole_request = fast_scope = fast_header_block = None
