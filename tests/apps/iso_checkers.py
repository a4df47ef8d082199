"""A user-written isolation checker (``--isolation-checker iso_checkers:make``): reports a
``custom-leak`` after every request to ``/custom``."""

from __future__ import annotations

from gateway.isolation import Checker, Finding, RequestInfo


class PathChecker(Checker):
    name = "custom"
    kinds = ("custom-leak",)

    def after_request(self, info: RequestInfo) -> list[Finding]:
        if info.path == "/custom":
            return [Finding("custom-leak", f"custom checker saw {info.method} {info.path}", {}, self.name)]
        return []


def make() -> Checker:
    return PathChecker()
