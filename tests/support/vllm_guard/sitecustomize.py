"""Network guard for the vLLM test server (imported at start-up by every Python process it runs,
through PYTHONPATH): a non-loopback connect or DNS lookup fails, and is appended to the file
named by FLOTILLA_NETWORK_LOG so the tests can see it was tried."""

import ipaddress
import os
import socket

_LOG = os.environ.get("FLOTILLA_NETWORK_LOG")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _is_loopback(host):
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host)
    if host in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified  # 0.0.0.0: a local bind check, not a connection


def _guard(what, host):
    if _is_loopback(host):
        return
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {what}({host!r})\n")
    raise OSError(f"network guard: non-loopback access refused: {what}({host!r})")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _checked_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _guard("connect", address[0])
    return _connect(self, address)


def _checked_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _guard("connect_ex", address[0])
    return _connect_ex(self, address)


def _checked_getaddrinfo(host, *args, **kwargs):
    _guard("getaddrinfo", host)
    return _getaddrinfo(host, *args, **kwargs)


if _LOG:
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = _checked_connect, _checked_connect_ex, _checked_getaddrinfo
