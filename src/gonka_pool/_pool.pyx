# cython: language_level=3, freethreading_compatible=True, binding=False, always_allow_keywords=False
# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The selection core: round robin over an atomic cursor, fail-skip by deadline.

This module knows nothing of URLs: it selects an index among ``n`` opaque nodes.
The facade (``gonka_pool/__init__.py``) validates input and subclasses
``EndpointPoolCore`` without overriding the hot methods, so ``pool.next()``
resolves straight to the C method below: no Python frame, no allocation, no lock.

State (one cache-line-aligned C block per pool, outside the Python object so that
reference-count writes to the pool object never share a line with it):

``failed_until[i]``
    Monotonic deadline in nanoseconds before which node ``i`` is skipped; ``0``
    means healthy, ``UINT64_MAX`` means "until cleared".
``cooling``
    Number of non-zero deadlines plus marks in flight.  While it is zero a
    selection is one ``fetch_add``: no clock read, no deadline load.
``cursors``
    Round-robin positions, one stripe per thread slot (``STRIPES`` per pool), each
    on its own 64-byte line.  A thread takes a slot once, the first time it selects,
    and always advances the same stripe; every stripe cycles over all nodes, so
    with no failures T threads x M selections (M a multiple of n) still give every
    node exactly T*M/n picks, and one thread sees the seed's round robin.  One
    shared cursor would bounce its cache line between cores on every selection.

