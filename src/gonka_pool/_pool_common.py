"""The Python half both pool implementations share (the C core and the twin):
what ``EndpointPool`` does beyond selection, argument parsing and validation at
construction and update (returning the prepared membership, which each core
applies itself), repr, ``from_env``, and the fresh random start of a forked child.

Nothing here runs per selection.  ``EndpointPool`` is the C extension type itself
(not a Python subclass of it), so ``pool.next()`` is a call of the C method
descriptor on its own type, which CPython's specializing interpreter turns into
its fastest call; a Python subclass makes ``next()`` 1.35x slower on 3.11
(``benchmarks/subclass_call.py``), since that specialization requires the exact type.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable
from typing import Any, TypeVar

from ._convert import check_start, check_weights
from ._endpoint import GonkaEndpoint
from ._schedule import SchedulePlan, schedule_plan

__all__ = [
    "collect_endpoints",
    "constructor_arguments",
    "from_env",
    "pool_repr",
    "prepare",
    "prepare_update",
    "restart_at_random_after_fork",
]

_REPR_LIMIT = 8
T = TypeVar("T")


# EndpointPool's keywords and their defaults, as both cores take them.
_KEYWORD_DEFAULTS = {
    "weights": None,
    "start": "random",
    "base_cooldown": 30.0,
    "max_cooldown": 300.0,
    "shared": None,
    "shared_capacity": None,
    "balance": "peak_ewma",
}


def constructor_arguments(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any]:
    """``(endpoints, weights, start, base_cooldown, max_cooldown, shared, shared_capacity, balance)``
    from the arguments of ``name(endpoints, *, weights=None, start="random",
    base_cooldown=30.0, max_cooldown=300.0, shared=None, shared_capacity=None, balance="peak_ewma")``.

    Both cores parse with this, so a mistake reads the same on either and names the
    class, where Python's own messages would name ``__new__`` or ``__cinit__``."""
    if len(args) > 1:
        raise TypeError(
            f"{name}() takes 1 positional argument (the endpoints) but {len(args)} were "
            f"given; pass a list: {name}([ep1, ep2])"
        )
    for key in kwargs:
        if key != "endpoints" and key not in _KEYWORD_DEFAULTS:
            raise TypeError(
                f"{name}() got an unexpected keyword argument {key!r}; its keywords are "
                "weights, start, base_cooldown, max_cooldown, shared, shared_capacity and balance"
            )
    if args:
        if "endpoints" in kwargs:
            raise TypeError(f"{name}() got multiple values for argument 'endpoints'")
        endpoints = args[0]
    elif "endpoints" in kwargs:
        endpoints = kwargs["endpoints"]
    else:
        raise TypeError(f"{name}() missing 1 required argument: 'endpoints' (an iterable of GonkaEndpoint)")
    return (endpoints, *(kwargs.get(key, default) for key, default in _KEYWORD_DEFAULTS.items()))


def collect_endpoints(endpoints: Iterable[GonkaEndpoint]) -> tuple[GonkaEndpoint, ...]:
    """The endpoints as a non-empty tuple of ``GonkaEndpoint``, or a clear error."""
    if isinstance(endpoints, (str, bytes, bytearray, GonkaEndpoint)):
        raise TypeError(f"EndpointPool takes an iterable of GonkaEndpoint, not a single {type(endpoints).__name__}")
    try:
        iterator = iter(endpoints)
    except TypeError:
        raise TypeError(f"EndpointPool takes an iterable of GonkaEndpoint, not {type(endpoints).__name__}") from None
    nodes = tuple(iterator)  # an error raised while iterating is the caller's to see
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


def prepare(
    endpoints: Iterable[GonkaEndpoint], weights: Iterable[int] | None, start: object
) -> tuple[tuple[GonkaEndpoint, ...], tuple[int, ...] | None, SchedulePlan | None, int | None]:
    """Validate the constructor's arguments: (nodes, weights, schedule plan, start
    offset).  Each core lays out the plan's table itself, in its own language."""
    nodes = collect_endpoints(endpoints)
    checked = check_weights(weights, len(nodes))
    return nodes, checked, schedule_plan(checked), check_start(start)


