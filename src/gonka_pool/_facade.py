"""What ``EndpointPool`` adds on top of either core: validation at construction, repr,
``from_env``, and the failover loop as ``call`` / ``acall``.

Nothing here runs per selection: ``EndpointPool`` subclasses the core without
overriding ``next``, ``next_indexed`` or ``mark_failed``, so those resolve straight
to the core's methods (a C method descriptor when the extension is loaded).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from . import _failover
from ._endpoint import GonkaEndpoint
from ._policy import check_start, check_weights, smooth_schedule

__all__ = ["PoolFacade", "collect_endpoints"]

_REPR_LIMIT = 8
T = TypeVar("T")


def collect_endpoints(endpoints: Iterable[GonkaEndpoint]) -> tuple[GonkaEndpoint, ...]:
    """The endpoints as a non-empty tuple of ``GonkaEndpoint``, or a clear error."""
    if isinstance(endpoints, (str, bytes, bytearray, GonkaEndpoint)):
        raise TypeError(
            "EndpointPool takes an iterable of GonkaEndpoint, "
            f"not a single {type(endpoints).__name__}"
        )
    try:
        nodes = tuple(endpoints)
    except TypeError:
        raise TypeError(
            f"EndpointPool takes an iterable of GonkaEndpoint, not {type(endpoints).__name__}"
        ) from None
    if not nodes:
        raise ValueError("EndpointPool requires at least one node")
    for position, node in enumerate(nodes):
        if not isinstance(node, GonkaEndpoint):
            raise TypeError(
                f"EndpointPool item {position} must be a GonkaEndpoint, "
                f"not {type(node).__name__} (use GonkaEndpoint(url, address) "
                "or GonkaEndpoint.parse('url;address'))"
            )
    return nodes


class PoolFacade:
    """Mixed in before a core class: ``class EndpointPool(PoolFacade, Core)``."""

    __slots__ = ()

    def __new__(
        cls,
        endpoints: Iterable[GonkaEndpoint],
        *,
        weights: Iterable[int] | None = None,
        start: int | str = "random",
        base_cooldown: Any = 30.0,
        max_cooldown: Any = 300.0,
    ):
        nodes = collect_endpoints(endpoints)
        checked = check_weights(weights, len(nodes))
        return super().__new__(  # type: ignore[call-arg]
            cls, nodes, checked, smooth_schedule(checked), check_start(start),
            base_cooldown, max_cooldown,
        )

    def update(self, endpoints: Iterable[GonkaEndpoint], weights: Iterable[int] | None = None) -> None:
        """Replace the membership in one atomic step while other threads select.

        Nodes present before and after keep their deadlines and failure counts; a
        concurrent ``next()`` returns a node of the old set or of the new one.  An
        index from ``next_indexed()`` refers to the set in force when it was issued:
        after an update, mark by endpoint (``mark_failed(endpoint)``), which resolves
        against the current set.  Same validation as the constructor; on error the
        pool is unchanged.
        """
        nodes = collect_endpoints(endpoints)
        checked = check_weights(weights, len(nodes))
        self._replace(nodes, checked, smooth_schedule(checked))  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        shown = ", ".join(repr(node) for node in self.endpoints[:_REPR_LIMIT])  # type: ignore[attr-defined]
        hidden = len(self) - _REPR_LIMIT  # type: ignore[arg-type]
        if hidden > 0:
            shown += f", ... ({hidden} more)"
        return f"{type(self).__name__}([{shown}])"

    @classmethod
    def from_env(cls, var: str = "GONKA_ENDPOINTS"):
        """A pool from an environment variable of comma-separated ``url;address`` entries.

        The format gonka-openai reads; each entry goes through
        ``GonkaEndpoint.parse``, so a bad one raises the same error (an empty entry,
        e.g. from a trailing comma, is a bad one, as in gonka-openai)::

            GONKA_ENDPOINTS="https://node1.gonka.ai/v1;gonka1abc,https://node2.gonka.ai/v1;gonka1def"

        An unset or blank variable raises ValueError naming it.
        """
        if not isinstance(var, str):
            raise TypeError(f"var must be a str, not {type(var).__name__}")
        text = os.environ.get(var)
        if text is None or not text.strip():
            state = "not set" if text is None else "empty"
            raise ValueError(
                f"environment variable {var} is {state}; expected comma-separated "
                "'url;address' entries"
            )
        return cls(GonkaEndpoint.parse(entry) for entry in text.split(","))

    def call(
        self,
        fn: Callable[[GonkaEndpoint], T],
        *,
        attempts: int | None = None,
        cooldown: Any = _failover.DEFAULT_COOLDOWN,
        timeout_cooldown: Any = _failover.DEFAULT_TIMEOUT_COOLDOWN,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    ) -> T:
        """``fn(endpoint)`` on the next healthy node, failing over on ``retry_on``.

        At most ``attempts`` nodes (default ``min(len(pool), 3)``) are tried in
        round-robin order.  An exception in ``retry_on`` marks that node failed for
        ``cooldown`` seconds (``timeout_cooldown`` for a built-in ``TimeoutError``)
        and tries the next one; the last one is raised when the attempts run out.
        Any other exception is raised at once and marks nothing.  The first value
        ``fn`` returns is the result::

            reply = pool.call(lambda ep: requests.post(ep.base_url + "/chat/completions",
                                                       json=body, timeout=30).json(),
                              retry_on=(requests.ConnectionError, requests.Timeout))
        """
        return _failover.call(self, fn, attempts=attempts, cooldown=cooldown,
                              timeout_cooldown=timeout_cooldown, retry_on=retry_on)

    async def acall(
        self,
        afn: Callable[[GonkaEndpoint], Awaitable[T]],
        *,
        attempts: int | None = None,
        cooldown: Any = _failover.DEFAULT_COOLDOWN,
        timeout_cooldown: Any = _failover.DEFAULT_TIMEOUT_COOLDOWN,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    ) -> T:
        """``await afn(endpoint)`` with ``call``'s failover; cancellation is never retried."""
        return await _failover.acall(self, afn, attempts=attempts, cooldown=cooldown,
                                     timeout_cooldown=timeout_cooldown, retry_on=retry_on)
