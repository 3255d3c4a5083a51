"""Mistakes a user's type checker must catch: each line marked `# E: <code>` is the one
and only error mypy may report on it, and no other line may have one
(tests/typing/check.py compares them).  Never run, only checked."""

from __future__ import annotations

from gonka_pool import EndpointPool, GonkaEndpoint

pool = EndpointPool([GonkaEndpoint("https://n1.example", "gonka1node1")])
endpoint = pool.next()


def returns_str(endpoint: GonkaEndpoint) -> str:
    return endpoint.base_url


def f(endpoint: GonkaEndpoint) -> None:
    pass


pool.mark_failed(endpoint, "30")  # E: arg-type
x: int = pool.call(returns_str)  # E: assignment
pool.call(f, retrys=3)  # E: call-arg
