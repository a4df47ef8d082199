"""asyncio checker: tasks a request spawned and left running (fire-and-forget).

A task factory installed on the worker's loop remembers, for each task created while a
request's context is current, which request created it (the request id lives in a
contextvar that tasks inherit with the context). After the response, tasks of that
request that are still running are reported as ``task-leak``; ``repair`` cancels them.
Tasks the server itself creates are not tracked.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from .base import Checker, Finding, RequestInfo

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gateway_isolation_request", default=None
)


def _describe(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or repr(coro)
    return f"{task.get_name()} ({name})"


class AsyncTaskChecker(Checker):
    name = "tasks"
    kinds = ("task-leak",)

    def __init__(self) -> None:
        self.spawned: dict[str, list[asyncio.Task[Any]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _install(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        previous = loop.get_task_factory()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            task = previous(loop, coro, **kwargs) if previous else asyncio.Task(coro, loop=loop, **kwargs)
            rid = kwargs["context"].get(_current) if kwargs.get("context") is not None else _current.get()
            if rid is not None:
                self.spawned.setdefault(rid, []).append(task)
            return task

        loop.set_task_factory(factory)

    def before_request(self, info: RequestInfo) -> None:
        self._install()
        _current.set(info.request_id)

    def after_request(self, info: RequestInfo) -> list[Finding]:
        tasks = self.spawned.pop(info.request_id, [])
        running = [t for t in tasks if not t.done()]
        if not running:
            return []
        return [
            Finding(
                "task-leak",
                f"{len(running)} task(s) started by the request still running: "
                + ", ".join(_describe(t) for t in running[:5]),
                # the task objects travel with the finding (repair cancels them); nothing is
                # kept here, so findings under the "log" policy hold no memory afterwards
                {"tasks": [_describe(t) for t in running], "_running": running},
                self.name,
            )
        ]

    def repair(self, finding: Finding) -> bool:
        running = finding.details.get("_running", [])
        for task in running:
            task.cancel()
        return bool(running)
