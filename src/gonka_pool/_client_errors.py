"""Which exceptions of the common HTTP clients are a node's fault, known by name:
``pool.call``/``acall`` judge them without importing httpx, httpx2 or aiohttp
(``_failover``'s ``judge_error``)."""

from __future__ import annotations

# The transport errors of httpx, httpx2 and aiohttp that are no OSError, by the
# (top-level package, qualified name) of a class in the exception's MRO, so that
# nothing is imported: the first class listed, from the most derived, decides
# whether the exception is the node's fault ("error"), a timeout ("timeout"), or
# the caller's ("caller": raised at once, as an unlisted exception is).  Only the
# top-level package is compared: httpx defines its classes in httpx._exceptions
# and renames their module "httpx"; aiohttp's live in aiohttp.client_exceptions.
# httpx / httpx2, the transports' own rule (_transport.py): every TransportError
# (refused, reset, a broken or truncated answer, a proxy that could not reach the
# node), TimeoutException a timeout; but a full local connection pool
# (PoolTimeout: no node was contacted), a request httpx refuses to send
# (LocalProtocolError: an illegal header, say) and a URL scheme it does not speak
# (UnsupportedProtocol) are the caller's; InvalidURL is no TransportError.
# aiohttp: ClientConnectionError (ServerDisconnectedError is the common one that
# is no OSError) and ClientPayloadError (a truncated or undecodable body, as
# httpx's RemoteProtocolError); ServerTimeoutError is also asyncio.TimeoutError,
# a timeout either way (builtins.TimeoutError from 3.11).  Its InvalidURL is the
# caller's.  An exception named in retry_on= or timeout_on= is the node's fault
# whatever this says, so a caller may still retry PoolTimeout, say.
_CLIENT_FAULTS: dict[tuple[str, str], str] = {
    **{
        (library, name): fault
        for library in ("httpx", "httpx2")
        for name, fault in (
            ("PoolTimeout", "caller"),
            ("LocalProtocolError", "caller"),
            ("UnsupportedProtocol", "caller"),
            ("TimeoutException", "timeout"),
            ("TransportError", "error"),
        )
    },
    ("aiohttp", "ServerTimeoutError"): "timeout",
    # aiohttp's total= timeout on 3.10, where asyncio's is no builtins.TimeoutError.
    ("asyncio", "TimeoutError"): "timeout",
    ("aiohttp", "ClientConnectionError"): "error",
    ("aiohttp", "ClientPayloadError"): "error",
}


def client_fault(exc: BaseException) -> str | None:
    """``"error"``, ``"timeout"`` or ``"caller"`` for an exception of httpx, httpx2
    or aiohttp (``_CLIENT_FAULTS``), or None for any other."""
    for cls in type(exc).__mro__:
        module = getattr(cls, "__module__", None)
        if isinstance(module, str):
            fault = _CLIENT_FAULTS.get((module.partition(".")[0], cls.__qualname__))
            if fault is not None:
                return fault
    return None
