"""fcgi-gateway: a FastCGI application server for ASGI and WSGI apps.

Public API: ``__version__`` and the error hierarchy. The command line is ``gateway.cli:main``
(``fcgi-gateway``); ``python -m gateway`` (``gateway.__main__:main``) runs the same command
with click kept out of the serving processes.
"""

from .errors import AppLoadError, ConfigError, GatewayError, HaltServer
from .speedups import install_import_switch

# Before any module that may be compiled with mypyc is imported (gateway/speedups.py).
install_import_switch()

__version__ = "0.1.0"

__all__ = ["AppLoadError", "ConfigError", "GatewayError", "HaltServer", "__version__"]
