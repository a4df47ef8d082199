"""Protocol error hierarchy: who broke the protocol (the peer or us) and a status hint."""


class ProtocolError(Exception):
    """A FastCGI protocol violation. ``status_hint`` is the HTTP status that fits best;
    ``request_id`` names the request it concerns, when it concerns one."""

    def __init__(self, message: str, status_hint: int = 400, request_id: int | None = None) -> None:
        super().__init__(message)
        self.status_hint = status_hint
        self.request_id = request_id


class RemoteProtocolError(ProtocolError):
    """The peer (the web server) sent something invalid or over a configured limit."""


class LocalProtocolError(ProtocolError):
    """Our side tried to send something the protocol state does not allow."""

    def __init__(self, message: str, status_hint: int = 500, request_id: int | None = None) -> None:
        super().__init__(message, status_hint, request_id)