Memory ordering: every access is relaxed, as in the seed.  Selection makes no
promise about *which* healthy node a racing thread sees first; the worst outcome
of a stale read is one extra request to a node that failed a moment ago.  A mark
that *completed before* a call (program order, a join, a lock, a barrier) is
always seen by it, since coherence orders every load after a store that
happens-before it.
"""

from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree
from cpython.ref cimport PyObject
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.ref cimport Py_INCREF
from cpython.sequence cimport PySequence_Fast_ITEMS
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.math cimport ceil

import os as _os
from datetime import timedelta as _timedelta
from operator import index as _index


cdef extern from "_atomics.h" nogil:
    const char* GP_ATOMICS_IMPL
    const int GP_CACHE_LINE
    ctypedef struct gp_atomic_u64:
        pass
    ctypedef struct gp_atomic_i64:
        pass
    ctypedef struct gp_padded_u64:
        gp_atomic_u64 value
    uint64_t gp_u64_load(gp_atomic_u64 *a) noexcept
    void gp_u64_store(gp_atomic_u64 *a, uint64_t x) noexcept
    uint64_t gp_u64_exchange(gp_atomic_u64 *a, uint64_t x) noexcept
    uint64_t gp_u64_fetch_add(gp_atomic_u64 *a, uint64_t x) noexcept
    bint gp_u64_cas(gp_atomic_u64 *a, uint64_t expected, uint64_t desired) noexcept
    int64_t gp_i64_load(gp_atomic_i64 *a) noexcept
    void gp_i64_store(gp_atomic_i64 *a, int64_t x) noexcept
    int64_t gp_i64_fetch_add(gp_atomic_i64 *a, int64_t x) noexcept
    uint64_t gp_monotonic_ns() noexcept
    uint64_t gp_thread_slot() noexcept
    uint64_t gp_reciprocal(uint64_t n) noexcept
    uint64_t gp_mod(uint64_t position, uint64_t n, uint64_t inv) noexcept


ATOMICS = GP_ATOMICS_IMPL.decode("ascii")


def _stripe_count():
    """A power of two >= 2x the core count, at least 8 and at most 256."""
    cdef Py_ssize_t wanted = 2 * (_os.cpu_count() or 1), stripes = 8
    while stripes < wanted and stripes < 256:
        stripes *= 2
    return stripes


STRIPES = _stripe_count()
# Batches at least this long release the GIL while the C loop runs; shorter ones
# cost less than the release itself (benchmarks/gil_release.py measures both).
NEXT_MANY_NOGIL_MIN = 4096
cdef Py_ssize_t _NOGIL_MIN = NEXT_MANY_NOGIL_MIN

# Deadline meaning "until cleared"; also where every addition saturates.
cdef uint64_t FOREVER = 0xFFFFFFFFFFFFFFFFULL
DEF NS_PER_S = 1000000000
# Whole seconds at or above which the cooldown saturates to FOREVER
# (ceil((2**64 - 1) / 1e9)); as a double, the nanosecond count that does.
DEF SATURATING_SECONDS = 18446744074
DEF SATURATING_NS_DOUBLE = 18446744073709551616.0


cdef struct gp_core:
    Py_ssize_t n                      # number of nodes, >= 1
    uint64_t n_inv                    # gp_reciprocal(n), for gp_mod
    gp_atomic_i64 cooling             # non-zero deadlines + marks in flight
    gp_atomic_i64 test_now            # test clock in ns, or -1 for the real clock
    gp_atomic_u64 *failed_until       # n deadlines, contiguous (read-mostly)
    gp_padded_u64 *cursors            # n_stripes cursors, one cache line each
    uint64_t stripe_mask              # n_stripes - 1 (n_stripes is a power of two)
    void *allocation                  # what to free


cdef gp_core *_core_new(Py_ssize_t n, Py_ssize_t n_stripes) noexcept nogil:
    """One zeroed block: [core | cursors | deadlines], aligned to a cache line."""
    cdef size_t line = GP_CACHE_LINE
    cdef size_t core_bytes = (sizeof(gp_core) + line - 1) // line * line
    cdef size_t cursor_bytes = <size_t>n_stripes * sizeof(gp_padded_u64)
    cdef size_t deadline_bytes = <size_t>n * sizeof(gp_atomic_u64)
    cdef char *raw = <char *>PyMem_RawCalloc(1, line + core_bytes + cursor_bytes + deadline_bytes)
    if raw == NULL:
        return NULL
    cdef char *base = <char *>((<uintptr_t>raw + line - 1) // line * line)
    cdef gp_core *core = <gp_core *>base
    core.allocation = raw
    core.n = n
    core.n_inv = gp_reciprocal(<uint64_t>n)
    core.stripe_mask = <uint64_t>n_stripes - 1
    core.cursors = <gp_padded_u64 *>(base + core_bytes)
    core.failed_until = <gp_atomic_u64 *>(base + core_bytes + cursor_bytes)
    gp_i64_store(&core.test_now, -1)
    return core


cdef inline uint64_t _now(gp_core *core) noexcept nogil:
    cdef int64_t fake = gp_i64_load(&core.test_now)
    if fake >= 0:
        return <uint64_t>fake
    return gp_monotonic_ns()


cdef Py_ssize_t _earliest(gp_core *core) noexcept nogil:
    """Index of the smallest deadline; the first one wins a tie."""
    cdef Py_ssize_t i, best = 0
    cdef uint64_t deadline, best_deadline = gp_u64_load(&core.failed_until[0])
    for i in range(1, core.n):
        deadline = gp_u64_load(&core.failed_until[i])
        if deadline < best_deadline:
            best = i
            best_deadline = deadline
    return best


cdef inline gp_atomic_u64 *_cursor(gp_core *core) noexcept nogil:
    """This thread's stripe."""
    return &core.cursors[gp_thread_slot() & core.stripe_mask].value


cdef inline Py_ssize_t _select_at(gp_core *core, gp_atomic_u64 *cursor, uint64_t now) noexcept nogil:
    """The seed's selection: at most n round-robin candidates, skip cooling nodes,
    else the node whose cooldown ends first.  Never fails."""
    cdef uint64_t n = <uint64_t>core.n
    cdef uint64_t deadline
    cdef Py_ssize_t tries, idx
    for tries in range(core.n):
        idx = <Py_ssize_t>gp_mod(gp_u64_fetch_add(cursor, 1), n, core.n_inv)
        deadline = gp_u64_load(&core.failed_until[idx])
        if deadline <= now:
            # An expired deadline is cleared here, once (the CAS fails if a new
            # mark raced in), so that the pool returns to the clock-free path.
            if deadline != 0 and gp_u64_cas(&core.failed_until[idx], deadline, 0):
                gp_i64_fetch_add(&core.cooling, -1)
            return idx
    return _earliest(core)


