"""One GET of a JSON document from a discovery source, bounded whatever the
source does: the standard library only (discovery needs no HTTP client).

- One deadline for the whole request: every blocking call (connect, the TLS
  handshake, each read of the headers and the body) waits at most until it, so
  a source that drips a byte a second cannot stretch the request.  urllib's
  ``timeout`` bounds each socket read instead, which a drip resets for ever.
  Only the name resolution of the source's host is left to the system resolver.
- No redirect is followed: a redirect to a host of the private network would
  make this process a blind proxy for whoever answers (a 3xx is an error).
- No proxy from the environment, as the transports use ``trust_env=False``.
- The body is read in chunks up to a bound (a larger ``Content-Length`` is refused
  before a byte of it is read), then parsed counting every value it builds: past
  a bound the parse stops, so memory stays proportional to the bounds whatever the
  document nests (15 MB of ``{}`` entries would otherwise cost over 400 MiB).
"""

from __future__ import annotations

import http.client
import json
import json.decoder
import json.scanner
import math
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from ._addresses import ascii_host

_CHUNK = 64 * 1024
_HEADERS = {"Accept": "application/json", "User-Agent": "gonka-pool", "Connection": "close"}


class FetchError(Exception):
    """The source could not be read, or answered what discovery will not take."""


class DeadlinePassed(FetchError):
    """The request's deadline passed before the source finished answering."""


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline passed")
    return left


class _Deadlined:
    """Every blocking call waits at most until ``deadline``: a socket's (and a TLS
    socket's) reads and writes, which http.client makes one by one."""

    deadline = math.inf

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        self.settimeout(_time_left(self.deadline))  # type: ignore[attr-defined]
        return super().recv_into(*args, **kwargs)  # type: ignore[misc]

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        self.settimeout(_time_left(self.deadline))  # type: ignore[attr-defined]
        return super().recv(*args, **kwargs)  # type: ignore[misc]

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self.settimeout(_time_left(self.deadline))  # type: ignore[attr-defined]
        super().sendall(*args, **kwargs)  # type: ignore[misc]


class _DeadlineSocket(_Deadlined, socket.socket):
    """A socket whose every blocking call waits at most until ``deadline``."""


class _DeadlineSSLSocket(_Deadlined, ssl.SSLSocket):
    """``_DeadlineSocket`` over TLS (``SSLContext.sslsocket_class``)."""


def _connect(host: str, port: int, deadline: float) -> _DeadlineSocket:
    """A connection to ``host``, trying each address as ``socket.create_connection``
    does, but all of them within one deadline."""
    error: OSError | None = None
    for family, kind, proto, _name, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = _DeadlineSocket(family, kind, proto)
        sock.deadline = deadline
        try:
            sock.settimeout(_time_left(deadline))
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            if isinstance(exc, TimeoutError):
                break
        else:
            return sock
    raise error or OSError(f"{host} resolves to no address")


def _open(url: str, deadline: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    host = ascii_host(parts.hostname or "")
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    sock: socket.socket = _connect(host, port, deadline)
    connection: http.client.HTTPConnection
    if https:
        context = ssl.create_default_context()
        context.sslsocket_class = _DeadlineSSLSocket
        try:
            # The handshake runs inside wrap_socket, bounded as one call by the timeout set here.
            sock.settimeout(_time_left(deadline))
            tls = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        if isinstance(tls, _DeadlineSSLSocket):
            tls.deadline = deadline
        connection = http.client.HTTPSConnection(host, port, context=context)
        sock = tls
    else:
        connection = http.client.HTTPConnection(host, port)
    connection.sock = sock  # already connected: http.client sends over it
    return connection


def fetch(url: str, deadline: float, max_bytes: int) -> bytearray:
    """The body of ``GET url`` (2xx only), at most ``max_bytes``, by ``deadline``
    (a ``time.monotonic()`` instant)."""
    try:
        connection = _open(url, deadline)
    except (OSError, ValueError) as exc:
        raise _failure(exc, deadline) from None
    try:
        parts = urlsplit(url)
        connection.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=_HEADERS)
        response = connection.getresponse()
        if 300 <= response.status < 400:
            raise FetchError(f"answered HTTP {response.status}, a redirect, which discovery does not follow")
        if not 200 <= response.status < 300:
            raise FetchError(f"answered HTTP {response.status}")
        if response.length is not None and response.length > max_bytes:
            raise FetchError(f"sent more than {max_bytes} bytes")
        body = bytearray()
        while True:
            chunk = response.read(min(_CHUNK, max_bytes + 1 - len(body)))
            if not chunk:
                break
            body += chunk
            if len(body) > max_bytes:
                raise FetchError(f"sent more than {max_bytes} bytes")
        return body  # not bytes(body): a copy would double the peak
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _failure(exc, deadline) from None
    finally:
        connection.close()


def _failure(exc: Exception, deadline: float) -> FetchError:
    if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
        # A read cut short by the deadline may surface as a closed connection.
        return DeadlinePassed("did not answer in time")
    return FetchError(f"failed: {type(exc).__name__}: {exc}")


class TooManyValues(ValueError):
    """A JSON document that builds more values than discovery takes."""


class _Stop(Exception):
    pass


def parse_json(body: bytearray, max_values: int) -> Any:
    """``body`` as JSON, refused (``TooManyValues``) once it has built ``max_values``
    values: objects, arrays, strings and numbers are counted as the parser makes
    them, so a refused document never exists whole in memory.  Empties ``body``
    once decoded, so that its bytes and the values never coexist.

    The standard library's pure-Python scanner, since the C one calls no hook for
    arrays or strings; 0.1 s for 10,000 participants (4.5 MB) on 3.11 here, and
    discovery parses one document every few minutes."""
    count = 0

    def counted(make: Any) -> Any:
        def counting(*args: Any) -> Any:
            nonlocal count
            count += 1
            if count > max_values:
                raise _Stop
            return make(*args)

        return counting

    decoder = json.JSONDecoder()
    decoder.parse_object = counted(json.decoder.JSONObject)  # type: ignore[attr-defined]
    decoder.parse_array = counted(json.decoder.JSONArray)  # type: ignore[attr-defined]
    decoder.parse_string = counted(json.decoder.scanstring)  # type: ignore[attr-defined]
    decoder.parse_int = counted(int)
    decoder.parse_float = counted(float)
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    try:
        text = body.decode("utf-8")
        body.clear()
        return decoder.decode(text)
    except _Stop:
        raise TooManyValues(f"more than {max_values} JSON values") from None
    except (UnicodeDecodeError, RecursionError):
        raise ValueError("not JSON") from None
