"""The errors ``wsgi.input`` raises (re-exported by ``gateway.wsgi.streams``). A module of
their own: it stays interpreted when the hot path is compiled with mypyc, which cannot
compile a subclass of OSError as a native class."""


class ClientDisconnected(OSError):
    """The web server closed the connection (or aborted the request) mid-body."""


class RequestTooLarge(ValueError):
    """The body grew past ``--max-body-size`` while the app read it (no CONTENT_LENGTH
    to check beforehand, e.g. a chunked upload with request buffering off)."""