cdef inline Py_ssize_t _select(gp_core *core) noexcept nogil:
    cdef gp_atomic_u64 *cursor = _cursor(core)
    if gp_i64_load(&core.cooling) <= 0:
        # No deadline anywhere: the candidate is healthy, no clock needed.
        return <Py_ssize_t>gp_mod(gp_u64_fetch_add(cursor, 1), <uint64_t>core.n, core.n_inv)
    return _select_at(core, cursor, _now(core))


cdef void _select_batch(gp_core *core, Py_ssize_t *out, Py_ssize_t k) noexcept nogil:
    """k selections, as k calls of _select on this thread, with at most one clock
    read; with no deadline anywhere, one fetch_add claims all k positions."""
    cdef gp_atomic_u64 *cursor = _cursor(core)
    cdef uint64_t n = <uint64_t>core.n
    cdef uint64_t position, now
    cdef Py_ssize_t i
    if gp_i64_load(&core.cooling) <= 0:
        position = gp_u64_fetch_add(cursor, <uint64_t>k)
        for i in range(k):
            out[i] = <Py_ssize_t>gp_mod(position + <uint64_t>i, n, core.n_inv)
        return
    now = _now(core)
    for i in range(k):
        out[i] = _select_at(core, cursor, now)


cdef void _mark(gp_core *core, Py_ssize_t idx, uint64_t cooldown_ns) noexcept nogil:
    """Replace node idx's deadline with now + cooldown (0 clears it).

    ``cooling`` is raised *before* the deadline becomes visible and lowered only
    after a non-zero deadline is gone, so it never undercounts: a selection that
    reads zero may skip the clock safely."""
    cdef uint64_t now, deadline
    if cooldown_ns == 0:
        if gp_u64_exchange(&core.failed_until[idx], 0) != 0:
            gp_i64_fetch_add(&core.cooling, -1)
        return
    if cooldown_ns == FOREVER:
        deadline = FOREVER
    else:
        now = _now(core)
        deadline = FOREVER if cooldown_ns >= FOREVER - now else now + cooldown_ns
    gp_i64_fetch_add(&core.cooling, 1)
    if gp_u64_exchange(&core.failed_until[idx], deadline) != 0:
        gp_i64_fetch_add(&core.cooling, -1)


cdef Py_ssize_t _check_index(object idx, Py_ssize_t n) except -1:
    cdef int overflow = 0
    cdef long long i
    if type(idx) is not int:
        if isinstance(idx, bool) or not hasattr(type(idx), "__index__"):
            raise TypeError(f"endpoint index must be an int, not {type(idx).__name__}")
        idx = _index(idx)
    i = PyLong_AsLongLongAndOverflow(idx, &overflow)
    if overflow or i < 0 or i >= n:
        raise IndexError(f"endpoint index {idx} out of range for a pool of {n}")
    return <Py_ssize_t>i


cdef uint64_t _seconds_ns(object whole) except? 0:
    """A Python int of seconds -> nanoseconds, saturated to FOREVER."""
    cdef int overflow = 0
    cdef long long seconds = PyLong_AsLongLongAndOverflow(whole, &overflow)
    if overflow < 0 or (overflow == 0 and seconds < 0):
        raise ValueError(f"cooldown must be >= 0, got {whole!r}")
    if overflow > 0 or seconds >= SATURATING_SECONDS:
        return FOREVER
    return <uint64_t>seconds * NS_PER_S


cdef uint64_t _whole_ns(object ns) except? 0:
    """A non-negative Python int of nanoseconds, saturated to FOREVER."""
    if ns >= FOREVER:
        return FOREVER
    return ns


