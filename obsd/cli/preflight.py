"""``check-config``'s second look: the files a config names, and (on request) its ports.

Loading a config checks its shape; these checks look at this machine: every
``*_file`` setting (CA bundles, client certificates, keys) and every TLS file
in an ``ssl:`` listener must be a readable file, the data directory and each
file output's directory must be writable, and with ``--bind-test`` every
``tcp``/``udp`` port must be free (bound for an instant on the configured
address, then closed).  Nothing is left open or written (a directory is made
and removed at once where one must be creatable).
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from obsd.config.model import ObsdConfig
from obsd.net.endpoints import DATAGRAM_TYPES, STREAM_TYPES, Listener, parse_listener

#: options of Twisted's ``ssl:`` endpoint that name files or directories
_SSL_FILES = ("privateKey", "certKey", "extraCertChain", "dhParameters")
_SSL_DIRS = ("caCertsDir",)


def _settings(value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """Every (dotted path, key, value) under an attrs config, depth first."""
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        where = f"{path}.{field.name}"
        if attrs.has(type(item)):
            yield from _settings(item, where)
        else:
            yield where, field.name, item


def _components(config: ObsdConfig) -> Iterator[tuple[str, Any]]:
    for name, in_cfg in config.inputs.items():
        yield f"inputs.{name}", in_cfg
    for name, out_cfg in config.outputs.items():
        yield f"outputs.{name}", out_cfg


def _resolve(config: ObsdConfig, text: str) -> Path:
    path = Path(os.path.normpath(Path(text).expanduser()))
    if not path.is_absolute() and config.path:
        return Path(os.path.normpath(Path(config.path).parent / path))
    return path


def _readable_file(path: Path) -> str | None:
    if not path.exists():
        return f"{str(path)!r} does not exist"
    if not path.is_file():
        return f"{str(path)!r} is not a file"
    if not os.access(path, os.R_OK):
        return f"{str(path)!r} is not readable"
    return None


def _writable_dir(path: Path) -> str | None:
    """A directory obsd can write in, or create (its nearest existing parent is writable)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{str(probe)!r} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{str(probe)!r} is not writable"
    # root passes every access() check, even on /proc: make and remove a directory
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".obsd-check-", dir=probe))
    except OSError as exc:
        return f"cannot create directories in {str(probe)!r}: {exc.strerror}"
    return None


def listeners(config: ObsdConfig) -> Iterator[tuple[str, Listener]]:
    """Every listener of the config, with its key path."""
    for i, description in enumerate(config.http.listen):
        yield f"http.listen[{i}]", parse_listener(description, STREAM_TYPES)
    for name, cfg in config.inputs.items():
        for i, description in enumerate(getattr(cfg, "listen", [])):
            allowed = STREAM_TYPES | DATAGRAM_TYPES
            yield f"inputs.{name}.listen[{i}]", parse_listener(description, allowed)


def file_problems(config: ObsdConfig) -> list[str]:
    """Named files that are missing or unreadable, directories that are not writable."""
    problems = []
    problem = _writable_dir(_resolve(config, config.daemon.data_dir))
    if problem:
        problems.append(f"daemon.data_dir: {problem}")
    for where, cfg in _components(config):
        for path, key, value in _settings(cfg, where):
            if key.endswith("_file") and isinstance(value, str) and value:
                problem = _readable_file(_resolve(config, value))
                if problem:
                    problems.append(f"{path}: {problem}")
        if where.startswith("outputs.") and cfg.type == "file" and getattr(cfg, "path", ""):
            problem = _writable_dir(_resolve(config, cfg.path).parent)
            if problem:
                problems.append(f"{where}.path: {problem}")
    for where, listener in listeners(config):
        if listener.type != "ssl":
            continue
        for option in _SSL_FILES:
            if listener.options.get(option):
                problem = _readable_file(_resolve(config, listener.options[option]))
                if problem:
                    problems.append(f"{where}: {option}: {problem}")
        for option in _SSL_DIRS:
            value = listener.options.get(option)
            if value and not _resolve(config, value).is_dir():
                problems.append(f"{where}: {option}: {value!r} is not a directory")
    return problems


def bind_problems(config: ObsdConfig) -> list[str]:
    """Ports that cannot be bound now (in use, or not allowed): bind each, then close it."""
    problems = []
    for where, listener in listeners(config):
        if listener.family not in ("tcp", "udp") or listener.port == 0:
            continue
        problem = try_bind(listener)
        if problem:
            problems.append(f"{where}: {listener.description!r}: {problem}")
    return problems


def try_bind(listener: Listener) -> str | None:
    """Bind ``listener``'s address and port for an instant; why not, or None."""
    address = listener.address or ("::" if listener.type == "tcp6" else "0.0.0.0")
    try:
        infos = socket.getaddrinfo(
            address,
            listener.port,
            type=socket.SOCK_DGRAM if listener.family == "udp" else socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
    except OSError as exc:
        return f"cannot resolve {address!r}: {exc}"
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if kind == socket.SOCK_STREAM:  # as Twisted does: TIME_WAIT does not block a restart
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"port {listener.port} is in use on {address}"
        if exc.errno == errno.EACCES:
            return f"not allowed to bind port {listener.port} (ports below 1024 need privileges)"
        return f"cannot bind {address}:{listener.port}: {exc.strerror}"
    finally:
        sock.close()
    return None
