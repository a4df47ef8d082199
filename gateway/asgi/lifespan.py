"""ASGI lifespan protocol: startup before serving, shutdown after draining.

``--lifespan auto`` treats an application that raises on the lifespan scope before
answering startup as "lifespan unsupported" (logged at debug; Django's ASGI handler does
this; docs/protocol-notes.md, peer bug 12). ``on`` makes that an error.
``lifespan.startup.failed`` is an error in both modes. The lifespan ``state`` dict is
shared with every request scope (shallow-copied per request).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import GatewayError
from .scope import ASGI_VERSION

logger = logging.getLogger("gateway.error")


class LifespanError(GatewayError):
    """Startup failed (or the app does not support lifespan when ``--lifespan on``)."""


class Lifespan:
    def __init__(self, app: Any, mode: str = "auto", timeout: float = 60.0) -> None:
        self.app = app
        self.mode = mode
        self.timeout = timeout
        self.state: dict[str, Any] = {}
        self.supported = mode != "off"
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        try:
            await self.app(scope, self._to_app.get, self._from_app.put)
        except BaseException as exc:
            self._error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            await self._from_app.put({"type": "_lifespan.exited"})

    async def startup(self) -> None:
        if self.mode == "off":
            return
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._to_app.put({"type": "lifespan.startup"})
        message = await asyncio.wait_for(self._from_app.get(), self.timeout)
        mtype = message["type"]
        if mtype == "lifespan.startup.complete":
            return
        if mtype == "lifespan.startup.failed":
            raise LifespanError(f"application startup failed: {message.get('message', '')}")
        # the app returned or raised without answering startup
        self.supported = False
        if self.mode == "on":
            raise LifespanError(
                f"application does not support the ASGI lifespan protocol (--lifespan on): {self._error!r}"
            )
        if self._error is not None:
            logger.debug("ASGI lifespan unsupported by the application (%r); continuing", self._error)
        else:
            logger.debug("ASGI application returned from the lifespan scope; lifespan unsupported")

    async def shutdown(self) -> None:
        if not self.supported or self._task is None:
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        try:
            message = await asyncio.wait_for(self._from_app.get(), self.timeout)
        except TimeoutError:
            logger.error("ASGI lifespan shutdown timed out after %.0fs", self.timeout)
            self._task.cancel()
            return
        if message["type"] == "lifespan.shutdown.failed":
            logger.error("application shutdown failed: %s", message.get("message", ""))
        elif message["type"] == "_lifespan.exited" and self._error is not None:
            logger.error("exception in ASGI lifespan shutdown: %r", self._error)