cdef uint64_t _cooldown_ns(object cooldown) except? 0:
    """Seconds (int, float, any real number) or a timedelta -> whole nanoseconds.

    0 means "clear"; any positive cooldown is at least 1 ns; too large saturates."""
    cdef double seconds
    if type(cooldown) is float:
        seconds = PyFloat_AS_DOUBLE(cooldown)
    elif isinstance(cooldown, _timedelta):
        if cooldown < _ZERO_TIMEDELTA:
            raise ValueError(f"cooldown must be >= 0, got {cooldown!r}")
        return _whole_ns(((cooldown.days * 86400 + cooldown.seconds) * 1000000
                          + cooldown.microseconds) * 1000)
    elif isinstance(cooldown, bool):
        raise TypeError("cooldown must be a number of seconds or a datetime.timedelta, not bool")
    elif type(cooldown) is int:
        return _seconds_ns(cooldown)
    elif hasattr(type(cooldown), "__index__"):
        return _seconds_ns(_index(cooldown))
    elif hasattr(type(cooldown), "__float__"):
        try:
            seconds = PyFloat_AsDouble(cooldown)
        except OverflowError:  # a real number beyond any float, e.g. Fraction(10**400)
            seconds = _INF if cooldown > 0 else -_INF
    else:
        raise TypeError("cooldown must be a number of seconds or a datetime.timedelta, "
                        f"not {type(cooldown).__name__}")
    if seconds != seconds:
        raise ValueError("cooldown must not be NaN")
    if seconds < 0:
        raise ValueError(f"cooldown must be >= 0, got {seconds!r}")
    if seconds == 0:
        return 0
    if seconds * NS_PER_S >= SATURATING_NS_DOUBLE:
        return FOREVER
    return <uint64_t>ceil(seconds * NS_PER_S)


_ZERO_TIMEDELTA = _timedelta(0)
cdef double _INF = float("inf")


