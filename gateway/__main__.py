"""``python -m gateway`` and the ``fcgi-gateway`` command, with click kept out of the
serving processes.

Why: every page the master holds when it forks counts in the RSS of each worker, and click
with the option table is never used again once the options are parsed. Unloading click
after use does not give that memory back (it stays in pymalloc's arenas), so the command
line is parsed in a short-lived child process instead: it runs click (``gateway.cli``) as
the command would, and ``serve``, given a list as click's ``obj``, appends its Config there
instead of serving; the child sends that Config (its fields as a Python literal) back on a
pipe and exits. The parent, which never imported click, then serves it. Every other
command (``--help``, ``ping``, ``request``, ``check``...) and every usage error runs
entirely in the child; the parent exits with the child's status. The parent ignores SIGINT
while it waits (as ``os.system`` does): the child answers Ctrl-C the way the command always
did. tests/process/test_memory_footprint.py checks that no serving process imports click.
"""

from __future__ import annotations

import os
import signal
import sys

from .config import Config


def _parse_in_child() -> Config:
    """The Config ``serve`` built; exits with the child's status when it ran anything else."""
    read_fd, write_fd = os.pipe()
    previous = signal.getsignal(signal.SIGINT)  # None: not set from Python, left alone
    if previous is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:  # child: run click like the command does; SystemExit ends this process
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        os.close(read_fd)
        from . import cli

        handoff: list[Config] = []
        try:
            cli.main(obj=handoff)
        finally:
            if handoff:
                fields = {name: getattr(handoff[0], name) for name in Config.field_names()}
                with os.fdopen(write_fd, "w") as pipe:
                    pipe.write(repr(fields))
        sys.exit(0)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    code = os.waitstatus_to_exitcode(status)
    if not data or code != 0:
        sys.exit(code if code >= 0 else 128 - code)
    import ast

    return Config(**ast.literal_eval(data))


def main() -> None:
    from .exits import run_server  # before the fork: the child does not import it again
    from .log import configure
    from .upgrade import remember_start

    remember_start()  # SIGUSR2 runs this command again, from this directory
    config = _parse_in_child()
    configure(
        config.log_level,
        slow_log=config.slow_log,
        error_log=config.error_log,
        access_log=config.access_log,
        log_config=config.log_config,
    )
    sys.exit(run_server(config))


if __name__ == "__main__":
    main()
