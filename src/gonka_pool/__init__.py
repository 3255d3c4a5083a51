"""gonka-pool: a lock-free round-robin endpoint pool with fail-skip cooldowns.

    >>> from gonka_pool import EndpointPool, GonkaEndpoint
    >>> pool = EndpointPool([GonkaEndpoint("https://n1.example", "a1"),
    ...                      GonkaEndpoint("https://n2.example", "a2")])
    >>> idx, endpoint = pool.next_indexed()
    >>> pool.mark_failed(endpoint, 30.0)      # skip it for 30 s
    True
    >>> pool.next() != endpoint
    True

The selection core is C (``_pool.pyx``); where it cannot load, or with
``GONKA_POOL_NO_EXTENSIONS=1`` set, the pure-Python twin (``_pool_py.py``) serves
the same API.  ``IMPLEMENTATION`` says which one is in use: ``"c"`` or ``"python"``.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Literal

from ._endpoint import GonkaEndpoint
from ._report import EndpointState
from ._transport import RoutingError

__all__ = ["IMPLEMENTATION", "EndpointPool", "EndpointState", "GonkaEndpoint", "Lease", "RoutingError"]
__version__ = "0.1.0"

_NO_EXTENSIONS = bool(os.environ.get("GONKA_POOL_NO_EXTENSIONS")) or (sys.implementation.name != "cpython")

# The one place that picks the implementation: no other module imports _pool.
if TYPE_CHECKING:
    # Type checkers see one typed surface, the C core's stub (_pool.pyi), which the
    # twin mirrors; without this they would see whichever branch they read last.
    from ._pool import EndpointPool, Lease

    IMPLEMENTATION: Literal["c", "python"]
elif _NO_EXTENSIONS:
    from ._pool_py import EndpointPool, Lease

    IMPLEMENTATION = "python"
else:
    try:
        from ._pool import EndpointPool, Lease

        IMPLEMENTATION = "c"
    except ImportError:  # no wheel for this platform, or a broken build
        from ._pool_py import EndpointPool, Lease

        IMPLEMENTATION = "python"
