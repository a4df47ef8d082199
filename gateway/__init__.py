"""fcgi-gateway: a FastCGI application server for ASGI and WSGI apps.

Public API: ``__version__`` and the error hierarchy. The command line entry point is
``gateway.cli:main`` (``fcgi-gateway`` / ``python -m gateway``).
"""

from .errors import AppLoadError, ConfigError, GatewayError, HaltServer

__version__ = "0.1.0"

__all__ = ["AppLoadError", "ConfigError", "GatewayError", "HaltServer", "__version__"]
