"""The optional C fast path of the sync worker (gateway/wsgi/_fastpath.c), or None for each
function when it is not built (no C compiler at install time).

- ``whole_request(data, base, root_path, max_params_bytes, max_params_count)``: a request
  that arrived whole in one read on an idle connection (a new one, or a kept-alive one
  between requests) -> (request_id, keep_conn, environ, body), or None (take the codec
  path);
- ``header_block(status, headers)`` -> (block, content_length, code), or None (take
  ``gateway.response.wsgi_header_block``, which also raises every error).

The pure-Python paths are the reference: tests/wsgi/test_fastpath.py checks that these give
exactly what they give.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

whole_request: Callable[..., tuple[int, bool, dict[str, Any], bytes] | None] | None
header_block: Callable[[Any, Any], tuple[bytes, int | None, int] | None] | None
try:
    from ._fastpath import header_block
    from ._fastpath import request as whole_request
except ImportError:  # not built: the codec and build_environ / wsgi_header_block
    whole_request = header_block = None
