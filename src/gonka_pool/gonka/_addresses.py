"""Where a third party may send this process's requests: what counts as this
machine or a private network, checked twice.

- At discovery, on a participant's host as the HTTP client will connect to it:
  IDNA-mapped to ASCII first (``127。0。0。1`` is ``127.0.0.1`` to httpx), then read
  the way the system resolver reads a literal (``127.1``, ``0x7f000001``), an
  IPv4 address inside an IPv6 one in every form (``::ffff:a.b.c.d``,
  ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo).
- At connect time, on every address a name resolves to (``127.0.0.1.nip.io``):
  a network backend under the httpx2 transport that resolves the name itself,
  refuses the internal addresses and connects only to the addresses it checked,
  so a second answer of the resolver cannot differ from the first.

Whether private addresses are allowed is the user's choice, never inferred:
``allow_private=True`` or ``GONKA_ALLOW_PRIVATE=1``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from typing import Any

ENV_ALLOW_PRIVATE = "GONKA_ALLOW_PRIVATE"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
# A host name once mapped to ASCII: letters, digits, '-', '_' and dots, as DNS
# names are; anything else (a '%', a space) is no name a node can have.
_HOST_NAME = re.compile(r"[a-z0-9_\-.]+")
# NAT64 prefixes: the well-known one embeds the IPv4 address in its last 32 bits;
# the local-use one (RFC 8215) is this site's by definition, whatever it embeds.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
# IPv4-compatible (::a.b.c.d, deprecated) and SIIT's IPv4-translated (::ffff:0:a.b.c.d).
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def allow_private_from(allow_private: object) -> bool:
    """The user's choice: ``allow_private`` when given, else ``GONKA_ALLOW_PRIVATE``
    (``1``/``true``/``yes``/``on``), else False."""
    if allow_private is not None:
        if not isinstance(allow_private, bool):
            raise TypeError(f"allow_private must be True, False or None, not {type(allow_private).__name__}")
        return allow_private
    value = os.environ.get(ENV_ALLOW_PRIVATE, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    # A typo must not leave the user believing private nodes are allowed, or not.
    raise ValueError(f"{ENV_ALLOW_PRIVATE} must be 1 or 0 (true/false, yes/no, on/off), not {value[:20]!r}")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that ``address`` reaches, by mapping or through a
    translator or relay (NAT64, 6to4), or None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _COMPATIBLE or address in _TRANSLATED:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def internal_address(address: Address) -> bool:
    """Whether a request to ``address`` stays on this machine or a private network:
    not global (loopback, private, link-local such as 169.254.169.254, shared,
    reserved), multicast, or an IPv6 address that carries such an IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return True
        if address.teredo is not None and internal_address(address.teredo[1]):
            return True  # the client's address (Python reads 2001::/32 as not global anyway)
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            # The IPv4 address decides, whatever the Python version thinks of the
            # prefix (3.13 reads all of 2002::/16 as not global, 3.11 as global).
            return internal_address(embedded)
    return not address.is_global or address.is_multicast


def ascii_host(host: str) -> str:
    """``host`` as the HTTP client sends it to the resolver: lower case, IDNA (UTS
    46) mapped to ASCII, with the dots of other scripts (U+3002, U+FF0E, U+FF61)
    read as dots.  Raises ValueError for a host no client would connect to."""
    host = host.lower()
    if not host.isascii():
        try:
            import idna  # httpx and httpx2 map hosts with it

            host = idna.encode(host, uts46=True).decode("ascii")
        except ImportError:  # pragma: no cover - idna comes with httpx2
            host = host.encode("idna").decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"not an IDNA host name ({exc})") from None
    return host


def internal_host(host: str | None) -> bool:
    """Whether ``host`` (a URL's host, already ASCII: see ``ascii_host``) names this
    machine or a private network by itself: a ``localhost`` name or an IP literal
    that ``internal_address`` refuses, in any spelling a resolver takes (``127.1``,
    ``2130706433``, ``0x7f000001``, ``::ffff:10.0.0.1``).  A DNS name is not
    resolved here: what it points at can change after discovery, so the transport
    checks it again at connect time (``guard_transport``)."""
    if not host:
        return False
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: Address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        try:  # the forms inet_aton accepts, as getaddrinfo does
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return False
    return internal_address(address)


def host_name_or_literal(host: str) -> bool:
    """Whether an ASCII ``host`` is a DNS name or an IP literal (no '%', no space)."""
    return ":" in host or _HOST_NAME.fullmatch(host) is not None


def _checked_addresses(infos: list[Any], host: str, connect_error: type[Exception]) -> list[str]:
    """The addresses of ``infos`` (getaddrinfo's answer for ``host``), each once,
    or ``connect_error`` when one of them is internal."""
    found: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0])
        if internal_address(ipaddress.ip_address(text.partition("%")[0])):
            # One internal answer refuses the name: a resolver that mixes one in
            # is steering, and the public answers may be the decoy.
            raise connect_error(
                f"refused to connect to {host!r}: it resolves to {text}, on this machine or a private "
                f"network (allow_private=True or {ENV_ALLOW_PRIVATE}=1 allows it)"
            )
        if text not in found:
            found.append(text)
    if not found:
        raise connect_error(f"{host!r} resolves to no address")
    return found


class _GuardedBackend:
    """An httpcore2 network backend that connects only to public addresses."""

    def __init__(self, inner: Any, connect_error: type[Exception]) -> None:
        self._inner = inner
        self._connect_error = connect_error

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **options: Any) -> Any:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise self._connect_error(str(exc)) from exc
        error: Exception | None = None
        for address in _checked_addresses(infos, host, self._connect_error):
            try:
                return self._inner.connect_tcp(address, port, timeout=timeout, **options)
            except self._connect_error as exc:  # the next address, as create_connection tries them
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.connect_unix_socket(*args, **kwargs)  # a path the user configured (uds=)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncGuardedBackend:
    """The async ``_GuardedBackend`` (anyio resolves, under asyncio or trio)."""

    def __init__(self, inner: Any, connect_error: type[Exception]) -> None:
        self._inner = inner
        self._connect_error = connect_error

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, **options: Any) -> Any:
        import anyio

        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise self._connect_error(str(exc)) from exc
        error: Exception | None = None
        for address in _checked_addresses(list(infos), host, self._connect_error):
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, **options)
            except self._connect_error as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        return await self._inner.connect_unix_socket(*args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guard_transport(transport: Any) -> bool:
    """Make an ``httpx2.HTTPTransport`` / ``AsyncHTTPTransport`` without a proxy
    connect only to public addresses; True when it did.  Any other transport is
    left as it is: a proxy resolves and connects by its own rules, and a custom
    transport's connections are its own."""
    try:
        import httpcore2
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    # httpx2 keeps its connection pool in _pool and the pool its backend in
    # _network_backend (neither takes one as an argument); the test that connects
    # through a name resolving to 127.0.0.1 fails if either name ever changes.
    pool: Any = getattr(transport, "_pool", None)
    if type(pool) not in (httpcore2.ConnectionPool, httpcore2.AsyncConnectionPool):
        return False
    backend = pool._network_backend
    if isinstance(backend, (_GuardedBackend, _AsyncGuardedBackend)):
        return True
    guarded = _AsyncGuardedBackend if type(pool) is httpcore2.AsyncConnectionPool else _GuardedBackend
    pool._network_backend = guarded(backend, httpcore2.ConnectError)
    return True
