"""What ``EndpointPool`` adds on top of either core: validation at construction, repr.

Nothing here runs per selection: ``EndpointPool`` subclasses the core without
overriding ``next``, ``next_indexed`` or ``mark_failed``, so those resolve straight
to the core's methods (a C method descriptor when the extension is loaded).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._endpoint import GonkaEndpoint

__all__ = ["PoolFacade", "collect_endpoints"]

_REPR_LIMIT = 8


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

    def __new__(cls, endpoints: Iterable[GonkaEndpoint]):
        return super().__new__(cls, collect_endpoints(endpoints))  # type: ignore[call-arg]

    def __repr__(self) -> str:
        shown = ", ".join(repr(node) for node in self.endpoints[:_REPR_LIMIT])  # type: ignore[attr-defined]
        hidden = len(self) - _REPR_LIMIT  # type: ignore[arg-type]
        if hidden > 0:
            shown += f", ... ({hidden} more)"
        return f"{type(self).__name__}([{shown}])"
