"""Protocol error hierarchy: who broke the protocol (the peer or us) and a status hint."""


class ProtocolError(Exception):
    """A FastCGI protocol violation. ``status_hint`` is the HTTP status that fits best."""

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class RemoteProtocolError(ProtocolError):
    """The peer (the web server) sent something invalid or over a configured limit."""


class LocalProtocolError(ProtocolError):
    """Our side tried to send something the protocol state does not allow."""

    def __init__(self, message: str, status_hint: int = 500) -> None:
        super().__init__(message, status_hint)
