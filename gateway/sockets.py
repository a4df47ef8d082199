"""Listening sockets: parse bind addresses, bind TCP and unix sockets, adopt inherited ones.

Supported: ``host:port``, ``[v6]:port``, ``unix:/path`` (mode and owner settable, never
world-writable by default, a stale socket file from a dead server removed safely),
``fd://N``, systemd socket activation (LISTEN_FDS/LISTEN_PID) and a listening socket on
fd 0 (the FCGI_LISTENSOCK_FILENO convention of mod_fcgid and spawn-fcgi).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import socket
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import orphans
from .errors import BindError, ConfigError

if TYPE_CHECKING:
    import ipaddress

SD_LISTEN_FDS_START = 3

#: (path, inode) of the unix socket files bind_socket created in this process: only these
#: are removed at exit (never a socket file handed over by systemd or another server).
_created_unix_sockets: set[tuple[str, int]] = set()


@dataclass(frozen=True)
class BindSpec:
    kind: str  # "tcp" | "unix" | "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bind(text: str) -> BindSpec:
    text = text.strip()
    if not text:
        raise ConfigError("empty bind address; use HOST:PORT, [::1]:PORT, unix:/PATH or fd://N")
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ConfigError("unix: bind needs a path, e.g. unix:/run/app.sock")
        return BindSpec("unix", path=os.path.abspath(path))
    if text.startswith("fd://"):
        digits = text[5:]
        if not digits.isascii() or not digits.isdigit():
            raise ConfigError(f"invalid file descriptor in {text!r}")
        return BindSpec("fd", fd=int(digits))
    if text.startswith("/"):
        return BindSpec("unix", path=text)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"invalid IPv6 bind {text!r}; use [::1]:9000")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, "9000"
        elif ":" in host:
            raise ConfigError(f"invalid bind {text!r}; put an IPv6 address in brackets: [::1]:9000")
    try:
        port_no = int(port)
    except ValueError:
        raise ConfigError(f"invalid port in bind {text!r}") from None
    if not 0 <= port_no <= 65535:
        raise ConfigError(f"port out of range in bind {text!r}")
    return BindSpec("tcp", host=host or "127.0.0.1", port=port_no)


def _remove_stale_unix_socket(path: str, orphan_wait_s: float = 0.0) -> None:
    """Unlink a socket file nobody listens on. When its listeners are the orphaned workers
    of a dead master, wait up to ``orphan_wait_s`` for them to exit (gateway/orphans.py)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        listener = orphans.listener_pid(probe)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: a stale file left by a dead server
        return
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        raise BindError(f"cannot probe existing socket {path}: {exc}") from exc
    finally:
        probe.close()
    if orphans.wait_if_orphaned(path, listener, orphan_wait_s):
        _remove_stale_unix_socket(path)  # released: now a stale file
        return
    who = f" (pid {listener})" if listener else ""
    raise BindError(f"another server{who} is already listening on {path}")


def _chown(path: str, owner: str) -> None:
    user, _, group = owner.partition(":")
    try:
        uid = pwd.getpwnam(user).pw_uid if user else -1
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError as exc:
        raise ConfigError(f"unknown socket owner {owner!r}: {exc}") from None
    os.chown(path, uid, gid)


