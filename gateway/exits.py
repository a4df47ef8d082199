"""The command line's exit statuses, and ``run_server``: serve a Config and map every
failure to its status. With gateway/cli.py this is the only place that decides exit codes;
it is kept apart from cli.py (and from click) so that ``python -m gateway`` can serve in a
process that never imported click (see gateway/__main__.py: neither the master nor its
workers hold click).
"""

from __future__ import annotations

import logging

from .arbiter import lifespan_error
from .config import Config
from .errors import AppLoadError, BindError, ConfigError, GatewayError, HaltServer
from .server import run

logger = logging.getLogger("gateway.error")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BIND = 3
EXIT_APP_LOAD = 4
EXIT_LIFESPAN = 5


def run_server(config: Config) -> int:
    """Serve ``config``; the exit status of the command."""
    try:
        run(config)
    except AppLoadError as exc:
        logger.error("cannot load the application: %s", exc)
        return EXIT_APP_LOAD
    except BindError as exc:
        logger.error("%s", exc)
        return EXIT_BIND
    except lifespan_error() as exc:
        logger.error("%s", exc)
        return EXIT_LIFESPAN
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return EXIT_CONFIG
    except HaltServer as exc:
        logger.error("%s", exc.reason)
        return exc.exit_status
    except GatewayError as exc:
        logger.error("%s", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK
