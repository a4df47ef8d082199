"""The directories a generation of workers runs in: ``--chdir`` and ``--app-dir`` as given,
resolved anew on every reload.

Release-directory deploys (Capistrano, Deployer, ansistrano) keep ``releases/N`` side by side
and flip a ``current`` symlink atomically; ``SIGHUP`` must then load the release the link
names now. ``chdir(2)`` resolves a symlink once, so the master keeps the paths *as given*
and ``ReleaseDirs.follow`` (called on each reload) enters ``--chdir`` again and resolves
``--app-dir`` again, relative to it. Each generation gets the real paths of its release
(``Resolved``): a worker imports from its own release even if the link flips while it runs
(a lazy import never mixes two releases), and a worker of an older generation can tell
that its release is no longer the current one (``moved``, used by gateway/codewatch.py).

Without ``--chdir``, a master started in a symlinked directory (systemd's
``WorkingDirectory=``, a shell ``cd current``) follows ``$PWD`` when it names the same
directory as ``os.getcwd()`` (as gunicorn does): the path the user gave is the link, not
the release it pointed to at start.

The arbiter calls ``pin_worker`` in each forked worker: it records the release the worker
belongs to (read by ``moved``) and drops earlier releases from ``sys.path`` (``python -m``
puts the start directory there, which is the release current at start).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError

logger = logging.getLogger("gateway.error")


@dataclass(frozen=True)
class Resolved:
    """The real paths of one generation's release."""

    cwd: str
    app_dir: str


def logical_cwd(environ: Mapping[str, str] | None = None) -> str | None:
    """``$PWD`` when it names the working directory (through a symlink or not), else None."""
    env = os.environ if environ is None else environ
    pwd = env.get("PWD")
    if not pwd or not os.path.isabs(pwd):
        return None
    try:
        here, there = os.stat("."), os.stat(pwd)
    except OSError:
        return None
    return pwd if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino) else None


class ReleaseDirs:
    """``--chdir`` (or ``$PWD``) and ``--app-dir`` as given, and their current resolution."""

    def __init__(self, chdir: str | None, app_dir: str, environ: Mapping[str, str] | None = None) -> None:
        self.explicit = bool(chdir)
        self.chdir = os.path.abspath(chdir) if chdir else logical_cwd(environ)
        self.app_dir = app_dir
        self._earlier: set[str] = set()
        try:
            self.current = self._enter()
        except OSError as exc:
            raise ConfigError(f"cannot enter --chdir {chdir}: {exc.strerror}") from None

    def _enter(self) -> Resolved:
        if self.chdir:
            os.chdir(self.chdir)
        base = self.chdir or os.getcwd()
        return Resolved(os.getcwd(), os.path.realpath(os.path.join(base, self.app_dir)))

    def follow(self) -> bool:
        """Enter the directories again (reload); True when the release changed. When the
        paths cannot be entered (a link to a removed release), the current one is kept."""
        try:
            resolved = self._enter()
        except OSError as exc:
            logger.error(
                "reload: cannot enter %s (%s); generation keeps %s",
                self.chdir,
                exc.strerror,
                self.current.cwd,
            )
            os.chdir(self.current.cwd)
            return False
        if resolved == self.current:
            return False
        old, self.current = self.current, resolved
        self._earlier.update({old.cwd, old.app_dir} - {resolved.cwd, resolved.app_dir})
        what = self.chdir if old.cwd != resolved.cwd else self.app_dir
        new = resolved.cwd if old.cwd != resolved.cwd else resolved.app_dir
        was = old.cwd if old.cwd != resolved.cwd else old.app_dir
        logger.info("reload: %s now resolves to %s (was %s)", what, new, was)
        return True

    def pin_worker(self) -> None:
        """In a forked worker: remember its release, drop earlier releases from sys.path."""
        global _worker
        _worker = (self, self.current)
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in self._earlier]

    def where_now(self) -> Resolved:
        """Where the given paths lead now (without entering them)."""
        base = self.chdir or os.getcwd()
        cwd = os.path.realpath(base) if self.chdir else os.getcwd()
        return Resolved(cwd, os.path.realpath(os.path.join(base, self.app_dir)))


_worker: tuple[ReleaseDirs, Resolved] | None = None


def moved() -> str | None:
    """In a worker: a description when its release is no longer the one the given paths
    name (the ``current`` link was flipped since it started), else None."""
    if _worker is None:
        return None
    dirs, mine = _worker
    if not dirs.chdir and not os.path.isabs(dirs.app_dir):
        return None  # relative to a working directory that cannot move
    now = dirs.where_now()
    if now.app_dir == mine.app_dir:
        return None
    given = os.path.normpath(os.path.join(dirs.chdir or "", dirs.app_dir))
    return f"release {given} now resolves to {now.app_dir} (this worker imported {mine.app_dir})"


__all__ = ["ReleaseDirs", "Resolved", "logical_cwd", "moved"]
