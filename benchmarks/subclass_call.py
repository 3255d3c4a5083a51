"""Why ``EndpointPool`` is the C type itself: ``next()`` on it vs on a Python subclass.

CPython specializes a method call only when the instance's type is exactly the type
that defines the method descriptor.  Interleaved rounds, medians, as a ratio.

    python benchmarks/subclass_call.py
"""

from __future__ import annotations

import statistics
import sys
import timeit

from gonka_pool import EndpointPool, GonkaEndpoint


class Subclass(EndpointPool):
    __slots__ = ()


def main() -> None:
    endpoints = [GonkaEndpoint(f"https://n{i}.example", f"a{i}") for i in range(8)]
    cases = {"EndpointPool": EndpointPool(endpoints), "a Python subclass": Subclass(endpoints)}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(15):
        for name, pool in cases.items():
            samples[name].append(timeit.timeit("pool.next()", globals={"pool": pool}, number=200_000))
    base = statistics.median(samples["EndpointPool"])
    print(f"Python {sys.version.split()[0]}; 15 interleaved rounds x 200000 calls of pool.next(), medians")
    for name, values in samples.items():
        print(f"  {name:18s} {statistics.median(values) / base:5.2f}x")


if __name__ == "__main__":
    main()