def bind_socket(
    spec: BindSpec,
    *,
    backlog: int = 2048,
    mode: int = 0o660,
    owner: str | None = None,
    orphan_wait_s: float = 0.0,
) -> socket.socket:
    """Create, bind and listen. The caller owns the returned socket."""
    if spec.kind == "fd":
        return adopt_fd(spec.fd)
    if spec.kind == "unix":
        _remove_stale_unix_socket(spec.path, orphan_wait_s)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o777 & ~mode)
        try:
            sock.bind(spec.path)
        except OSError as exc:
            sock.close()
            raise BindError(f"cannot bind unix:{spec.path}: {exc.strerror}") from exc
        finally:
            os.umask(old_umask)
        os.chmod(spec.path, mode)
        _created_unix_sockets.add((spec.path, os.lstat(spec.path).st_ino))
        if owner:
            _chown(spec.path, owner)
    else:
        family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            try:
                sock.bind((spec.host, spec.port))
            except OSError as exc:  # in use by a dead master's workers: wait for them once
                if exc.errno != errno.EADDRINUSE or not orphans.wait_if_tcp_orphaned(
                    spec.host, spec.port, orphan_wait_s
                ):
                    raise
                sock.bind((spec.host, spec.port))
        except OSError as exc:
            sock.close()
            held = orphans.tcp_holder_pids(spec.host, spec.port) if exc.errno == errno.EADDRINUSE else []
            who = f" (held by pids {', '.join(map(str, held))})" if held else ""
            raise BindError(f"cannot bind {spec}: {exc.strerror}{who}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.listen(backlog)
    return sock


def adopt_fd(fd: int) -> socket.socket:
    """A listening socket inherited on ``fd``; BindError when it is not one."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"fd {fd} is not a socket: {exc.strerror}") from exc
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if not listening or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindError(f"fd {fd} is not a listening stream socket")
    return sock


def systemd_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """Sockets passed by systemd socket activation (LISTEN_FDS for this pid), else []."""
    env = os.environ if environ is None else environ
    # Like sd_listen_fds(): the variables are for us only when LISTEN_PID names this
    # process; a LISTEN_FDS without LISTEN_PID (leaked from some parent) is ignored.
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    socks = [adopt_fd(SD_LISTEN_FDS_START + i) for i in range(count)]
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socks


def fd0_socket() -> socket.socket | None:
    """fd 0 when it is a listening socket (mod_fcgid / spawn-fcgi), else None."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return None
    if not stat.S_ISSOCK(mode):
        return None
    try:
        return adopt_fd(0)
    except BindError:
        return None


def check_user_group(user: str | None, group: str | None) -> None:
    """ConfigError unless ``--user``/``--group`` name existing accounts."""
    try:
        if user:
            pwd.getpwnam(user)
        if group:
            grp.getgrnam(group)
    except KeyError as exc:
        raise ConfigError(f"unknown user or group {exc}") from None


def parse_networks(items: tuple[str, ...] | list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``--allowed-clients`` entries as networks (a bare address is a /32 or /128)."""
    if not items:
        return []
    import ipaddress  # only with --allowed-clients: not resident in every worker

    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"invalid address or network in --allowed-clients: {item!r}") from None
    return nets


class ClientFilter:
    """Decides whether a TCP peer may talk to us (unix sockets are guarded by file mode)."""

    def __init__(self, items: tuple[str, ...]) -> None:
        self.networks = parse_networks(items)
        self._cache: dict[str, bool] = {}

    def allowed(self, peer: Any) -> bool:
        if not isinstance(peer, tuple) or not peer:
            return True  # unix socket peer
        host = peer[0]
        verdict = self._cache.get(host)
        if verdict is None:
            import ipaddress

            try:
                addr = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                verdict = False
            else:
                if addr.version == 6 and addr.ipv4_mapped is not None:
                    addr = addr.ipv4_mapped
                verdict = any(addr in net for net in self.networks)
            if len(self._cache) < 4096:
                self._cache[host] = verdict
        return verdict


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    return f"{name[0]}:{name[1]}"


def create_sockets(
    binds: tuple[str, ...],
    *,
    backlog: int,
    mode: int,
    owner: str | None,
    use_inherited: bool = True,
    orphan_wait_s: float = 0.0,
) -> list[socket.socket]:
    """Inherited sockets when present (systemd, then fd 0), else the configured binds
    (``orphan_wait_s``: see ``_remove_stale_unix_socket``)."""
    if use_inherited:
        inherited = systemd_sockets()
        if inherited:
            return inherited
        fd0 = fd0_socket()
        if fd0 is not None:
            return [fd0]
    socks: list[socket.socket] = []
    try:
        for text in binds:
            spec = parse_bind(text)
            sock = bind_socket(spec, backlog=backlog, mode=mode, owner=owner, orphan_wait_s=orphan_wait_s)
            socks.append(sock)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def cleanup_unix_sockets(socks: list[socket.socket]) -> None:
    """Remove the socket files this process created (call it before closing them): not
    inherited ones (systemd's), nor a file another server has bound at the same path since."""
    for s in socks:
        if s.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                path = s.getsockname()
                if not path or not isinstance(path, str):
                    continue
                key = (path, os.lstat(path).st_ino)
                if key in _created_unix_sockets:
                    _created_unix_sockets.discard(key)
                    os.unlink(path)


def _socket_file(sock: socket.socket) -> tuple[str, int] | None:
    """(path, inode) of the file a bound unix socket names now, or None."""
    if sock.family != socket.AF_UNIX or sock.fileno() < 0:
        return None
    with contextlib.suppress(OSError):
        path = sock.getsockname()
        if path and isinstance(path, str):
            return path, os.lstat(path).st_ino
    return None


def owned_socket_files(socks: list[socket.socket]) -> list[socket.socket]:
    """Those of ``socks`` whose socket files ``cleanup_unix_sockets`` would remove."""
    return [s for s in socks if _socket_file(s) in _created_unix_sockets]


def set_socket_files_owned(socks: list[socket.socket], owned: bool) -> None:
    """Make the socket files of ``socks`` this process's to remove at exit, or no longer:
    an upgrade in place hands them to the new master (gateway/upgrade.py)."""
    for s in socks:
        if (key := _socket_file(s)) is not None:
            if owned:
                _created_unix_sockets.add(key)
            else:
                _created_unix_sockets.discard(key)
