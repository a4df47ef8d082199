"""The server's error hierarchy. Only ``gateway.cli`` turns these into exit codes."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error fcgi-gateway raises on purpose."""


class ConfigError(GatewayError):
    """An option or config-file value is invalid."""


class AppLoadError(GatewayError):
    """The application could not be imported or found."""


class BindError(GatewayError):
    """A listening socket could not be created or adopted."""


class HaltServer(GatewayError):
    """Stop the server with ``exit_status`` (raised by the arbiter, mapped by the CLI)."""

    def __init__(self, reason: str, exit_status: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status