cdef class EndpointPoolCore:
    """Lock-free round-robin selection with fail-skip cooldowns (the C core).

    Not used directly: ``gonka_pool.EndpointPool`` subclasses it and validates the
    endpoints.  ``nodes`` is a non-empty tuple of the objects that selection returns.
    """

    cdef gp_core *_core
    cdef tuple _nodes
    # _nodes' item array, borrowed (the tuple is immutable and lives as long as the
    # pool): selection reads it without touching the tuple's reference count, a
    # cache line that every thread would otherwise write on 3.13t.
    cdef PyObject **_items

    def __cinit__(self, tuple nodes not None):
        cdef Py_ssize_t n = PyTuple_GET_SIZE(nodes)
        if n == 0:
            raise ValueError("EndpointPool requires at least one node")
        self._core = _core_new(n, STRIPES)
        if self._core == NULL:
            raise MemoryError()
        self._nodes = nodes
        self._items = PySequence_Fast_ITEMS(nodes)

    def __dealloc__(self):
        if self._core != NULL:
            PyMem_RawFree(self._core.allocation)
            self._core = NULL

    def next(self):
        """Return the next healthy endpoint in round-robin order.

        Nodes inside their cooldown are skipped; when every node is cooling down,
        the one whose cooldown ends first is returned.  Never raises.
        """
        return <object>self._items[_select(self._core)]

    def next_indexed(self):
        """Like ``next()``, also returning the node's index for ``mark_failed``."""
        cdef Py_ssize_t idx = _select(self._core)
        return (idx, <object>self._items[idx])

    def next_many(self, k):
        """``k`` selections in one call, as ``[pool.next() for _ in range(k)]`` would
        make them on this thread, with one clock read at most; with no node cooling
        down, one atomic step claims all k.  Batches of ``NEXT_MANY_NOGIL_MIN`` or
        more release the GIL while the C loop runs.
        """
        cdef Py_ssize_t count = _check_count(k)
        cdef Py_ssize_t i
        cdef Py_ssize_t small[64]
        cdef Py_ssize_t *picks = small
        cdef list out = PyList_New(count)
        cdef object node
        if count > 64:
            picks = <Py_ssize_t *>PyMem_RawCalloc(count, sizeof(Py_ssize_t))
            if picks == NULL:
                raise MemoryError()
        if count >= _NOGIL_MIN:
            with nogil:
                _select_batch(self._core, picks, count)
        else:
            _select_batch(self._core, picks, count)
        for i in range(count):
            node = <object>self._items[picks[i]]
            Py_INCREF(node)
            PyList_SET_ITEM(out, i, node)
        if picks != small:
            PyMem_RawFree(picks)
        return out

    def mark_failed(self, idx, cooldown):
        """Skip node ``idx`` for ``cooldown`` (seconds or a timedelta); 0 clears it.

        Replaces any earlier deadline.  ``math.inf`` (or anything past ~584 years)
        means "until cleared".  Raises IndexError, TypeError or ValueError for bad
        arguments, leaving the pool unchanged.
        """
        cdef Py_ssize_t i = _check_index(idx, self._core.n)
        _mark(self._core, i, _cooldown_ns(cooldown))

    def is_empty(self):
        """Always False: a pool cannot be built without endpoints."""
        return False

    def __len__(self):
        return self._core.n

    def __bool__(self):
        return True

    def __getitem__(self, key):
        if type(key) is slice:
            return self._nodes[key]
        return self._nodes[_check_sequence_index(key, self._core.n)]

    def __iter__(self):
        return iter(self._nodes)

    def __contains__(self, item):
        return item in self._nodes

    @property
    def endpoints(self):
        """The endpoints, in pool order, as a tuple."""
        return self._nodes

    # -- test and benchmark hooks (not public API) ---------------------------

    def _set_clock(self, now_ns):
        """Freeze the pool's clock at ``now_ns`` (>= 0), or resume the real one (None)."""
        gp_i64_store(&self._core.test_now, -1 if now_ns is None else <int64_t>now_ns)

    def _state(self):
        """(selections so far, cooling, deadlines) exactly as stored, for the twin
        comparison; the first is the sum of the stripes' cursors."""
        cdef uint64_t cursor_sum = 0
        cdef uint64_t stripe
        for stripe in range(self._core.stripe_mask + 1):
            cursor_sum += gp_u64_load(&self._core.cursors[stripe].value)
        return (cursor_sum,
                gp_i64_load(&self._core.cooling),
                [gp_u64_load(&self._core.failed_until[i]) for i in range(self._core.n)])

    def _next_releasing_gil(self):
        """``next()`` with the GIL released around the selection (GIL benchmark)."""
        cdef Py_ssize_t idx
        with nogil:
            idx = _select(self._core)
        return <object>self._items[idx]

    def _select_loop(self, Py_ssize_t k, bint release_gil=True):
        """k selections in C, returning how often each node was chosen (the
        benchmark of the core alone and the exact-balance test)."""
        cdef Py_ssize_t i
        # Padded by a cache line on each side: two threads' counters must not share
        # a line, or the loop measures false sharing instead of the core.
        cdef Py_ssize_t pad = GP_CACHE_LINE // sizeof(Py_ssize_t)
        cdef Py_ssize_t *block = <Py_ssize_t *>PyMem_RawCalloc(self._core.n + 2 * pad, sizeof(Py_ssize_t))
        cdef Py_ssize_t *counts = block + pad
        if block == NULL:
            raise MemoryError()
        try:
            if release_gil:
                with nogil:
                    for i in range(k):
                        counts[_select(self._core)] += 1
            else:
                for i in range(k):
                    counts[_select(self._core)] += 1
            return [counts[i] for i in range(self._core.n)]
        finally:
            PyMem_RawFree(block)

    def __reduce__(self):
        raise TypeError(f"cannot pickle {type(self).__name__!r} object: rebuild it from "
                        "pool.endpoints instead (cooldown state is per process)")


cdef Py_ssize_t _check_count(object k) except -1:
    cdef int overflow = 0
    cdef long long count
    if type(k) is not int:
        if isinstance(k, bool) or not hasattr(type(k), "__index__"):
            raise TypeError(f"count must be an int, not {type(k).__name__}")
        k = _index(k)
    count = PyLong_AsLongLongAndOverflow(k, &overflow)
    if overflow < 0 or (overflow == 0 and count < 0):
        raise ValueError(f"count must be >= 0, got {k!r}")
    if overflow > 0 or count > (<Py_ssize_t>1 << 40):
        raise OverflowError(f"count {k!r} is too large")
    return <Py_ssize_t>count


cdef Py_ssize_t _check_sequence_index(object key, Py_ssize_t n) except -1:
    """Sequence indexing: negative counts from the end, as for a tuple."""
    cdef Py_ssize_t i
    if isinstance(key, bool) or not hasattr(type(key), "__index__"):
        raise TypeError(f"pool indices must be integers or slices, not {type(key).__name__}")
    key = _index(key)
    if key < 0:
        key += n
    if key < 0 or key >= n:
        raise IndexError("pool index out of range")
    i = key
    return i