def prepare_update(
    endpoints: Iterable[GonkaEndpoint], weights: Iterable[int] | None
) -> tuple[tuple[GonkaEndpoint, ...], tuple[int, ...] | None, SchedulePlan | None]:
    """Validate ``update()``'s arguments: the (nodes, weights, schedule plan) that
    the pool's ``_replace`` swaps in, the constructor's checks without a start."""
    nodes, checked, schedule, _ = prepare(endpoints, weights, 0)
    return nodes, checked, schedule


def pool_repr(pool: Any) -> str:
    shown = ", ".join(repr(node) for node in pool.endpoints[:_REPR_LIMIT])
    hidden = len(pool) - _REPR_LIMIT
    if hidden > 0:
        shown += f", ... ({hidden} more)"
    return f"{type(pool).__name__}([{shown}])"


def from_env(cls: type[T], var: str, options: dict[str, Any]) -> T:
    if not isinstance(var, str):
        raise TypeError(f"var must be a str, not {type(var).__name__}")
    text = os.environ.get(var)
    if text is None or not text.strip():
        state = "not set" if text is None else "empty"
        raise ValueError(f"environment variable {var} is {state}; expected comma-separated 'url;address' entries")
    entries = text.split(",")

    def entry_at(number: int) -> str:
        return f"environment variable {var}, entry {number} of {len(entries)} (counting from 1)"

    if "@" in text:
        # Refused before any entry is parsed: a ',' inside a password splits it into
        # entries before the '@', whose errors would quote the start of the password.
        number = next(n for n, entry in enumerate(entries, 1) if "@" in entry)
        raise ValueError(
            f"{entry_at(number)}: '@' is not allowed (user:password credentials in an "
            "endpoint URL would leak through repr and logs)"
        )
    endpoints = []
    for number, entry in enumerate(entries, 1):
        if not entry.strip():
            # A trailing or doubled ',' (a list built by a shell loop, an edited
            # line): skipped, as openai_client() and GonkaOpenAI skip it, so that one
            # GONKA_ENDPOINTS works with every entry point.  Numbers still count it.
            continue
        try:
            endpoints.append(GonkaEndpoint.parse(entry))
        except ValueError as exc:
            raise ValueError(f"{entry_at(number)}: {exc}") from None
    if not endpoints:
        raise ValueError(f"environment variable {var} holds only commas; expected 'url;address' entries between them")
    return cls(endpoints, **options)  # type: ignore[call-arg]


# The pools that start at random (start="random"), each moved to a fresh random start
# in a forked child.  gunicorn --preload builds the pool in the master and forks the
# workers: without this every worker would walk the nodes in the master's order, the
# same node at the same moment.  A pool with an explicit start= keeps it: its order
# is what the caller asked for, in every process.
_random_start_pools: weakref.WeakSet[Any] = weakref.WeakSet()
# WeakSet is pure Python, documented safe for no concurrent use: pools are built on
# any thread (and with the GIL off, at the same time).
_random_start_lock = threading.Lock()


def restart_at_random_after_fork(pool: Any) -> None:
    """Have ``pool._restart_at_random()`` called in every child forked from now on
    (the pool is held weakly)."""
    with _random_start_lock:
        _random_start_pools.add(pool)


def _restart_random_starts_in_child() -> None:
    """The ``os.register_at_fork`` hook, in the child, where only the forking thread
    runs: it takes no lock, since a thread that held one at the fork is gone for
    good (the registry's lock is replaced; a twin pool's own lock is not taken, so
    a pool whose lock was held stays as unusable as it was, but the fork goes on)."""
    global _random_start_lock
    _random_start_lock = threading.Lock()
    for pool in list(_random_start_pools):
        pool._restart_at_random()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_restart_random_starts_in_child)
