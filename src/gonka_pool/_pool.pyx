# cython: language_level=3, freethreading_compatible=True, binding=False, always_allow_keywords=False
# cython: embedsignature=True, embedsignature.format=clinic
# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The selection core: round robin over atomic cursors, fail-skip by deadline.

Selection knows nothing of URLs: it picks an index among ``n`` opaque nodes.
``EndpointPool`` below is the public type itself; argument validation runs once, at
construction, in ``_pool_common`` (Python shared with the twin), so ``pool.next()`` is
this type's C method: no Python frame, no allocation, no lock.  (A Python subclass
would lose CPython's exact-type call specialization: 1.35x slower on 3.11.)

State lives in C blocks outside the Python objects, so that reference-count
writes to a pool never share a cache line with it.

The pool (``gp_core``, one per pool, cache-line aligned):

``stripes``
    Round-robin positions, one stripe per thread slot (``STRIPES`` per pool), each
    on its own 64-byte line with the stripe's count of marks in flight.  A thread
    takes a slot once, the first time it selects or marks, and always advances
    (and marks on) the same stripe; every stripe cycles over all nodes, so with no
    failures T threads x M selections (M a multiple of the period) still give
    every node exactly its share, and one thread sees the seed's round robin.
    One shared cursor would bounce its cache line between cores on every pick.
``members``
    The current membership, published with a release exchange and read with an
    acquire load, so ``update()`` swaps the whole set in one step.

A membership (``gp_members``, replaced whole by ``update()``):

``failed_until[i]``
    Monotonic deadline in nanoseconds before which node ``i`` is skipped; ``0``
    means healthy, ``UINT64_MAX`` means "until cleared".  On Linux the clock is
    ``CLOCK_MONOTONIC_COARSE`` (``CLOCK``): a fraction of a precise read's cost
    (``benchmarks/clock_cost.c``), so a mark stays within 2x a selection; every
    deadline adds one tick of it.
``cooling``
    Number of non-zero deadlines plus marks in flight.  While it is zero a
    selection is one ``fetch_add``: no clock read, no deadline load.
``retired``
    Set by ``update()`` before it copies this membership's state into the next:
    from then on no mark may land here (see "Marks and update()" below).
``schedule``
    For weighted pools, the node of each slot of one period (``period`` slots,
    laid out here from ``_schedule.schedule_plan``'s counts: nginx's smooth order
    for small exact weights, else the O(period) spread order); NULL for equal
    weights.  At most ``_schedule.table_slots(n)`` slots (the power of two at or
    above 64n, within 2**12..2**22), so a weighted pick is still one atomic add
    and one table read; a table of 2**k slots (every quantized one) is indexed
    with ``period_mask``, an AND, where other periods take a modulo.
``consecutive``, ``total``
    Failure counters for the backoff policy and ``snapshot()``; never read by
    selection.
``load``, ``failed_at``, ``probe``, ``capacity``, ``generation``
    What ``acquire()`` reads and its leases write: see "Load-aware picks and
    leases" below.

Memory ordering: node state is relaxed, as in the seed.  Selection makes no
promise about *which* healthy node a racing thread sees first; the worst outcome
of a stale read is one extra request to a node that failed a moment ago.  A mark
that *completed before* a call (program order, a join, a lock, a barrier) is
always seen by it, since coherence orders every load after a store that
happens-before it.

Marks and update(): a mark must land on a membership whose state ``update()`` has
not yet copied, or on the one it published; a mark landing on the old one after the
copy would be lost (a clear lost leaves a node cooling), and a mark applied to both
would count twice.  The handshake, in pure C on both sides:

- A mark adds 1 to its stripe's ``in_flight`` (seq_cst), then loads the membership
  and its ``retired`` flag (seq_cst).  Not retired: it applies itself there and
  subtracts 1 (release).  Retired: it subtracts 1, spins until the pool's
  membership pointer changes, and starts again.
- ``update()`` (holding ``_update_lock``) first does everything that runs Python
  (resolving old indices to new ones calls ``GonkaEndpoint.__eq__``), then sets
  ``retired`` (seq_cst), waits until it has seen every stripe's ``in_flight`` at 0
  once, copies the state, and publishes the new membership.

In the single total order of seq_cst operations, a mark that read ``retired`` as 0
added its 1 before ``update()`` set the flag, so ``update()`` reads that stripe
after the 1 and waits for the release that follows the mark's writes; a mark that
read 1 wrote nothing.  Seeing each stripe at 0 once is enough: a mark announced
after that read sees the flag.  Every mark is thus copied exactly once or applied
to the new membership.  An endpoint mark resolves its indices against the
membership it pinned (Python), and applies only if that one is still the current,
unretired one; otherwise it resolves again.  An index mark applies to whichever
membership it finds, with its index checked against that one (an index keeps its
meaning across an update to the same list; after any other, mark by endpoint).

Neither side can deadlock the other.  Both waits are loops of C that touch no
Python object: a mark in flight finishes without waiting on anything, and a mark
waiting for the new pointer waits on ``update()``'s copy, which waits only on marks
in flight.  Under free threading a stop-the-world pause (each garbage collection)
waits for attached threads to reach Python code, which threads in these loops
reach as soon as they leave them, so the pause waits for the handshake, never the
reverse.  With the GIL no thread can run between a mark's load and its last write,
or between ``update()``'s flag and its publication, since each is one stretch of
C holding the GIL: a mark never observes ``retired``, and those builds skip the
count (``GP_MARKS_ANNOUNCED``): two locked operations, which would take
``mark_failed`` past twice the cost of ``next()`` on 3.11.

Reclaiming a replaced membership: every reader loads the membership pointer and
finishes with it inside one C call, while its thread is attached to the
interpreter and without running Python code in between.  With the GIL that call
cannot overlap ``update()``, so the old membership is dropped at once.  Without
it (3.13t), a stop-the-world pause waits for every attached thread to leave such a
call, and every free-threaded garbage collection stops the world: an old
membership is freed once a collection that started after its retirement has
finished.  Code that must run Python while using a membership (``next_many``'s
GIL-free loop, endpoint lookups) holds a reference to it instead.

Load-aware picks and leases (``acquire()``; the rules are ``_balance``'s, restated
here under the same names with a ``_`` prefix, on the same integers):

- Per membership, in the pool's own block whether shared or not: one 64-byte line
  per node (``gp_load``: ``in_flight``, ``ewma_us``, ``stamp_ns``, ``floor_us``,
  ``limit`` and its inverse ``inv_limit``, ``last_event_ns``, the copy ``rank``),
  so settles of two nodes never write one line; ``capacity`` (1.0 / each weight,
  weighted pools only: a pick multiplies); ``generation`` (+1
  per ``update()``).  ``failed_at`` and ``probe`` sit beside the deadlines: in the
  block for a pool of its own, in the segment's records for ``shared=`` (layout 2),
  where every process must see one lease's probe claim.  ``_swap`` copies the loads
  of the nodes present before and after (shared or not) and, unshared, ``failed_at``
  and ``probe`` as it copies deadlines.
- ``acquire()`` runs inside the marks' handshake (``_mark_begin``/``_mark_end``):
  the pick, the in-flight increment and the read of the endpoint.  An increment
  outside it could land on a membership ``update()`` has already copied and be
  lost with it; inside, ``update()`` either copies it or the increment lands on the
  new membership.  Every settle decrements inside the handshake too, so the count
  ``_swap`` copies is exact.  A lease whose generation is no longer in force
  resolves its endpoint against the current membership (Python, pinned, checked
  again inside the handshake as ``_mark_endpoint`` does).
- Ordering: every load field is relaxed.  ``in_flight`` is a read-modify-write
  (never lost); the estimate fields are a load and a store each, so two settles of
  one node racing may lose one sample or one limit step, which the next answer
  makes good: a pick compares estimates, it never needs them exact.  A pick
  reading a field a moment stale picks as it would have a moment earlier.  The
  probe claim is a CAS, so one lease of any process wins it; the deadline a
  success clears goes by CAS from the value read, so a failure marked meanwhile
  stays.  With the GIL (``GP_MARKS_ANNOUNCED`` 0) acquire() and a settle are each
  one stretch of C holding it, so the counts and the lease's settled flag use a
  plain load and store instead of locked operations (``_count_up``); the cursor
  stays atomic, since ``next_many`` advances it without the GIL.
- A ``Lease`` holds its stripe's ``_Anchor`` (to settle), its endpoint (the
  stripe's copy, as ``next()`` returns it), index, generation, start, in-flight
  count at the pick and probe claim; no collector tracking (it can close no cycle)
  and a freelist on GIL builds (Cython disables freelists on free-threaded ones).
  One dropped unsettled is released in ``__dealloc__``, in C when its membership is
  in force.
- What keeps what alive: the pool holds a ``_CoreOwner`` and ``STRIPES`` anchors;
  each anchor holds the owner and a copy of its core pointer; the owner frees the
  ``gp_core`` block and holds what a settle may reach without the pool: the
  membership in force (which pins the segment of a shared pool), the replaced ones
  a free-threaded reader may still be inside, and the observer (with every one
  ever set).  Nothing there refers to the pool, so a lease never keeps its pool
  alive and closes no cycle: the pool is freed by reference counting when its last
  user drops it, and a lease outliving it still settles (its counts land on a
  membership nobody picks from any more).  A lease does not hold the pool itself
  because on free-threaded builds every acquire() and settle would write the one
  pool's reference count from every thread, a cache line bounced between cores
  (``benchmarks/lease_cost.py --threads 2``); an anchor per stripe gives each
  thread a count of its own.
"""

from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree, PyMem_RawMalloc
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport PyObject, Py_INCREF
from cpython.exc cimport PyErr_WriteUnraisable
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.datetime cimport (import_datetime, timedelta as _timedelta_type, timedelta_days,
                                timedelta_microseconds, timedelta_seconds)
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.sequence cimport PySequence_Fast_ITEMS
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.string cimport memcmp, memcpy
from libc.stdint cimport int64_t, uint32_t, uint64_t, uintptr_t
from libc.math cimport ceil
cimport cython

import errno
import gc as _gc
import hashlib as _hashlib
import logging as _logging
import os as _os
import re as _re
import time as _time
import weakref as _weakref
from ._schedule import random_offset as _random_offset
import sysconfig as _sysconfig

from threading import Lock as _Lock

from . import _failover
from ._convert import cooldown_ns as _convert_cooldown_ns, count as _convert_count
from ._convert import endpoint_index as _endpoint_index, index_error as _index_error
from ._convert import is_index_target as _is_index_target, sequence_index as _sequence_index
from ._convert import integer as _integer
from ._endpoint import GonkaEndpoint as _Endpoint
from ._pool_common import from_env as _from_env, pool_repr as _pool_repr, prepare as _prepare
from ._pool_common import prepare_update as _prepare_update
from ._clock import CLOCK_MAX_TICK_NS as _CLOCK_MAX_TICK_NS
from ._report import EndpointState as _EndpointState, log_cooldown as _log_cooldown
from ._report import FailureReport as _FailureReport, failure_report as _failure_report
from . import _balance
from ._pool_common import constructor_arguments as _constructor_arguments
from ._pool_common import restart_at_random_after_fork as _restart_at_random_after_fork


cdef extern from "_atomics.h" nogil:
    const char* GP_ATOMICS_IMPL
    const int GP_CACHE_LINE
    ctypedef struct gp_atomic_u64:
        pass
    ctypedef struct gp_atomic_i64:
        pass
    ctypedef struct gp_stripe:
        gp_atomic_u64 cursor
        gp_atomic_u64 in_flight
    ctypedef struct gp_load:
        gp_atomic_u64 in_flight
        gp_atomic_u64 ewma_us
        gp_atomic_u64 stamp_ns
        gp_atomic_u64 floor_us
        gp_atomic_u64 limit
        gp_atomic_u64 last_event_ns
        gp_atomic_u64 inv_limit
        uint64_t rank
    uint64_t gp_double_bits(double x) noexcept
    double gp_bits_double(uint64_t bits) noexcept
    uint64_t gp_u64_load_relaxed(gp_atomic_u64 *a) noexcept
    uint64_t gp_u64_load_acquire(gp_atomic_u64 *a) noexcept
    void gp_u64_store_relaxed(gp_atomic_u64 *a, uint64_t x) noexcept
    uint64_t gp_u64_exchange_relaxed(gp_atomic_u64 *a, uint64_t x) noexcept
    uint64_t gp_u64_exchange_acq_rel(gp_atomic_u64 *a, uint64_t x) noexcept
    uint64_t gp_u64_fetch_add_relaxed(gp_atomic_u64 *a, uint64_t x) noexcept
    uint64_t gp_u64_fetch_add(gp_atomic_u64 *a, uint64_t x) noexcept
    uint64_t gp_u64_fetch_add_release(gp_atomic_u64 *a, uint64_t x) noexcept
    uint64_t gp_u64_load(gp_atomic_u64 *a) noexcept
    bint gp_u64_cas(gp_atomic_u64 *a, uint64_t expected, uint64_t desired) noexcept
    bint gp_atomics_lock_free() noexcept
    void gp_u64_store(gp_atomic_u64 *a, uint64_t x) noexcept
    void gp_spin_wait(unsigned *spins) noexcept
    bint gp_u64_cas_relaxed(gp_atomic_u64 *a, uint64_t expected, uint64_t desired) noexcept
    int64_t gp_i64_load_relaxed(gp_atomic_i64 *a) noexcept
    void gp_i64_store_relaxed(gp_atomic_i64 *a, int64_t x) noexcept
    int64_t gp_i64_fetch_add_relaxed(gp_atomic_i64 *a, int64_t x) noexcept
    uint64_t gp_monotonic_ns() noexcept
    uint64_t gp_clock_init(uint64_t max_tick_ns) noexcept
    const char *gp_clock_name() noexcept
    uint64_t gp_thread_slot() noexcept
    uint64_t gp_reciprocal(uint64_t n) noexcept
    uint64_t gp_mod(uint64_t position, uint64_t n, uint64_t inv) noexcept
    void GP_ASSERT(bint cond) noexcept


cdef extern from "_shared.h" nogil:
    const bint GP_SHARED_SUPPORTED
    const int GP_SHM_FOREIGN
    int gp_shm_map(const char *name, size_t size, int *created, void **base, size_t *length,
                   int *fd, uint64_t *owner, uint64_t *mode) noexcept
    int gp_shm_size(int fd, size_t *length) noexcept
    void gp_shm_close(int fd) noexcept
    int gp_shm_unlink(const char *name) noexcept
    void gp_shm_unmap(void *base, size_t length) noexcept
    uint64_t gp_pid() noexcept
    uint64_t gp_euid() noexcept
    uint64_t gp_pid_namespace() noexcept
    bint gp_pid_alive(uint64_t pid) noexcept
    ctypedef struct gp_guard_slot:
        pass
    int gp_guard_install() noexcept
    int gp_guard_register(void *base, size_t length, gp_guard_slot **slot) noexcept
    void gp_guard_forget(gp_guard_slot *slot) noexcept
    bint gp_guard_lost(gp_guard_slot *slot) noexcept


cdef extern from *:
    """
    /* Whether a mark announces itself on its stripe's in_flight count, which
     * update() waits on: wherever threads run C at the same time.  With the GIL a
     * mark's section and update()'s swap are each one stretch of C holding it, so
     * they cannot overlap and the count would cost two locked operations for
     * nothing.  -DGP_MARKS_ANNOUNCED=1 runs the free-threaded protocol on a GIL
     * build (for testing it there). */
    #if !defined(GP_MARKS_ANNOUNCED)
    #  if defined(Py_GIL_DISABLED)
    #    define GP_MARKS_ANNOUNCED 1
    #  else
    #    define GP_MARKS_ANNOUNCED 0
    #  endif
    #endif
    """
    const bint GP_MARKS_ANNOUNCED


# A lease's own counts (a node's in_flight, the lease's settled flag) live in this
# process's memory and change only in acquire() and a settle, each one stretch of C:
# where GP_MARKS_ANNOUNCED is 0 the GIL serializes those stretches, so a relaxed load
# and store do what a locked read-modify-write would, at a fraction of the cost
# (three locked operations were a third of acquire() + success() on 3.11).

cdef inline uint64_t _count_up(gp_atomic_u64 *count) noexcept nogil:
    """count += 1; the new value."""
    cdef uint64_t after
    if GP_MARKS_ANNOUNCED:
        return gp_u64_fetch_add_relaxed(count, 1) + 1
    after = gp_u64_load_relaxed(count) + 1
    gp_u64_store_relaxed(count, after)
    return after


cdef inline void _set_limit(gp_load *load, uint64_t limit) noexcept nogil:
    """Store a node's concurrency limit and the inverse a pick multiplies by (a
    pick racing this store may read the old inverse with the new limit: one pick's
    cost a moment stale, as any relaxed read of the load).  Nothing when it is
    unchanged, the usual case: the division is most of a settle's arithmetic."""
    if gp_u64_load_relaxed(&load.limit) == limit and gp_u64_load_relaxed(&load.inv_limit) != 0:
        return
    gp_u64_store_relaxed(&load.limit, limit)
    gp_u64_store_relaxed(&load.inv_limit, gp_double_bits(1.0 / <double><int64_t>limit))


cdef inline uint64_t _scan_position(gp_atomic_u64 *cursor) noexcept nogil:
    """A pick's starting position on the stripe's cursor, advanced by one.  Only
    which of equally cheap nodes wins depends on it, so with the GIL a plain load
    and store do (a ``next_many`` of another thread on the same stripe, the one
    caller that runs without the GIL, may lose one step of its round robin to it,
    never more); without the GIL, a locked add."""
    cdef uint64_t position
    if GP_MARKS_ANNOUNCED:
        return gp_u64_fetch_add_relaxed(cursor, 1)
    position = gp_u64_load_relaxed(cursor)
    gp_u64_store_relaxed(cursor, position + 1)
    return position


cdef inline void _count_down(gp_atomic_u64 *count) noexcept nogil:
    """count -= 1 unless it is 0 (a count that update() did not carry over)."""
    cdef uint64_t before = gp_u64_load_relaxed(count)
    if GP_MARKS_ANNOUNCED:
        while before != 0 and not gp_u64_cas_relaxed(count, before, before - 1):
            before = gp_u64_load_relaxed(count)
    elif before != 0:
        gp_u64_store_relaxed(count, before - 1)


cdef inline bint _first_settle(gp_atomic_u64 *settled) noexcept nogil:
    """Set a lease's flag; whether this call set it (of two racing, exactly one)."""
    if GP_MARKS_ANNOUNCED:
        return gp_u64_exchange_acq_rel(settled, 1) == 0
    if gp_u64_load_relaxed(settled):
        return False
    gp_u64_store_relaxed(settled, 1)
    return True


ATOMICS = GP_ATOMICS_IMPL.decode("ascii")
# The clock deadlines are read on, once per process: CLOCK_MONOTONIC_COARSE on Linux
# when its tick is at most _clock.CLOCK_MAX_TICK_NS, else the precise clock (tick 0).
# Every real-clock deadline adds the tick, so a node is not let back a tick early.
cdef uint64_t _CLOCK_TICK_NS = gp_clock_init(_CLOCK_MAX_TICK_NS)
CLOCK = (gp_clock_name().decode("ascii"), _CLOCK_TICK_NS)
FREE_THREADED = bool(_sysconfig.get_config_var("Py_GIL_DISABLED"))


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
# mark_failed's cooldown when the pool's backoff policy decides.
cdef uint64_t POLICY = 0xFFFFFFFFFFFFFFFEULL
DEF NS_PER_S = 1000000000
# Whole seconds at or above which the cooldown saturates to FOREVER
# (ceil((2**64 - 1) / 1e9)); as a double, the nanosecond count that does.
DEF SATURATING_SECONDS = 18446744074
# As a C variable: Cython keeps a literal beyond 32 bits a Python int, and compares
# against it through the object protocol.
cdef long long _SATURATING_SECONDS = SATURATING_SECONDS
DEF SATURATING_NS_DOUBLE = 18446744073709551616.0


# -- the weighted table (``_schedule.schedule_plan`` decides its slots) --------------

cdef uint32_t *_plan_slots(object plan, Py_ssize_t n, uint64_t *period, bint *smooth) except NULL:
    """A ``SchedulePlan``'s slots as a C array (the caller frees it), its period and
    order, after the checks that keep every table entry a node index: one count per
    node, each from 1, summing below 2**32."""
    cdef tuple slots = tuple(plan[0])
    cdef Py_ssize_t i
    cdef uint64_t total = 0, count
    cdef uint32_t *out
    if PyTuple_GET_SIZE(slots) != n:
        raise ValueError(f"schedule plan for {PyTuple_GET_SIZE(slots)} nodes, not {n}")
    out = <uint32_t *>PyMem_RawMalloc(<size_t>n * sizeof(uint32_t) + 1)
    if out == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            value = slots[i]
            if type(value) is not int or not 1 <= value < 2**32:
                raise ValueError("schedule slots must be ints from 1, summing below 2**32")
            count = value
            out[i] = <uint32_t>count
            total += count
            if total >= (<uint64_t>1 << 32):
                raise ValueError("schedule slots must be ints from 1, summing below 2**32")
    except BaseException:
        PyMem_RawFree(out)
        raise
    period[0] = total
    smooth[0] = bool(plan[1])
    return out


cdef int _smooth_fill(uint32_t *table, const uint32_t *slots, Py_ssize_t n,
                      uint64_t period) noexcept nogil:
    """``_schedule.smooth_schedule_py`` in C: nginx's smooth weighted round robin over
    exact slot counts (period x n <= SMOOTH_MAX_WORK, so int64 never overflows).
    -1 when out of memory."""
    cdef int64_t *current = <int64_t *>PyMem_RawCalloc(<size_t>n, sizeof(int64_t))
    cdef int64_t total = <int64_t>period
    cdef Py_ssize_t i, best
    cdef uint64_t step
    if current == NULL:
        return -1
    for step in range(period):
        best = 0
        for i in range(n):
            current[i] += slots[i]
            if current[i] > current[best]:
                best = i
        current[best] -= total
        table[step] = <uint32_t>best
    PyMem_RawFree(current)
    return 0


cdef int _spread_fill(uint32_t *table, const uint32_t *slots, Py_ssize_t n,
                      uint64_t period) noexcept nogil:
    """``_schedule.spread_schedule_py`` in C, in O(period + n): node i's k-th of c slots
    goes to round floor((2k + 1) R / 2c), R the most slots of any node, walked with
    additions only (the quotient and remainder of the step 2R / 2c, as Bresenham
    walks a line); a counting sort over the rounds lists them in round order, then
    node order.  -1 when out of memory."""
    cdef uint64_t rounds = 0, r, bucket, rest, two_c, step, step_rest, k
    cdef uint32_t *start
    cdef Py_ssize_t i
    cdef int pass_
    for i in range(n):
        if slots[i] > rounds:
            rounds = slots[i]
    start = <uint32_t *>PyMem_RawCalloc(<size_t>rounds + 1, sizeof(uint32_t))
    if start == NULL:
        return -1
    for pass_ in range(2):
        for i in range(n):
            two_c = 2 * <uint64_t>slots[i]
            bucket = rounds // two_c
            rest = rounds % two_c
            step = 2 * rounds // two_c
            step_rest = 2 * rounds % two_c
            for k in range(slots[i]):
                if pass_ == 0:
                    start[bucket + 1] += 1
                else:
                    table[start[bucket]] = <uint32_t>i
                    start[bucket] += 1
                bucket += step
                rest += step_rest
                if rest >= two_c:
                    rest -= two_c
                    bucket += 1
        if pass_ == 0:
            # start[r]: the slots in rounds before r, where round r's first goes.
            for r in range(1, rounds + 1):
                start[r] += start[r - 1]
    PyMem_RawFree(start)
    return 0


cdef int _fill_table(uint32_t *table, const uint32_t *slots, Py_ssize_t n, uint64_t period,
                     bint smooth) noexcept nogil:
    if smooth:
        return _smooth_fill(table, slots, n, period)
    return _spread_fill(table, slots, n, period)


def _schedule_table(slots, bint smooth):
    """The table the C core lays out for ``SchedulePlan(slots, smooth)``, as a list
    (the tests compare it with the twin's ``_schedule.schedule_table_py``)."""
    cdef Py_ssize_t n = len(slots)
    cdef uint64_t period
    cdef bint order
    cdef uint32_t *counts = _plan_slots((slots, smooth), n, &period, &order)
    cdef uint32_t *table = NULL
    cdef int failed
    try:
        table = <uint32_t *>PyMem_RawMalloc(<size_t>period * sizeof(uint32_t))
        if table == NULL:
            raise MemoryError()
        with nogil:
            failed = _fill_table(table, counts, n, period, order)
        if failed:
            raise MemoryError()
        return [table[i] for i in range(period)]
    finally:
        PyMem_RawFree(counts)
        PyMem_RawFree(table)


# -- the garbage collector as a grace period (free-threaded builds) ------------

cdef gp_atomic_u64 _gc_started      # collections started so far
cdef gp_atomic_u64 _gc_finished     # the number of the last collection that finished


def _on_gc(phase, info):
    if phase == "start":
        gp_u64_fetch_add_relaxed(&_gc_started, 1)
    elif phase == "stop":
        gp_u64_store_relaxed(&_gc_finished, gp_u64_load_relaxed(&_gc_started))


if FREE_THREADED:
    _gc.callbacks.append(_on_gc)

# Per-stripe copies of the endpoints (free-threaded builds) for pools of at most
# this many endpoints x stripes; larger pools share one object per endpoint.
DEF STRIPE_COPIES_MAX = 4096


cdef bint _stripe_copies = True


def _set_stripe_copies(bint enabled):
    """Benchmark hook: whether memberships built from now on get per-stripe copies."""
    global _stripe_copies
    _stripe_copies = enabled


cdef object _stripe_copy(object node):
    """An equal copy of a GonkaEndpoint, owned by this thread; other nodes as they are."""
    if type(node) is _Endpoint:
        return node._copy_for_stripe()
    return node


# Retired memberships a pool keeps before it asks for a collection itself.
DEF RETIRED_COLLECT_AT = 64


# -- state ----------------------------------------------------------------------

cdef struct gp_members:
    Py_ssize_t n                      # number of nodes, >= 1
    gp_atomic_u64 retired             # 1 once update() may copy this membership's state
    uint64_t n_inv                    # gp_reciprocal(n)
    uint64_t period                   # schedule slots (n when unweighted)
    uint64_t period_inv               # gp_reciprocal(period)
    uint64_t period_mask              # period - 1 when a power of two (a mask, no divide), else 0
    uint32_t *schedule                # node of each slot; NULL when unweighted
    gp_atomic_i64 *cooling            # non-zero deadlines + marks in flight: own_cooling,
                                      # or the shared segment's count (all its nodes)
    gp_atomic_i64 own_cooling
    gp_atomic_u64 *failed_until       # deadlines, contiguous (read by selection)
    gp_atomic_u64 *consecutive        # cooldowns entered since the last success
    gp_atomic_u64 *total              # failures ever reported
    uint32_t *slot_of                 # shared pools: node i's record is slot_of[i] of the
                                      # segment's arrays; NULL: record i of its own
    PyObject **items                  # the nodes (per stripe, see below), borrowed
    Py_ssize_t stripe_stride          # n when each stripe has its own copies, else 0
    PyObject *owner                   # the _Members object that frees this block
    uint64_t generation               # 0 for the first membership, +1 per update()
    gp_load *load                     # each node's load, one line per node (this block)
    gp_atomic_u64 *failed_at          # when each node was last marked failed (ns)
    gp_atomic_u64 *probe              # until when one lease probes each node (ns), or 0
    double *capacity                  # weighted pools: 1.0 / each node's weight; else NULL


cdef struct gp_core:
    gp_atomic_u64 members             # the current gp_members *, as an integer
    gp_atomic_i64 test_now            # test clock in ns, or -1 for the real clock
    uint64_t stripe_mask              # stripes - 1 (a power of two)
    uint64_t base_ns                  # backoff policy: first cooldown
    uint64_t max_ns                   # backoff policy: cap
    uint64_t balance                  # acquire()'s policy: _balance.BALANCE_POLICIES' index
    gp_atomic_u64 panic_ns            # 1 + when a pick last found more than half cooling, or 0
    gp_stripe *stripes                # one cache line per stripe
    void *allocation


# -- shared health (EndpointPool(shared=...)) --------------------------------------

# A segment, all 64-bit words, cache-line aligned sections:
#   header  [0] magic  [1] layout  [2] capacity  [3] ready (1 once laid out)
#           [4] records ever taken  [5] creator's pid  [6] claims so far;  byte 64:
#           cooling (its own line, read by every next() of every process, written by
#           marks)
#   records states[capacity] (0 never used, CLAIMING | pid << 2 while its key is
#           written, READY | claim number << 2 after), keys[capacity] (32-byte
#           BLAKE2b of the endpoint), then the health arrays deadlines, consecutive,
#           total, failed_at, probe [capacity] each, which memberships of shared pools
#           index through slot_of (layout 2 added the last two: a lease's probe claim
#           must be seen by every process), then holders[capacity][_HOLDER_WORDS]
#   attachments [_ATTACHMENTS] x (pid, pid namespace): one per _Segment mapping it
#           (0: free; pid | _REAPING while a process frees a dead one's holds)
# Layout 3 added the holders and attachments: a record whose holder bits are all
# clear is held by no live membership, and a claim that finds no never-used record
# takes such a one over (its key and health reset), so the segment never fills for
# good.  Bit b of a record's holders is attachment b's; a _Segment keeps a
# process-local count per record and owns the bit while the count is above zero.
# An attachment whose process is gone (same pid namespace, pid not alive) is reaped:
# its bit is cleared from every record and the slot freed.
# Holding and taking over race through two seq_cst steps each: a holder sets its bit,
# then reads the record's state (unchanged: held); a claimant swaps the state to
# CLAIMING, then reads the holder bits (all clear: it may take the record, else it
# puts the state back).  One of the two always sees the other's write.
# No lock anywhere in the segment: a process killed at any instruction leaves every
# word valid.  The one two-step write, claiming a record, names its claimant, and a
# record whose claimant is gone is taken over; the cooling count errs high only
# (raised before a deadline is set, lowered after it is cleared), which costs a clock
# read, never a wrong pick.
DEFAULT_SHARED_CAPACITY = 1024
MAX_SHARED_CAPACITY = 1 << 20
SHARED_SUPPORTED = bool(GP_SHARED_SUPPORTED) and bool(gp_atomics_lock_free())
cdef uint64_t _SHM_MAGIC = 0x314C4F4F50414B4EULL      # "NKAPOOL1"
cdef uint64_t _SHM_LAYOUT = 3
cdef size_t _SHM_HEADER = 128
cdef uint64_t _CLAIMING = 1, _READY = 2, _STATE_KIND = 3
DEF _HOLDER_WORDS = 4
DEF _ATTACHMENTS = 256                                # _HOLDER_WORDS * 64
cdef uint64_t _REAPING = 1ULL << 62
cdef double _SHM_WAIT_S = 2.0                         # for a creator or claimant at work
_SHM_NAME = _re.compile(r"[A-Za-z0-9_.-]{1,200}")
_log = _logging.getLogger("gonka_pool")


cdef size_t _aligned(size_t size) noexcept nogil:
    return (size + GP_CACHE_LINE - 1) // GP_CACHE_LINE * GP_CACHE_LINE


cdef size_t _segment_size(uint64_t capacity) noexcept nogil:
    return (_SHM_HEADER + 6 * _aligned(capacity * 8) + _aligned(capacity * 32)
            + _aligned(capacity * 8 * _HOLDER_WORDS) + _aligned(_ATTACHMENTS * 16))


cdef bytes _segment_path(object name):
    """The POSIX name of segment ``name``: per user (the effective uid in it), so
    that two users' pools naming one segment never meet."""
    if not isinstance(name, str):
        raise TypeError(f"shared must be a str naming the segment, not {type(name).__name__}")
    if not _SHM_NAME.fullmatch(name):
        raise ValueError("shared must be 1 to 200 letters, digits, '_', '.' or '-', "
                         f"got {name[:40]!r}")
    return f"/gonka_pool.{gp_euid()}.{name}".encode("ascii")


def _segment_file(name):
    """Segment ``name``'s POSIX shared-memory name (on Linux, a file of that name in
    /dev/shm); for tests and for the error messages that tell a user what to remove."""
    return _segment_path(name).decode("ascii")


cdef inline void _lock_local(gp_atomic_u64 *lock) noexcept nogil:
    cdef unsigned spins = 0
    while not gp_u64_cas(lock, 0, 1):
        gp_spin_wait(&spins)


cdef inline void _unlock_local(gp_atomic_u64 *lock) noexcept nogil:
    gp_u64_store(lock, 0)


cdef inline void _bits_set(gp_atomic_u64 *word, uint64_t bits) noexcept nogil:
    cdef uint64_t old = gp_u64_load(word)
    while not gp_u64_cas(word, old, old | bits):
        old = gp_u64_load(word)


cdef inline void _bits_clear(gp_atomic_u64 *word, uint64_t bits) noexcept nogil:
    cdef uint64_t old = gp_u64_load(word)
    while old & bits and not gp_u64_cas(word, old, old & ~bits):
        old = gp_u64_load(word)


_segments = _weakref.WeakSet()          # every live _Segment, re-attached in a forked child


cdef class _Segment:
    """A mapped shared-memory segment of endpoint health records (see above), and
    this mapping's attachment: the records its memberships hold."""

    cdef char *base
    cdef size_t length
    cdef int fd                       # kept open to check the segment's size (-1: none)
    cdef readonly str name
    cdef readonly uint64_t capacity
    cdef gp_atomic_u64 *header
    cdef gp_atomic_i64 *cooling
    cdef gp_atomic_u64 *states
    cdef unsigned char *keys
    cdef gp_atomic_u64 *deadlines
    cdef gp_atomic_u64 *consecutive
    cdef gp_atomic_u64 *total
    cdef gp_atomic_u64 *failed_at
    cdef gp_atomic_u64 *probe
    cdef gp_atomic_u64 *holders       # _HOLDER_WORDS per record
    cdef gp_atomic_u64 *attachments   # (pid, pid namespace) per attachment
    cdef Py_ssize_t attachment        # this mapping's attachment, or -1 (holds nothing)
    cdef uint64_t attached_pid        # the process that took it
    cdef uint64_t namespace
    cdef gp_atomic_u64 *counts        # process-local: this mapping's holds of each record
    cdef gp_atomic_u64 lock           # process-local: guards counts and this mapping's bits
    cdef gp_atomic_u64 lost           # 1 once found truncated: never touched again
    cdef bint warned_full             # the full warning is out (until a membership fits)
    cdef bint warned_lost
    cdef Py_ssize_t fork_slot         # between fork()'s hooks: the child's attachment, or -1
    cdef size_t mapped                # the mapping's length (the file's at open)
    cdef gp_guard_slot *guard         # the SIGBUS guard's entry of the mapping, or NULL
    cdef object __weakref__

    def __cinit__(self, name, capacity):
        cdef bytes path = _segment_path(name)
        cdef uint64_t wanted = DEFAULT_SHARED_CAPACITY, taken, owner = 0, mode = 0
        cdef void *base = NULL
        cdef size_t length = 0
        cdef int created = 0, err, fd = -1
        cdef double give_up = _time.monotonic() + _SHM_WAIT_S
        self.fd = -1
        self.attachment = self.fork_slot = -1
        if not SHARED_SUPPORTED:
            raise NotImplementedError(
                "shared= needs POSIX shared memory and lock-free 64-bit atomics, which "
                "this platform lacks; build the pool without it")
        if capacity is not None:
            capacity = _integer(capacity, "shared_capacity")
            if not 1 <= capacity <= MAX_SHARED_CAPACITY:
                raise ValueError(f"shared_capacity must be 1..{MAX_SHARED_CAPACITY}, got {capacity!r}")
            wanted = capacity
        self.name = name
        while True:
            err = gp_shm_map(path, _segment_size(wanted), &created, &base, &length, &fd, &owner, &mode)
            if err == 0:
                break
            if err == GP_SHM_FOREIGN or err == errno.EACCES:
                raise PermissionError(
                    errno.EACCES,
                    f"shared memory segment {name!r} ({path.decode()}) is not this user's alone "
                    + ("(this user may not open it)" if err == errno.EACCES else
                       f"(owner uid {owner}, mode 0o{mode:03o})")
                    + f": a segment must belong to uid {gp_euid()} with mode 0600, since "
                    "anyone who can write it steers this pool's picks; use another shared= "
                    f"name, or have its owner or root remove it (on Linux: rm /dev/shm{path.decode()})")
            if err == errno.EAGAIN and _time.monotonic() > give_up:
                raise RuntimeError(
                    f"shared memory segment {name!r} is empty (its creator exited while "
                    "creating it, or it was truncated): remove it with "
                    f"EndpointPool.unlink_shared({name!r})")
            if err != errno.EAGAIN:
                raise OSError(err, f"shared memory segment {name!r}: {_os.strerror(err)}")
            _time.sleep(0.001)
        self.base = <char *>base
        self.length = self.mapped = length
        self.fd = fd
        # Guarded before its first read: from here a truncation faults into the
        # handler, which leaves zeros where the segment was (see _shared.h).
        err = gp_guard_install()
        if err == 0:
            err = gp_guard_register(base, length, &self.guard)
        if err != 0:
            raise OSError(err, f"shared memory segment {name!r}: cannot guard it against "
                          f"truncation: {_os.strerror(err)}")
        self.header = <gp_atomic_u64 *>base
        if created:
            gp_u64_store_relaxed(&self.header[0], _SHM_MAGIC)
            gp_u64_store_relaxed(&self.header[1], _SHM_LAYOUT)
            gp_u64_store_relaxed(&self.header[2], wanted)
            gp_u64_store_relaxed(&self.header[5], gp_pid())
            gp_u64_store(&self.header[3], 1)  # publishes the words above
        else:
            while length < _SHM_HEADER or gp_u64_load(&self.header[3]) != 1:
                if length < _SHM_HEADER or _time.monotonic() > give_up:
                    raise RuntimeError(
                        f"shared memory segment {name!r} was never laid out (its creator "
                        "exited while creating it?): remove it with "
                        f"EndpointPool.unlink_shared({name!r})")
                _time.sleep(0.001)
            if (gp_u64_load_relaxed(&self.header[0]) != _SHM_MAGIC
                    or gp_u64_load_relaxed(&self.header[1]) != _SHM_LAYOUT):
                raise ValueError(
                    f"shared memory segment {name!r} has another layout or version than "
                    f"this gonka_pool's (layout {_SHM_LAYOUT}): remove it with "
                    f"EndpointPool.unlink_shared({name!r}) once no process uses it")
            taken = gp_u64_load_relaxed(&self.header[2])
            if taken < 1 or taken > MAX_SHARED_CAPACITY or _segment_size(taken) > length:
                raise ValueError(f"shared memory segment {name!r} is damaged (capacity "
                                 f"{taken} in {length} bytes): remove it with "
                                 f"EndpointPool.unlink_shared({name!r})")
            if capacity is not None and taken != wanted:
                raise ValueError(f"shared memory segment {name!r} holds {taken} endpoints, "
                                 f"not shared_capacity={capacity!r}")
            wanted = taken
        self.capacity = wanted
        self.length = _segment_size(wanted)  # what is used; a longer file is no harm
        self.cooling = <gp_atomic_i64 *>(self.base + 64)
        self.states = <gp_atomic_u64 *>(self.base + _SHM_HEADER)
        self.keys = <unsigned char *>(self.base + _SHM_HEADER + _aligned(wanted * 8))
        self.deadlines = <gp_atomic_u64 *>(<char *>self.keys + _aligned(wanted * 32))
        self.consecutive = <gp_atomic_u64 *>(<char *>self.deadlines + _aligned(wanted * 8))
        self.total = <gp_atomic_u64 *>(<char *>self.consecutive + _aligned(wanted * 8))
        self.failed_at = <gp_atomic_u64 *>(<char *>self.total + _aligned(wanted * 8))
        self.probe = <gp_atomic_u64 *>(<char *>self.failed_at + _aligned(wanted * 8))
        self.holders = <gp_atomic_u64 *>(<char *>self.probe + _aligned(wanted * 8))
        self.attachments = <gp_atomic_u64 *>(<char *>self.holders
                                              + _aligned(wanted * 8 * _HOLDER_WORDS))
        self.counts = <gp_atomic_u64 *>PyMem_RawCalloc(wanted, sizeof(gp_atomic_u64))
        if self.counts == NULL:
            raise MemoryError()
        self.namespace = gp_pid_namespace()
        if not self._attach():
            _log.warning("shared memory segment %r has no free attachment (%d processes' pools "
                         "map it): this pool keeps its nodes' health to itself", name, _ATTACHMENTS)
            self.warned_full = True
        _segments.add(self)

    def __dealloc__(self):
        cdef uint64_t mine
        if self.base != NULL:
            if self.attachment >= 0 and self.attached_pid == gp_pid() and self._intact():
                # Every membership is gone (each held this mapping), so its holds are too.
                mine = self.attached_pid
                gp_u64_cas(&self.attachments[2 * self.attachment], mine, 0)
            gp_guard_forget(self.guard)  # before the range can belong to another mapping
            gp_shm_unmap(self.base, self.mapped)
        if self.fd >= 0:
            gp_shm_close(self.fd)
        PyMem_RawFree(self.counts)

    cdef bint _intact(self) noexcept nogil:
        """Whether the segment still spans its layout; once it does not (truncated
        by a process of this user, or root), it is never read or written again here.
        A pick or mark that touches it before then faults into the SIGBUS guard,
        which replaces the mapping by zeros and sets the flag read here."""
        cdef size_t now_length = 0
        if gp_u64_load_relaxed(&self.lost):
            return False
        if (gp_guard_lost(self.guard) or gp_shm_size(self.fd, &now_length) != 0
                or now_length < self.length):
            gp_u64_store_relaxed(&self.lost, 1)
            return False
        return True

    cdef bint _dead(self, uint64_t word, uint64_t namespace) noexcept nogil:
        """Whether attachment word ``word`` names a process that is gone."""
        cdef uint64_t pid = word & ~_REAPING
        return (word != 0 and namespace == self.namespace and pid != gp_pid()
                and not gp_pid_alive(pid))

    cdef void _clear_bit(self, Py_ssize_t attachment) noexcept nogil:
        cdef uint64_t i
        cdef uint64_t bit = 1ULL << (attachment % 64)
        for i in range(self.capacity):
            _bits_clear(&self.holders[i * _HOLDER_WORDS + attachment // 64], bit)

    cdef Py_ssize_t _take_slot(self) noexcept nogil:
        """Take a free attachment, or the one of a process that is gone (after
        clearing its holds), for this process: its index, or -1 when every one
        belongs to a live process."""
        cdef Py_ssize_t s
        cdef uint64_t word, mine = gp_pid()
        for s in range(_ATTACHMENTS):
            word = gp_u64_load(&self.attachments[2 * s])
            if word == 0 or self._dead(word, gp_u64_load(&self.attachments[2 * s + 1])):
                if gp_u64_cas(&self.attachments[2 * s], word, mine):
                    gp_u64_store(&self.attachments[2 * s + 1], self.namespace)
                    if word != 0:
                        self._clear_bit(s)
                    return s
        return -1

    cdef bint _attach(self) noexcept nogil:
        self.attachment = self._take_slot()
        self.attached_pid = gp_pid()
        return self.attachment >= 0

    cdef bint _reap(self) noexcept nogil:
        """Free every attachment whose process is gone, with its holds; whether any was."""
        cdef Py_ssize_t s
        cdef uint64_t word
        cdef bint reaped = False
        for s in range(_ATTACHMENTS):
            word = gp_u64_load(&self.attachments[2 * s])
            if self._dead(word, gp_u64_load(&self.attachments[2 * s + 1])):
                if gp_u64_cas(&self.attachments[2 * s], word, gp_pid() | _REAPING):
                    self._clear_bit(s)
                    gp_u64_store(&self.attachments[2 * s], 0)
                    reaped = True
        return reaped

    cdef bint _unheld(self, uint64_t i) noexcept nogil:
        cdef Py_ssize_t w
        for w in range(_HOLDER_WORDS):
            if gp_u64_load(&self.holders[i * _HOLDER_WORDS + w]) != 0:
                return False
        return True

    cdef bint _take(self, uint64_t i, uint64_t state) noexcept nogil:
        """Hold record i, READY as ``state`` when its key was compared: False when it
        changed meanwhile (taken over for another key), and nothing is held."""
        cdef gp_atomic_u64 *word = &self.holders[i * _HOLDER_WORDS + self.attachment // 64]
        cdef uint64_t bit = 1ULL << (self.attachment % 64)
        cdef bint held = True
        _lock_local(&self.lock)
        if gp_u64_load_relaxed(&self.counts[i]) == 0:
            _bits_set(word, bit)  # then the state, read again: see above
            held = gp_u64_load(&self.states[i]) == state
            if not held:
                _bits_clear(word, bit)
        if held:
            gp_u64_store_relaxed(&self.counts[i], gp_u64_load_relaxed(&self.counts[i]) + 1)
        _unlock_local(&self.lock)
        return held

    cdef void _claim(self, uint64_t i, const unsigned char *key, uint64_t was) noexcept nogil:
        """Record i, whose state this process has just swapped to CLAIMING from
        ``was``, becomes ``key``'s: health reset, held, READY."""
        if gp_u64_exchange_relaxed(&self.deadlines[i], 0) != 0:
            gp_i64_fetch_add_relaxed(self.cooling, -1)
        gp_u64_store_relaxed(&self.consecutive[i], 0)
        gp_u64_store_relaxed(&self.total[i], 0)
        gp_u64_store_relaxed(&self.failed_at[i], 0)
        gp_u64_store_relaxed(&self.probe[i], 0)
        memcpy(self.keys + 32 * i, key, 32)
        _lock_local(&self.lock)
        _bits_set(&self.holders[i * _HOLDER_WORDS + self.attachment // 64],
                  1ULL << (self.attachment % 64))
        gp_u64_store_relaxed(&self.counts[i], gp_u64_load_relaxed(&self.counts[i]) + 1)
        _unlock_local(&self.lock)
        gp_u64_store(&self.states[i], (gp_u64_fetch_add(&self.header[6], 1) + 1) << 2 | _READY)
        if was == 0:
            gp_u64_fetch_add(&self.header[4], 1)

    cdef void release(self, uint64_t i) noexcept nogil:
        """One hold of record i less; this mapping's bit clears with the last."""
        if self.attachment < 0:
            return
        _lock_local(&self.lock)
        if gp_u64_load_relaxed(&self.counts[i]) == 1 and not gp_u64_load_relaxed(&self.lost):
            _bits_clear(&self.holders[i * _HOLDER_WORDS + self.attachment // 64],
                        1ULL << (self.attachment % 64))
        gp_u64_store_relaxed(&self.counts[i], gp_u64_load_relaxed(&self.counts[i]) - 1)
        _unlock_local(&self.lock)

    cdef Py_ssize_t _hold_key(self, const unsigned char *key, uint64_t start) except -2:
        """The record of ``key``, held: found, else claimed (a never-used record,
        else one no live membership holds); -1 when there is none to claim."""
        cdef uint64_t mine = gp_pid() << 2 | _CLAIMING, state, spare_state = 0
        cdef uint64_t probe, i
        cdef Py_ssize_t spare
        cdef double give_up
        cdef int rounds
        for rounds in range(3):  # a spare taken by another claimant: look again
            spare = -1
            for probe in range(self.capacity):
                i = (start + probe) % self.capacity
                give_up = 0.0
                while True:
                    state = gp_u64_load(&self.states[i])
                    if state & _STATE_KIND == _READY:
                        if memcmp(self.keys + 32 * i, key, 32) == 0:
                            if self._take(i, state):
                                return i
                            continue
                        if spare < 0 and self._unheld(i):
                            spare, spare_state = i, state
                        break
                    if state == 0 or (state & _CLAIMING and not gp_pid_alive(state >> 2)):
                        # never used (the key is nowhere further on), or its claimant
                        # died while writing the key: take it
                        if gp_u64_cas(&self.states[i], state, mine):
                            self._claim(i, key, state)
                            return i
                        continue
                    if give_up == 0.0:  # another process is writing this record's key
                        give_up = _time.monotonic() + _SHM_WAIT_S
                    elif _time.monotonic() > give_up:
                        raise TimeoutError(f"shared memory segment {self.name!r}: record {i} "
                                           "stayed half-written")
                    _time.sleep(0.0001)
            if spare < 0:
                return -1
            if gp_u64_cas(&self.states[spare], spare_state, mine):
                if self._unheld(spare):
                    self._claim(spare, key, spare_state)
                    return spare
                gp_u64_store(&self.states[spare], spare_state)  # held meanwhile: put back
        return -1

    cdef Py_ssize_t hold(self, node) except -2:
        """The record of ``node`` (base URL and address), held for a membership until
        ``release``; -1 when the segment has no room for it, even after reaping the
        holds of processes that are gone."""
        cdef bytes key = _hashlib.blake2b(
            f"{len(node.base_url)}:{node.base_url}{node.address}".encode(),
            digest_size=32, person=b"gonka_pool").digest()
        cdef uint64_t start = int.from_bytes(key[:8], "little") % self.capacity
        cdef Py_ssize_t i = self._hold_key(key, start)
        if i < 0 and self._reap():
            i = self._hold_key(key, start)
        return i

    cdef Py_ssize_t hold_all(self, tuple nodes, uint32_t *records) except -1:
        """Hold the record of every node into ``records``: the number held, or 0
        (nothing held, one warning) when the segment cannot take them all, the
        membership then keeping its health to itself."""
        cdef Py_ssize_t n = PyTuple_GET_SIZE(nodes), k, i
        if self.attachment < 0:
            return 0  # warned when it was mapped
        if not self._intact():
            if self.warned_lost:
                return 0
            self.warned_lost = True
            _log.warning("shared memory segment %r is shorter than its layout (truncated "
                         "by another process?): this pool keeps its nodes' health to itself "
                         "from now on; remove it with EndpointPool.unlink_shared(%r)",
                         self.name, self.name)
            return 0
        if <uint64_t>n > self.capacity and <uint64_t>len(set(nodes)) > self.capacity:
            self._warn_full(n)  # without claiming records it could never keep
            return 0
        try:
            for k in range(n):
                i = self.hold(nodes[k])
                if i < 0:
                    for i in range(k):
                        self.release(records[i])
                    self._warn_full(n)
                    return 0
                records[k] = <uint32_t>i
        except BaseException:
            for i in range(k):
                self.release(records[i])
            raise
        self.warned_full = False
        return n

    cdef _warn_full(self, Py_ssize_t n):
        if not self.warned_full:  # once, until a membership fits again
            self.warned_full = True
            _log.warning(
                "shared memory segment %r is full: its %d endpoint records are held by live "
                "pools; this membership of %d nodes keeps its health to itself (shared again "
                "once it fits; or create the segment larger with shared_capacity=, after "
                "EndpointPool.unlink_shared(%r))", self.name, self.capacity, n, self.name)

    cdef void _sync_bits(self, Py_ssize_t slot) noexcept nogil:
        """Attachment ``slot``'s bit of each record set exactly where this mapping
        holds it."""
        cdef uint64_t i, bit = 1ULL << (slot % 64)
        _lock_local(&self.lock)
        for i in range(self.capacity):
            if gp_u64_load_relaxed(&self.counts[i]) != 0:
                _bits_set(&self.holders[i * _HOLDER_WORDS + slot // 64], bit)
            else:
                _bits_clear(&self.holders[i * _HOLDER_WORDS + slot // 64], bit)
        _unlock_local(&self.lock)

    # fork(): the child's memberships are copies of the parent's and read the same
    # records, so the child needs holds of its own, or the parent's exit (or its
    # next update()) would let the records go under the child.  The parent takes an
    # attachment for the child before forking, holding all it holds, and the child
    # makes it its own.  Without a free one, the child goes on under the parent's
    # holds, and shares no new membership.

    cdef void prepare_fork(self) noexcept nogil:
        self.fork_slot = -1
        if self.attachment >= 0 and self._intact():
            self.fork_slot = self._take_slot()
            if self.fork_slot >= 0:
                self._sync_bits(self.fork_slot)

    cdef void forked_parent(self) noexcept nogil:
        self.fork_slot = -1  # the child's now

    cdef void forked_child(self) noexcept nogil:
        cdef uint64_t parent = self.attached_pid
        gp_u64_store(&self.lock, 0)  # a parent's thread may have held it at fork
        if self.attachment < 0:
            return
        self.attachment = self.fork_slot
        self.attached_pid = gp_pid()
        self.fork_slot = -1
        if self.attachment >= 0:
            gp_u64_cas(&self.attachments[2 * self.attachment], parent, self.attached_pid)
            if self._intact():
                self._sync_bits(self.attachment)  # holds taken or dropped meanwhile


def _prepare_fork():
    for segment in list(_segments):
        (<_Segment>segment).prepare_fork()


def _forked_parent():
    for segment in list(_segments):
        (<_Segment>segment).forked_parent()


def _forked_child():
    for segment in list(_segments):
        (<_Segment>segment).forked_child()


if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(before=_prepare_fork, after_in_parent=_forked_parent,
                         after_in_child=_forked_child)


@cython.no_gc_clear  # __dealloc__ releases its records through ``segment``
cdef class _Members:
    """One membership: the nodes tuple, weights, and the C block of their state."""

    cdef gp_members *m
    cdef void *allocation
    cdef readonly tuple nodes
    cdef readonly tuple weights       # None when all equal
    cdef tuple stripe_nodes           # stripes x n endpoints: each stripe's own copies
    cdef dict positions               # endpoint -> tuple of indices, read-only once built
    cdef _Segment segment             # the shared segment holding the health, or None
    cdef uint32_t *held               # shared: the records this membership holds
    cdef Py_ssize_t n_held            # how many (n), or 0

    def __cinit__(self, tuple nodes not None, weights, schedule, _Segment segment=None):
        cdef Py_ssize_t n = PyTuple_GET_SIZE(nodes), i
        cdef uint64_t period = <uint64_t>n
        cdef bint smooth = False
        cdef uint32_t *slots = NULL
        cdef size_t line = GP_CACHE_LINE
        cdef size_t head = (sizeof(gp_members) + line - 1) // line * line
        cdef size_t per_array = (<size_t>n * sizeof(gp_atomic_u64) + line - 1) // line * line
        cdef size_t loads = <size_t>n * sizeof(gp_load)  # whole lines
        cdef size_t capacities = 0 if weights is None else per_array  # n doubles
        cdef size_t health
        cdef char *raw
        cdef char *base
        cdef int failed = 0
        if n == 0:
            raise ValueError("EndpointPool requires at least one node")
        if segment is not None:
            # Each node's health record in the segment (claimed on first sight), held
            # until this membership is freed; the block then holds the record numbers
            # instead of the health arrays.  A segment that cannot take them all (full
            # of live pools' records, or truncated) leaves the health to this block.
            self.held = <uint32_t *>PyMem_RawMalloc(<size_t>n * sizeof(uint32_t))
            if self.held == NULL:
                raise MemoryError()
            self.segment = segment
            self.n_held = segment.hold_all(nodes, self.held)
            if self.n_held == 0:
                self.segment = segment = None
            else:
                per_array = (<size_t>n * sizeof(uint32_t) + line - 1) // line * line
        # Laid out as: this header, the loads, the health arrays (five of their own,
        # or the record numbers of a shared pool), the capacities, the schedule.
        health = per_array if segment is not None else 5 * per_array
        if schedule is not None:
            slots = _plan_slots(schedule, n, &period, &smooth)
        try:
            raw = <char *>PyMem_RawCalloc(1, line + head + loads + health + capacities
                                          + (0 if slots == NULL else <size_t>period * sizeof(uint32_t)))
            if raw == NULL:
                raise MemoryError()
            base = <char *>((<uintptr_t>raw + line - 1) // line * line)
            self.allocation = raw
            self.m = <gp_members *>base
            self.m.n = n
            self.m.n_inv = gp_reciprocal(<uint64_t>n)
            self.m.period = period
            self.m.period_inv = gp_reciprocal(period)
            if period > 1 and period & (period - 1) == 0:
                self.m.period_mask = period - 1
            self.m.load = <gp_load *>(base + head)
            for i in range(n):
                _set_limit(&self.m.load[i], 1)
            if segment is None:
                self.m.cooling = &self.m.own_cooling
                self.m.failed_until = <gp_atomic_u64 *>(base + head + loads)
                self.m.consecutive = <gp_atomic_u64 *>(base + head + loads + per_array)
                self.m.total = <gp_atomic_u64 *>(base + head + loads + 2 * per_array)
                self.m.failed_at = <gp_atomic_u64 *>(base + head + loads + 3 * per_array)
                self.m.probe = <gp_atomic_u64 *>(base + head + loads + 4 * per_array)
            else:
                self.m.cooling = segment.cooling
                self.m.failed_until = segment.deadlines
                self.m.consecutive = segment.consecutive
                self.m.total = segment.total
                self.m.failed_at = segment.failed_at
                self.m.probe = segment.probe
                self.m.slot_of = <uint32_t *>(base + head + loads)
                for i in range(n):
                    self.m.slot_of[i] = self.held[i]
            if weights is not None:
                self.m.capacity = <double *>(base + head + loads + health)
                for i in range(n):
                    self.m.capacity[i] = 1.0 / <double>weights[i]  # the inverse: _weigh multiplies
            if slots != NULL:
                # Laid out before the membership is published: no reader races it.
                self.m.schedule = <uint32_t *>(base + head + loads + health + capacities)
                with nogil:
                    failed = _fill_table(self.m.schedule, slots, n, period, smooth)
                if failed:
                    raise MemoryError()
        finally:
            PyMem_RawFree(slots)
        self.nodes = nodes
        self.weights = weights
        self.m.items = PySequence_Fast_ITEMS(nodes)
        self.m.owner = <PyObject *>self
        if _stripe_copies and FREE_THREADED and n * STRIPES <= STRIPE_COPIES_MAX:
            # Without the GIL, a returned endpoint's reference count is a cache line
            # that every selecting thread writes: equal per-stripe copies keep each
            # thread on lines of its own (measured: benchmarks/refcount_contention.py).
            self.stripe_nodes = tuple([node if stripe == 0 else _stripe_copy(node)
                                       for stripe in range(STRIPES) for node in nodes])
            self.m.items = PySequence_Fast_ITEMS(self.stripe_nodes)
            self.m.stripe_stride = n
        # Built before the membership is published, so readers never race a writer.
        positions = {}
        for i in range(n):
            node = nodes[i]
            same = positions.get(node, ())
            self.m.load[i].rank = <uint64_t>len(same)  # the k-th copy, as _replace pairs them
            positions[node] = same + (i,)
        self.positions = positions

    def __dealloc__(self):
        self.release_records()
        PyMem_RawFree(self.held)
        PyMem_RawFree(self.allocation)

    cdef void release_records(self) noexcept:
        """Let go of the segment's records, once: when ``update()`` retires this
        membership (under its lock), else when it is freed.  At retirement, not when
        freed: without the GIL a retired membership lives until a collection, and its
        records must not wait that long.  Nothing writes them through a retired
        membership (marks land on the one in force); a pick still running in it may
        read a record that was taken over meanwhile, and picks as on a read a moment
        stale: the mapping stays, so nothing faults."""
        cdef Py_ssize_t i, n = self.n_held
        self.n_held = 0
        if n and self.segment._intact():
            for i in range(n):
                self.segment.release(self.held[i])

    cdef tuple indices_of(self, object endpoint):
        """Every index holding ``endpoint`` (duplicates are separate slots)."""
        return self.positions.get(endpoint, ())


cdef inline gp_atomic_u64 *_deadline(gp_members *m, Py_ssize_t idx) noexcept nogil:
    return &m.failed_until[idx if m.slot_of == NULL else m.slot_of[idx]]


cdef inline gp_atomic_u64 *_consecutive(gp_members *m, Py_ssize_t idx) noexcept nogil:
    return &m.consecutive[idx if m.slot_of == NULL else m.slot_of[idx]]


cdef inline gp_atomic_u64 *_total(gp_members *m, Py_ssize_t idx) noexcept nogil:
    return &m.total[idx if m.slot_of == NULL else m.slot_of[idx]]


cdef inline gp_atomic_u64 *_failed_at(gp_members *m, Py_ssize_t idx) noexcept nogil:
    return &m.failed_at[idx if m.slot_of == NULL else m.slot_of[idx]]


cdef inline gp_atomic_u64 *_probe(gp_members *m, Py_ssize_t idx) noexcept nogil:
    return &m.probe[idx if m.slot_of == NULL else m.slot_of[idx]]


cdef inline gp_members *_current(gp_core *core) noexcept nogil:
    return <gp_members *><uintptr_t>gp_u64_load_acquire(&core.members)


cdef inline uint64_t _now_tick(gp_core *core, uint64_t *tick) noexcept nogil:
    """Now, and in ``tick`` what a deadline set now adds: the real clock's tick
    (0 for a precise clock), or 0 on the test clock."""
    cdef int64_t fake = gp_i64_load_relaxed(&core.test_now)
    if fake >= 0:
        tick[0] = 0
        return <uint64_t>fake
    tick[0] = _CLOCK_TICK_NS
    return gp_monotonic_ns()


cdef inline uint64_t _now(gp_core *core) noexcept nogil:
    cdef uint64_t tick
    return _now_tick(core, &tick)


# -- selection --------------------------------------------------------------------

cdef inline uint64_t _stripe(gp_core *core) noexcept nogil:
    """This thread's stripe."""
    return gp_thread_slot() & core.stripe_mask


cdef inline PyObject *_item(gp_members *m, uint64_t stripe, Py_ssize_t idx) noexcept nogil:
    """Node idx as this stripe returns it (its own copy where there are copies)."""
    GP_ASSERT(idx >= 0)
    GP_ASSERT(idx < m.n)
    return m.items[<Py_ssize_t>stripe * m.stripe_stride + idx]


cdef inline Py_ssize_t _node_at(gp_members *m, uint64_t position) noexcept nogil:
    if m.schedule == NULL:
        return <Py_ssize_t>gp_mod(position, <uint64_t>m.n, m.n_inv)
    if m.period_mask:
        # Quantized tables have 2**k slots: one AND, where the modulo of an
        # unweighted pick takes a multiply-high, a multiply and a compare, which
        # pays for most of the table read (``bench``'s weighted rows: 1.04-1.09x an
        # unweighted next() with a modulo here, 0.98-1.03x at 10,000 nodes with the
        # AND; 1,000 nodes on 3.11 still vary 1.03-1.11x from run to run).
        return m.schedule[position & m.period_mask]
    return m.schedule[gp_mod(position, m.period, m.period_inv)]


cdef Py_ssize_t _earliest(gp_members *m) noexcept nogil:
    """Index of the smallest deadline; the first one wins a tie."""
    cdef Py_ssize_t i, best = 0
    cdef uint64_t deadline, best_deadline = gp_u64_load_relaxed(_deadline(m, 0))
    for i in range(1, m.n):
        deadline = gp_u64_load_relaxed(_deadline(m, i))
        if deadline < best_deadline:
            best = i
            best_deadline = deadline
    return best


cdef inline bint _healthy(gp_members *m, Py_ssize_t idx, uint64_t deadline, uint64_t now) noexcept nogil:
    """Whether node idx, whose deadline was read as ``deadline``, is selectable at
    ``now``; an expired deadline is cleared here, once (the CAS fails if a new mark
    raced in), so that the pool returns to the clock-free path."""
    if deadline > now:
        return False
    if deadline != 0 and gp_u64_cas_relaxed(_deadline(m, idx), deadline, 0):
        _cooling_leave(m)
    return True


cdef inline bint _healthy_at(gp_members *m, Py_ssize_t idx, uint64_t now) noexcept nogil:
    return _healthy(m, idx, gp_u64_load_relaxed(_deadline(m, idx)), now)


cdef Py_ssize_t _select_at(gp_members *m, gp_atomic_u64 *cursor, uint64_t now) noexcept nogil:
    """The seed's selection: at most n candidates in schedule order, skip cooling
    nodes, else the node whose cooldown ends first.  Never fails.

    The seed takes one fetch_add per candidate; here the first claims a position,
    the candidates after it are read from there, and one more fetch_add moves the
    cursor past every candidate examined, so the cursor ends where the seed's
    would (on one thread: the same picks) for two atomic adds instead of up to n:
    with 1000 nodes all cooling, 1000 locked adds were most of the call.  A
    stripe's cursor belongs to one thread unless threads outnumber stripes."""
    cdef Py_ssize_t tries, idx, best = 0
    cdef uint64_t deadline, best_deadline = FOREVER
    cdef uint64_t position = gp_u64_fetch_add_relaxed(cursor, 1)
    if m.schedule == NULL:
        # One pass: the first healthy candidate, else the earliest deadline seen
        # (the lowest index among equals, as _earliest).
        idx = <Py_ssize_t>gp_mod(position, <uint64_t>m.n, m.n_inv)
        for tries in range(m.n):
            deadline = gp_u64_load_relaxed(_deadline(m, idx))
            if _healthy(m, idx, deadline, now):
                if tries:
                    gp_u64_fetch_add_relaxed(cursor, <uint64_t>tries)
                return idx
            if deadline < best_deadline or (deadline == best_deadline and idx < best):
                best, best_deadline = idx, deadline
            idx += 1
            if idx == m.n:
                idx = 0
        gp_u64_fetch_add_relaxed(cursor, <uint64_t>(m.n - 1))
        GP_ASSERT(best_deadline > now)  # every candidate was cooling when read
        return best
    for tries in range(m.n):
        idx = _node_at(m, position + <uint64_t>tries)
        if _healthy_at(m, idx, now):
            if tries:
                gp_u64_fetch_add_relaxed(cursor, <uint64_t>tries)
            return idx
    gp_u64_fetch_add_relaxed(cursor, <uint64_t>(m.n - 1))
    # n slots of a weighted schedule may all belong to cooling heavy nodes:
    # any healthy node beats the earliest-deadline fallback.
    position += <uint64_t>(m.n - 1)
    for tries in range(m.n):
        idx = <Py_ssize_t>gp_mod(position + <uint64_t>tries, <uint64_t>m.n, m.n_inv)
        if _healthy_at(m, idx, now):
            return idx
    return _earliest(m)


cdef inline Py_ssize_t _select(gp_core *core, gp_members *m, uint64_t stripe) noexcept nogil:
    cdef gp_atomic_u64 *cursor = &core.stripes[stripe].cursor
    if gp_i64_load_relaxed(m.cooling) <= 0:
        # No deadline anywhere: the candidate is healthy, no clock needed.
        return _node_at(m, gp_u64_fetch_add_relaxed(cursor, 1))
    return _select_at(m, cursor, _now(core))


cdef void _select_batch(gp_core *core, gp_members *m, uint64_t stripe, Py_ssize_t *out,
                        Py_ssize_t k) noexcept nogil:
    """k selections, as k calls of _select on this thread, with at most one clock
    read; with no deadline anywhere, one fetch_add claims all k positions."""
    cdef gp_atomic_u64 *cursor = &core.stripes[stripe].cursor
    cdef uint64_t position, now
    cdef Py_ssize_t i
    if gp_i64_load_relaxed(m.cooling) <= 0:
        position = gp_u64_fetch_add_relaxed(cursor, <uint64_t>k)
        for i in range(k):
            out[i] = _node_at(m, position + <uint64_t>i)
        return
    now = _now(core)
    for i in range(k):
        out[i] = _select_at(m, cursor, now)


# -- failures -----------------------------------------------------------------------

cdef inline uint64_t _backoff_ns(gp_core *core, uint64_t level) noexcept nogil:
    """base * 2**(level - 1), capped at max (level >= 1)."""
    cdef uint64_t shift = level - 1
    if shift >= 63 or core.base_ns > (core.max_ns >> shift):
        return core.max_ns
    return core.base_ns << shift


cdef inline void _set_deadline(gp_members *m, Py_ssize_t idx, uint64_t old, uint64_t new,
                               bint *done) noexcept nogil:
    """CAS old -> new, keeping ``cooling`` an over-count: raised before a non-zero
    deadline replaces a zero one, lowered only after a non-zero one is gone."""
    if old == 0 and new != 0:
        gp_i64_fetch_add_relaxed(m.cooling, 1)
    done[0] = gp_u64_cas_relaxed(_deadline(m, idx), old, new)
    if done[0]:
        if old != 0 and new == 0:
            _cooling_leave(m)
    elif old == 0 and new != 0:
        _cooling_leave(m)


cdef inline void _cooling_leave(gp_members *m) noexcept nogil:
    """Lower ``cooling`` for a deadline (or a mark) that was counted in it: the
    over-count ``_set_deadline`` keeps never goes below zero."""
    cdef int64_t before = gp_i64_fetch_add_relaxed(m.cooling, -1)
    GP_ASSERT(before >= 1)


cdef uint64_t _fail(gp_core *core, gp_members *m, Py_ssize_t idx, uint64_t cooldown_ns,
                    uint64_t floor_ns, uint64_t *level_out) noexcept nogil:
    """Record a failure of node idx; return the cooldown if it *entered* one (the
    node was selectable), else 0.  The deadline becomes max(current, now + cooldown):
    a new mark never shortens one already further away.  ``cooldown_ns`` 0 clears,
    POLICY asks the backoff policy; the cooldown is at least ``floor_ns`` (a
    node's Retry-After, for ``_mark_failed_at_least``).  A failure reported while
    the node is already cooling belongs to the same outage: it counts in ``total``
    but does not raise the backoff level, so a burst of in-flight requests failing
    together escalates once, as Envoy's ejections do.  Any non-zero cooldown
    records the moment in ``failed_at``, which a lease's success compares with its
    start (a request begun before the failure does not end its cooldown)."""
    cdef uint64_t now, tick, old, deadline, level, ns
    cdef bint cooling_now, done = False
    if cooldown_ns == 0:
        # No write when already clear: the common repeat costs a load, not a locked op.
        if gp_u64_load_relaxed(_deadline(m, idx)) != 0 and gp_u64_exchange_relaxed(_deadline(m, idx), 0) != 0:
            _cooling_leave(m)
        return 0
    now = _now_tick(core, &tick)
    gp_u64_store_relaxed(_failed_at(m, idx), now)
    while True:
        old = gp_u64_load_relaxed(_deadline(m, idx))
        cooling_now = old > now
        level = gp_u64_load_relaxed(_consecutive(m, idx))
        if not cooling_now:
            level += 1
        elif level == 0:
            level = 1
        ns = _backoff_ns(core, level) if cooldown_ns == POLICY else cooldown_ns
        if ns < floor_ns:
            ns = floor_ns
        deadline = FOREVER if ns >= FOREVER - now - tick else now + tick + ns
        GP_ASSERT(deadline > now)  # ns >= 1: a cooldown of 0 cleared above
        if cooling_now and old >= deadline:
            break
        _set_deadline(m, idx, old, deadline, &done)
        if done:
            break
    gp_u64_fetch_add_relaxed(_total(m, idx), 1)
    if cooling_now:
        return 0
    gp_u64_fetch_add_relaxed(_consecutive(m, idx), 1)
    level_out[0] = level
    return ns


cdef inline void _raise_deadline(gp_members *m, Py_ssize_t idx, uint64_t now, uint64_t tick,
                                 uint64_t ns) noexcept nogil:
    """Node idx's deadline to at least now + ``ns`` (saturating), by CAS: it only
    ever rises, and nothing else of the node changes (no backoff level, no count)."""
    cdef uint64_t deadline = FOREVER if ns >= FOREVER - now - tick else now + tick + ns
    cdef uint64_t old
    cdef bint done = False
    while True:
        old = gp_u64_load_relaxed(_deadline(m, idx))
        if old >= deadline:
            return
        _set_deadline(m, idx, old, deadline, &done)
        if done:
            return


cdef void _raise_remote(gp_core *core, gp_members *m, Py_ssize_t idx, uint64_t remaining_ns,
                        uint64_t failures) noexcept nogil:
    """``_apply_remote`` on one slot: each field only ever rises, by CAS."""
    cdef uint64_t now, tick, old
    if remaining_ns != 0:
        now = _now_tick(core, &tick)
        gp_u64_store_relaxed(_failed_at(m, idx), now)
        _raise_deadline(m, idx, now, tick, remaining_ns)
    while True:
        old = gp_u64_load_relaxed(_consecutive(m, idx))
        if old >= failures or gp_u64_cas_relaxed(_consecutive(m, idx), old, failures):
            break


cdef bint _clear_forever(gp_members *m, Py_ssize_t idx) noexcept nogil:
    """``_readmit`` on one slot: a deadline of FOREVER ("until cleared") becomes 0,
    by CAS (any other cooldown runs on), and the backoff level resets; whether it
    was FOREVER."""
    cdef bint done = False
    if gp_u64_load_relaxed(_deadline(m, idx)) != FOREVER:
        return False
    _set_deadline(m, idx, FOREVER, 0, &done)
    if done:
        gp_u64_store_relaxed(_consecutive(m, idx), 0)
    return done


# -- marks against update() (the module docstring, "Marks and update()") ---------

cdef inline gp_members *_mark_begin(gp_core *core, gp_atomic_u64 *in_flight) noexcept nogil:
    """Announce a mark on ``in_flight`` and return the membership it may land on:
    the current one, which ``update()`` will not copy before ``_mark_end``."""
    cdef gp_members *m
    cdef unsigned spins
    while True:
        if GP_MARKS_ANNOUNCED:
            gp_u64_fetch_add(in_flight, 1)
        m = <gp_members *><uintptr_t>gp_u64_load(&core.members)
        if not gp_u64_load(&m.retired):
            return m
        _mark_end(in_flight)
        spins = 0
        while _current(core) == m:
            gp_spin_wait(&spins)


cdef inline void _mark_end(gp_atomic_u64 *in_flight) noexcept nogil:
    cdef uint64_t before
    if GP_MARKS_ANNOUNCED:
        before = gp_u64_fetch_add_release(in_flight, <uint64_t>-1)
        GP_ASSERT(before >= 1)


cdef inline gp_members *_mark(gp_core *core, gp_members *expected, Py_ssize_t *indices,
                              Py_ssize_t count, uint64_t cooldown_ns, uint64_t floor_ns,
                              bint success, uint64_t *entered, uint64_t *levels) noexcept nogil:
    """Fail (or, with ``success``, reset the backoff of) every node of ``indices``
    at once on the membership in force, and return that membership.  An endpoint's
    indices, resolved against ``expected``, apply only if it is the one in force;
    an index mark (``expected`` NULL) only if its one index is in range there.  When
    nothing applied, the caller resolves again or raises."""
    cdef gp_atomic_u64 *in_flight = &core.stripes[_stripe(core)].in_flight
    cdef gp_members *m = _mark_begin(core, in_flight)
    cdef Py_ssize_t k
    if m == expected or (expected == NULL and indices[0] < m.n):
        for k in range(count):
            GP_ASSERT(indices[k] >= 0)
            GP_ASSERT(indices[k] < m.n)
            if success:
                gp_u64_store_relaxed(_consecutive(m, indices[k]), 0)
            else:
                entered[k] = _fail(core, m, indices[k], cooldown_ns, floor_ns, &levels[k])
    _mark_end(in_flight)
    return m


cdef inline void _copy_load(gp_load *old, gp_load *new) noexcept nogil:
    gp_u64_store_relaxed(&new.in_flight, gp_u64_load_relaxed(&old.in_flight))
    gp_u64_store_relaxed(&new.ewma_us, gp_u64_load_relaxed(&old.ewma_us))
    gp_u64_store_relaxed(&new.stamp_ns, gp_u64_load_relaxed(&old.stamp_ns))
    gp_u64_store_relaxed(&new.floor_us, gp_u64_load_relaxed(&old.floor_us))
    gp_u64_store_relaxed(&new.limit, gp_u64_load_relaxed(&old.limit))
    gp_u64_store_relaxed(&new.inv_limit, gp_u64_load_relaxed(&old.inv_limit))
    gp_u64_store_relaxed(&new.last_event_ns, gp_u64_load_relaxed(&old.last_event_ns))


cdef void _bound_shared(gp_core *core, gp_members *m) noexcept nogil:
    """A shared membership's health as other processes left it, bounded by this
    pool's rules before it is used: a deadline at most ``max_cooldown`` ahead (but
    FOREVER, "until cleared", which ``refresh()`` clears when discovery lists the
    node again), a probe claim at most ``GP_PROBE_NS`` ahead, no failure dated after
    now.  Only this user's processes can write the segment (``gp_shm_map``); this
    bounds what one of them, or a bug, can leave there."""
    cdef uint64_t tick, now = _now_tick(core, &tick), value, limit
    cdef Py_ssize_t i
    for i in range(m.n):
        limit = FOREVER - 1 if core.max_ns >= FOREVER - 1 - now - tick else now + tick + core.max_ns
        value = gp_u64_load_relaxed(_deadline(m, i))
        if value != FOREVER and value > limit:
            gp_u64_cas_relaxed(_deadline(m, i), value, limit)  # non-zero to non-zero
        limit = now + GP_PROBE_NS
        value = gp_u64_load_relaxed(_probe(m, i))
        if value > limit:
            gp_u64_cas_relaxed(_probe(m, i), value, limit)
        value = gp_u64_load_relaxed(_failed_at(m, i))
        if value > now:
            gp_u64_cas_relaxed(_failed_at(m, i), value, now)


cdef void _swap(gp_core *core, gp_members *old, gp_members *new, Py_ssize_t *pairs,
                Py_ssize_t count, bint old_health) noexcept nogil:
    """Retire ``old``, wait out the marks in flight, copy the state of each pair
    (old index, new index) and publish ``new``.  ``old_health``: whether old's
    health may be read (not when it lies in a segment found truncated)."""
    cdef Py_ssize_t k, i, j
    cdef uint64_t stripe, deadline
    cdef unsigned spins
    gp_u64_store(&old.retired, 1)
    if GP_MARKS_ANNOUNCED:
        for stripe in range(core.stripe_mask + 1):
            spins = 0
            while gp_u64_load(&core.stripes[stripe].in_flight) != 0:
                gp_spin_wait(&spins)
    new.generation = old.generation + 1
    for k in range(count):
        # The loads are the pool's own, shared or not; acquire() and every settle
        # write them inside the handshake, so a count here is exact.
        i, j = pairs[2 * k], pairs[2 * k + 1]
        _copy_load(&old.load[i], &new.load[j])
    if new.slot_of != NULL:
        count = 0  # a shared pool's nodes keep their health records in the segment
        _bound_shared(core, new)
    elif not old_health:
        count = 0
    for k in range(count):
        # old may be shared (new keeps its health to itself: the segment was full)
        i, j = pairs[2 * k], pairs[2 * k + 1]
        GP_ASSERT(i < old.n)
        GP_ASSERT(j < new.n)
        gp_u64_store_relaxed(&new.failed_at[j], gp_u64_load_relaxed(_failed_at(old, i)))
        gp_u64_store_relaxed(&new.probe[j], gp_u64_load_relaxed(_probe(old, i)))
        gp_u64_store_relaxed(&new.consecutive[j], gp_u64_load_relaxed(_consecutive(old, i)))
        gp_u64_store_relaxed(&new.total[j], gp_u64_load_relaxed(_total(old, i)))
        deadline = gp_u64_load_relaxed(_deadline(old, i))
        if deadline != 0:
            gp_u64_store_relaxed(&new.failed_until[j], deadline)
            gp_i64_fetch_add_relaxed(new.cooling, 1)
    gp_u64_exchange_acq_rel(&core.members, <uintptr_t>new)


# -- load-aware picks: _balance's rules in C, acquire()'s pick, a lease's settle ------
# The rules are cpdef, so that tests/test_balance.py compares them with _balance's
# from Python; the core calls them as C functions.

cdef extern from *:
    """
    /* _balance's constants, checked against it at import. */
    #define GP_TAU_US 10000000ULL
    #define GP_PEAK_CLIP 4ULL
    #define GP_STALE_SHIFT 33
    #define GP_UNKNOWN_US (1ULL << 40)
    #define GP_SCAN_MAX 16
    #define GP_PANIC_NUM 1
    #define GP_PANIC_DEN 2
    #define GP_PANIC_RETRY_NS 250000000ULL
    #define GP_LOAD_COOLDOWN_NS 500000000ULL
    #define GP_PROBE_NS 2000000000ULL
    #define GP_MAX_SAMPLE_US (1ULL << 32)
    #define GP_MAX_DT_US (1ULL << 28)
    """
    const uint64_t GP_TAU_US
    const uint64_t GP_PEAK_CLIP
    const int GP_STALE_SHIFT
    const uint64_t GP_UNKNOWN_US
    const Py_ssize_t GP_SCAN_MAX
    const Py_ssize_t GP_PANIC_NUM
    const Py_ssize_t GP_PANIC_DEN
    const uint64_t GP_PANIC_RETRY_NS
    const uint64_t GP_LOAD_COOLDOWN_NS
    const uint64_t GP_PROBE_NS
    const uint64_t GP_MAX_SAMPLE_US
    const uint64_t GP_MAX_DT_US


if ((GP_TAU_US, GP_PEAK_CLIP, GP_STALE_SHIFT, GP_UNKNOWN_US, GP_SCAN_MAX,
        (GP_PANIC_NUM, GP_PANIC_DEN), GP_PANIC_RETRY_NS, GP_LOAD_COOLDOWN_NS, GP_PROBE_NS,
        GP_MAX_SAMPLE_US, GP_MAX_DT_US)
        != (_balance.TAU_US, _balance.PEAK_CLIP, _balance.STALE_SHIFT, _balance.UNKNOWN_US,
            _balance.SCAN_MAX, _balance.PANIC_SHARE, _balance.PANIC_RETRY_NS, _balance.LOAD_COOLDOWN_NS,
            _balance.PROBE_NS, _balance._MAX_SAMPLE_US, _balance._MAX_DT_US)):
    raise ImportError("gonka_pool._pool was built against other _balance constants")

# acquire()'s policies (_balance.BALANCE_POLICIES' order).
cdef enum:
    PEAK_EWMA = 0
    LEAST_REQUEST = 1
    ROUND_ROBIN = 2

# What EndpointPool._each_slot does to an endpoint's slots, and what it found.
cdef enum:
    SLOT_REMOTE = 0
    SLOT_READMIT = 1
    SLOT_ABSENT = 0
    SLOT_FOUND = 1
    SLOT_DONE = 2

# What a settle does (Lease._settle's kind).
cdef enum:
    SETTLE_RELEASE = 0
    SETTLE_SUCCESS = 1
    SETTLE_FAILURE = 2
    SETTLE_OVERLOADED = 3
    SETTLE_ANSWERED = 4

cdef uint64_t _GOLDEN = 0x9E3779B97F4A7C15ULL


cpdef uint64_t _next_ewma(uint64_t ewma_us, uint64_t stamp_ns, uint64_t sample_us,
                          uint64_t now_ns) noexcept nogil:
    """``_balance.next_ewma``."""
    cdef uint64_t sample = sample_us if sample_us < GP_MAX_SAMPLE_US else GP_MAX_SAMPLE_US
    cdef uint64_t dt_us
    if ewma_us == 0:
        return sample
    if sample > ewma_us * GP_PEAK_CLIP:
        sample = ewma_us * GP_PEAK_CLIP
    if sample >= ewma_us:
        return sample
    dt_us = (now_ns - stamp_ns) // 1000 if now_ns > stamp_ns else 0
    if dt_us > GP_MAX_DT_US:
        dt_us = GP_MAX_DT_US
    # In doubles, as the twin: an integer division of 64 bits costs several times a
    # double's here.  A product feeds a division, never an addition, so no compiler
    # may fuse it into a multiply-add, which rounds once where the twin rounds twice.
    return ewma_us - <uint64_t>(<double><int64_t>(ewma_us - sample) * <double><int64_t>dt_us
                                / <double><int64_t>(GP_TAU_US + dt_us))


cpdef uint64_t _answered_ewma(uint64_t ewma_us, uint64_t floor_us, uint64_t sample_us,
                              uint64_t largest_us) noexcept nogil:
    """``_balance.answered_ewma``."""
    cdef uint64_t sample = sample_us if sample_us < GP_MAX_SAMPLE_US else GP_MAX_SAMPLE_US
    if floor_us == 0:
        return sample if sample > largest_us else largest_us
    if sample > ewma_us * GP_PEAK_CLIP:
        sample = ewma_us * GP_PEAK_CLIP
    return sample if sample > ewma_us else ewma_us


cpdef uint64_t _next_floor(uint64_t floor_us, uint64_t sample_us) noexcept nogil:
    """``_balance.next_floor``."""
    cdef uint64_t sample = sample_us if sample_us < GP_MAX_SAMPLE_US else GP_MAX_SAMPLE_US
    if floor_us == 0 or sample < floor_us:
        return sample
    return floor_us + ((sample - floor_us) >> 6)


cpdef uint64_t _overloaded_limit(uint64_t limit, uint64_t in_flight_at_pick) noexcept nogil:
    """``_balance.overloaded_limit``."""
    cdef uint64_t below = in_flight_at_pick - 1 if in_flight_at_pick > 1 else 1
    return below if below < limit else limit


cpdef uint64_t _learn_limit(uint64_t limit, uint64_t floor_us, uint64_t sample_us,
                            uint64_t in_flight_at_pick) noexcept nogil:
    """``_balance.learn_limit`` (a sample is at most 2**64 / 1000 us: x2 does not wrap)."""
    if floor_us == 0:
        return limit
    if sample_us * 2 < floor_us * 3:
        return in_flight_at_pick if in_flight_at_pick > limit else limit
    if sample_us >= floor_us * 2:
        return _overloaded_limit(limit, in_flight_at_pick)
    return limit


cpdef uint64_t _cost(int policy, uint64_t ewma_us, uint64_t stamp_ns, uint64_t in_flight,
                     uint64_t last_event_ns, uint64_t now_ns) noexcept nogil:
    """``_balance.cost``."""
    cdef uint64_t latency = ewma_us, halvings, age_us
    if policy == LEAST_REQUEST:
        return 1
    if latency == 0:
        return 0 if in_flight == 0 else GP_UNKNOWN_US
    if in_flight == 0:
        if now_ns > stamp_ns:
            halvings = (now_ns - stamp_ns) >> GP_STALE_SHIFT
            latency = 0 if halvings >= 63 else latency >> halvings
        return latency
    if now_ns > last_event_ns:
        age_us = (now_ns - last_event_ns) // 1000
        if age_us > latency:
            latency = age_us if age_us < ewma_us * GP_PEAK_CLIP else ewma_us * GP_PEAK_CLIP
    return latency


cpdef uint64_t _mix64(uint64_t x) noexcept nogil:
    """``_balance.mix64``: splitmix64's output for the state ``x`` (the state
    advances by the golden gamma first, as in Steele, Lea and Flood's generator)."""
    cdef uint64_t z = x + _GOLDEN
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cpdef uint64_t _jitter_ns(uint64_t base_ns, uint64_t now_ns, uint64_t idx) noexcept nogil:
    """``_balance.jitter_ns``: its hash is ``_mix64(now + idx x gamma)``.  The
    product base x (z >> 32) is taken in two halves, exact for any base below 2**64
    (Python's integers need no such care)."""
    cdef uint64_t high = _mix64(now_ns + idx * _GOLDEN) >> 32
    return base_ns // 2 + (base_ns >> 32) * high + (((base_ns & 0xFFFFFFFFULL) * high) >> 32)


cdef inline double _weigh(int policy, gp_load *load, const double *capacity, Py_ssize_t i,
                          uint64_t now) noexcept nogil:
    """Node i's cost, ``latency x (in_flight + 1) / capacity`` (``_balance``'s
    docstring), in IEEE doubles as the twin computes it.  The policy and the arrays
    come in as arguments: read from the pool's structs inside a loop that stores,
    the compiler would reload them at every node (CPython builds with
    -fno-strict-aliasing)."""
    cdef uint64_t in_flight = gp_u64_load_relaxed(&load.in_flight)
    cdef uint64_t latency = 1
    cdef double inverse
    if policy != LEAST_REQUEST:
        latency = _cost(PEAK_EWMA, gp_u64_load_relaxed(&load.ewma_us),
                        gp_u64_load_relaxed(&load.stamp_ns), in_flight,
                        gp_u64_load_relaxed(&load.last_event_ns), now)
    if capacity != NULL:
        inverse = capacity[i]
    elif policy == PEAK_EWMA:
        inverse = gp_bits_double(gp_u64_load_relaxed(&load.inv_limit))
    else:
        inverse = 1.0
    # Through int64_t: every value here is below 2**62, and a signed conversion is
    # one instruction where an unsigned one branches on the top bit.  A multiply by
    # the capacity's inverse, kept beside it: a division per node was most of a
    # pick's time (perf).
    return <double><int64_t>latency * <double><int64_t>(in_flight + 1) * inverse


# A node's availability to a pick (only read while the membership counts a cooling
# node), from best to worst: selectable; selectable by one lease that claims its
# probe (its cooldown is over, not yet proven by an answer, or it began in a
# correlated failure, which is not trusted once PANIC_RETRY_NS has passed since the
# node last failed); cooling, but a candidate through a probe claim while more than
# half cool (the same PANIC_RETRY_NS after its last failure); blocked (cooling, or
# another lease probes it).
cdef enum:
    OPEN = 0
    TO_PROBE = 1
    TO_RETRY = 2
    BLOCKED = 3


cdef inline int _availability(gp_members *m, Py_ssize_t i, uint64_t now, uint64_t panic_ns,
                              uint64_t *probe_seen) noexcept nogil:
    cdef uint64_t deadline = gp_u64_load_relaxed(_deadline(m, i)), probe, failed_at
    if deadline == 0:
        return OPEN
    probe = gp_u64_load_relaxed(_probe(m, i))
    if probe > now:
        return BLOCKED
    probe_seen[0] = probe
    if deadline <= now:
        return TO_PROBE
    failed_at = gp_u64_load_relaxed(_failed_at(m, i))
    if now >= failed_at and now - failed_at >= GP_PANIC_RETRY_NS:
        # Last failed before a pick last saw more than half cooling: a cooldown of
        # the correlated failure, retried until the node answers or fails anew.
        return TO_PROBE if failed_at < panic_ns else TO_RETRY
    return BLOCKED


cdef inline void _saw_panic(gp_core *core, uint64_t now) noexcept nogil:
    """Remember that a pick found more than half the nodes cooling at ``now``."""
    if gp_u64_load_relaxed(&core.panic_ns) != now + 1:
        gp_u64_store_relaxed(&core.panic_ns, now + 1)


cdef inline bint _claim(gp_members *m, Py_ssize_t i, uint64_t seen, uint64_t now,
                        uint64_t *claim) noexcept nogil:
    """Claim node i's probe by CAS from the value read: one lease wins."""
    cdef uint64_t until = now + GP_PROBE_NS
    if gp_u64_cas_relaxed(_probe(m, i), seen, until):
        claim[0] = until
        return True
    return False


cdef struct gp_seen:
    # A node a pick weighed: its cost, availability and probe value read.
    Py_ssize_t node
    double cost
    int state
    uint64_t probe


cdef inline Py_ssize_t _best(gp_seen *seen, Py_ssize_t count, int worst) noexcept nogil:
    """The position in ``seen`` of the least cost whose state is at most ``worst``,
    the first among equals; -1 if none (the twin's ``_best``)."""
    cdef Py_ssize_t k, best = -1
    for k in range(count):
        if seen[k].state <= worst and (best < 0 or seen[k].cost < seen[best].cost):
            best = k
    return best


cdef Py_ssize_t _pick_scan(gp_core *core, gp_members *m, gp_atomic_u64 *cursor, uint64_t now,
                           uint64_t *claim) noexcept nogil:
    """A pool of at most SCAN_MAX nodes: the least cost of all the available nodes,
    scanned from the stripe's cursor (ties keep the first).  When more than
    PANIC_SHARE are cooling (a correlated failure), the cooling nodes whose last
    failure is PANIC_RETRY_NS old compete too, each through a probe claim; with no
    candidate at all, the least cost of every node, unclaimed.  A claim lost to
    another thread scans again (3 scans at most)."""
    cdef bint cooling = gp_i64_load_relaxed(m.cooling) > 0
    cdef Py_ssize_t n = m.n, scan, k, i, best, every, blocked
    cdef double every_cost = 0.0
    cdef double costs[16]
    cdef gp_seen seen[16]
    cdef int policy = core.balance
    cdef gp_load *loads = m.load
    cdef const double *capacity = m.capacity
    cdef uint64_t panic_ns
    cdef bint panic
    if not cooling:
        # Every node available, none to probe, no panic: the least cost, no more
        # (the common case).  The costs first, each independent of the others so
        # that the processor overlaps them, then the least, first among equals.
        i = <Py_ssize_t>gp_mod(_scan_position(cursor), <uint64_t>n, m.n_inv)
        for k in range(n):
            costs[k] = _weigh(policy, &loads[i], capacity, i, now)
            i += 1
            if i == n:
                i = 0
        best = 0
        for k in range(1, n):
            if costs[k] < costs[best]:
                best = k
        i += best
        return i - n if i >= n else i
    every = 0
    panic_ns = gp_u64_load_relaxed(&core.panic_ns)
    for scan in range(3):
        i = <Py_ssize_t>gp_mod(_scan_position(cursor), <uint64_t>n, m.n_inv)
        every = -1
        blocked = 0
        for k in range(n):
            seen[k].cost = _weigh(policy, &loads[i], capacity, i, now)
            if every < 0 or seen[k].cost < every_cost:
                every, every_cost = i, seen[k].cost
            seen[k].node = i
            seen[k].probe = 0
            seen[k].state = _availability(m, i, now, panic_ns, &seen[k].probe)
            if seen[k].state >= TO_RETRY:
                blocked += 1
            i += 1
            if i == n:
                i = 0
        panic = blocked * GP_PANIC_DEN > n * GP_PANIC_NUM
        if panic:
            _saw_panic(core, now)
        best = _best(seen, n, TO_RETRY if panic else TO_PROBE)
        if best < 0:
            return every
        if seen[best].state == OPEN or _claim(m, seen[best].node, seen[best].probe, now, claim):
            return seen[best].node
    return every


cdef Py_ssize_t _pick_pairs(gp_core *core, gp_members *m, gp_atomic_u64 *cursor, uint64_t now,
                            uint64_t *claim) noexcept nogil:
    """A pool of more than SCAN_MAX nodes: the better available node of two random
    ones (``_mix64`` of the stripe's cursor), at most 4 pairs; then the least cost
    of the 8 drawn that may be retried (a correlated failure, most likely), through
    a claim; else the least cost of all drawn, unclaimed."""
    cdef bint cooling = gp_i64_load_relaxed(m.cooling) > 0
    cdef uint64_t n = <uint64_t>m.n, h
    cdef Py_ssize_t pair, k, best, every = -1, a
    cdef double every_cost = 0.0
    cdef gp_seen drawn[8]
    cdef int policy = core.balance
    cdef gp_load *loads = m.load
    cdef const double *capacity = m.capacity
    cdef gp_seen *two
    cdef uint64_t panic_ns = gp_u64_load_relaxed(&core.panic_ns)
    for pair in range(4):
        two = &drawn[2 * pair]
        h = _mix64(_scan_position(cursor))
        a = <Py_ssize_t>((h >> 32) % n)
        two[0].node = a
        two[1].node = <Py_ssize_t>((<uint64_t>a + 1 + (h & 0xFFFFFFFFULL) % (n - 1)) % n)
        for k in range(2):
            two[k].cost = _weigh(policy, &loads[two[k].node], capacity, two[k].node, now)
            if every < 0 or two[k].cost < every_cost:
                every, every_cost = two[k].node, two[k].cost
            two[k].probe = 0
            two[k].state = _availability(m, two[k].node, now, panic_ns, &two[k].probe) if cooling else OPEN
        best = _best(two, 2, TO_PROBE)
        if best >= 0:
            if two[best].state == OPEN or _claim(m, two[best].node, two[best].probe, now, claim):
                return two[best].node
            two[best].state = BLOCKED  # a claim lost counts as blocked
            best = _best(two, 2, TO_PROBE)
            if best >= 0 and (two[best].state == OPEN
                              or _claim(m, two[best].node, two[best].probe, now, claim)):
                return two[best].node
    _saw_panic(core, now)  # eight draws and none available: more than half cool, most likely
    best = _best(drawn, 8, TO_RETRY)
    if best >= 0 and _claim(m, drawn[best].node, drawn[best].probe, now, claim):
        return drawn[best].node
    return every


cdef struct gp_settled:
    # What a settle did, for the Python that follows it (log line, observer).
    uint64_t entered                  # failure: the cooldown it entered, else 0
    uint64_t level                    # failure: the backoff level it entered at
    uint64_t failures                 # success: the consecutive count it reset


cdef void _settle_at(gp_core *core, gp_members *m, Py_ssize_t idx, int kind, uint64_t start_ns,
                     uint64_t q, uint64_t claim, uint64_t cooldown_ns, uint64_t floor_ns,
                     gp_settled *out) noexcept nogil:
    """Settle a lease on node idx of ``m``, inside the marks' handshake."""
    cdef gp_load *load = &m.load[idx]
    cdef uint64_t tick, now = _now_tick(core, &tick)
    cdef uint64_t sample_us, floor_us, deadline, ewma, ns, largest
    cdef Py_ssize_t i
    cdef bint done = False
    GP_ASSERT(idx >= 0)
    GP_ASSERT(idx < m.n)
    _count_down(&load.in_flight)
    gp_u64_store_relaxed(&load.last_event_ns, now)
    sample_us = (now - start_ns) // 1000 if now > start_ns else 0
    if sample_us == 0:
        sample_us = 1
    if kind == SETTLE_SUCCESS:
        floor_us = gp_u64_load_relaxed(&load.floor_us)
        _set_limit(load, _learn_limit(gp_u64_load_relaxed(&load.limit), floor_us,
                                                       sample_us, q))
        gp_u64_store_relaxed(&load.floor_us, _next_floor(floor_us, sample_us))
        # While floor_us is 0 no answer has measured the node: an estimate there is
        # answered()'s stand-in, which the first measurement replaces.
        gp_u64_store_relaxed(&load.ewma_us, _next_ewma(gp_u64_load_relaxed(&load.ewma_us) if floor_us else 0,
                                                       gp_u64_load_relaxed(&load.stamp_ns),
                                                       sample_us, now))
        gp_u64_store_relaxed(&load.stamp_ns, now)
        # No write when already 0: a shared pool's count is a line every process reads.
        out.failures = gp_u64_load_relaxed(_consecutive(m, idx))
        if out.failures != 0:
            gp_u64_store_relaxed(_consecutive(m, idx), 0)
        deadline = gp_u64_load_relaxed(_deadline(m, idx))
        if deadline != 0 and start_ns > gp_u64_load_relaxed(_failed_at(m, idx)):
            # By CAS from the deadline read: a failure that raised it since stays.
            _set_deadline(m, idx, deadline, 0, &done)
    elif kind == SETTLE_ANSWERED:
        floor_us = gp_u64_load_relaxed(&load.floor_us)
        largest = 0
        if floor_us == 0:  # rare: a node never measured, answering what tells nothing
            for i in range(m.n):
                if i != idx and gp_u64_load_relaxed(&m.load[i].ewma_us) > largest:
                    largest = gp_u64_load_relaxed(&m.load[i].ewma_us)
        gp_u64_store_relaxed(&load.ewma_us, _answered_ewma(gp_u64_load_relaxed(&load.ewma_us), floor_us,
                                                           sample_us, largest))
        gp_u64_store_relaxed(&load.stamp_ns, now)
    elif kind == SETTLE_FAILURE:
        out.entered = _fail(core, m, idx, cooldown_ns, floor_ns, &out.level)
    elif kind == SETTLE_OVERLOADED:
        ns = _jitter_ns(GP_LOAD_COOLDOWN_NS, now, <uint64_t>idx) if cooldown_ns == POLICY else cooldown_ns
        gp_u64_store_relaxed(_failed_at(m, idx), now)
        if ns != 0:  # overloaded(0): no rest, the rest as any refusal
            _raise_deadline(m, idx, now, tick, ns)
        _set_limit(load, _overloaded_limit(gp_u64_load_relaxed(&load.limit), q))
        if m.capacity != NULL:
            ewma = gp_u64_load_relaxed(&load.ewma_us)
            if ewma != 0:
                gp_u64_store_relaxed(&load.ewma_us, ewma * 2 if ewma * 2 < GP_MAX_SAMPLE_US
                                     else GP_MAX_SAMPLE_US)
    if claim != 0:
        gp_u64_cas_relaxed(_probe(m, idx), claim, 0)


# -- arguments --------------------------------------------------------------------

cdef inline Py_ssize_t _index_value(object key) noexcept:
    """An exact int as an index, or PY_SSIZE_T_MAX where no pool has it (negative,
    or beyond any size): the range check waits for the membership the mark finds."""
    cdef int overflow = 0
    cdef long long i = PyLong_AsLongLongAndOverflow(key, &overflow)
    if overflow or i < 0 or i >= PY_SSIZE_T_MAX:
        return PY_SSIZE_T_MAX
    return <Py_ssize_t>i


cdef object _fail_index(gp_core *core, object target, uint64_t cooldown_ns, uint64_t floor_ns,
                        object observer):
    """``mark_failed`` of an index target: True, or IndexError if the membership
    the mark found has no such index.  ``mark_failed`` inlines the exact-int case."""
    cdef uint64_t entered = 0, level = 0
    cdef gp_members *m
    cdef Py_ssize_t idx
    key = target if type(target) is int else _endpoint_index(target)
    idx = _index_value(key)
    m = _mark(core, NULL, &idx, 1, cooldown_ns, floor_ns, False, &entered, &level)
    return _index_marked(m, key, idx, entered, level, observer)


cdef object _index_marked(gp_members *m, object key, Py_ssize_t idx, uint64_t entered,
                          uint64_t level, object observer):
    """The rare end of an index mark: IndexError when ``m``, the membership it
    found, has no such index, or the log line of a cooldown it entered."""
    if idx >= m.n:
        raise _index_error(key, m.n)
    if entered:
        # Still the C call that found m: retired or not, it is not freed before
        # this thread next runs Python (see "Reclaiming" above).
        _log_cooldown(<object>_item(m, 0, idx), entered, level)
        if observer is not None:
            observer("cooldown", <object>_item(m, 0, idx), entered, level)
    return True


cdef inline int _cooldown_ns(object cooldown, uint64_t *out) except -1:
    """Seconds (int, float, any real number) or a timedelta -> whole nanoseconds in
    ``out``.  0 means "clear"; any positive cooldown is at least 1 ns; too large
    saturates.  The common case, an exact float or int in range, is converted here,
    inline; the rest and every error by ``_convert.cooldown_ns`` (the twin's rule,
    through ``_cooldown_ns_any``).  An error return is -1 only, so a 0 result costs
    no PyErr_Occurred check."""
    cdef double seconds
    cdef int overflow = 0
    cdef long long whole
    if type(cooldown) is float:
        seconds = PyFloat_AS_DOUBLE(cooldown)
        if 0 <= seconds * NS_PER_S < SATURATING_NS_DOUBLE:  # not NaN, not negative
            out[0] = <uint64_t>ceil(seconds * NS_PER_S)
            return 0
    elif type(cooldown) is int:
        whole = PyLong_AsLongLongAndOverflow(cooldown, &overflow)
        if overflow == 0 and 0 <= whole < _SATURATING_SECONDS:
            out[0] = <uint64_t>whole * NS_PER_S
            return 0
    return _cooldown_ns_any(cooldown, out)


cdef int _cooldown_ns_any(object cooldown, uint64_t *out) except -1:
    """``_cooldown_ns`` for any value, with its errors: out of line, so that the
    inline fast path stays small.  An exact, non-negative timedelta that needs no
    saturation is converted here, as ``_convert.cooldown_ns`` would (its fields are
    whole microseconds): through Python it cost 3x an index mark
    (``benchmarks/mark_cost.py``'s ``mark_failed(i, timedelta)`` row)."""
    cdef long long days, seconds
    if type(cooldown) is _timedelta_type:
        days = timedelta_days(cooldown)
        if 0 <= days < _SATURATING_SECONDS // 86400:
            seconds = days * 86400 + timedelta_seconds(cooldown)
            if seconds < _SATURATING_SECONDS - 1:  # then below 2**64 ns with any microseconds
                out[0] = <uint64_t>seconds * NS_PER_S + <uint64_t>timedelta_microseconds(cooldown) * 1000
                return 0
    out[0] = _convert_cooldown_ns(cooldown)
    return 0


import_datetime()


cdef double _INF = float("inf")


@cython.final
@cython.no_gc_clear
@cython.auto_pickle(False)
cdef class _CoreOwner:
    """What a pool's leases need once the pool itself may be gone: the ``gp_core``
    block (freed here, not by the pool), the membership in force, the replaced ones
    not yet reclaimable, and the observer.  Refers to no pool and no anchor, so it
    closes no cycle of its own; tracked by the collector only because an observer
    may refer back to the pool (never cleared by it: the core must outlive
    whatever still reaches it)."""

    cdef gp_core *core
    cdef _Members members             # the pool's current one (written under its _update_lock)
    cdef list retired                 # [(collections started at retirement, _Members)]
    cdef object observer              # the pool's observer, or None
    cdef list observers_set           # every observer ever set (see _set_observer)

    def __dealloc__(self):
        if self.core != NULL:
            PyMem_RawFree(self.core.allocation)
            self.core = NULL


@cython.final
@cython.no_gc
@cython.auto_pickle(False)
cdef class _Anchor:
    """What a lease holds instead of its pool: the owner of the core, and the core.
    One per stripe, so that on free-threaded builds each thread's leases write the
    reference count of an object of their own (one shared pool's count, written by
    every lease of every thread, bounced its cache line between cores).  The padding
    keeps two anchors' counts off one 64-byte line, and off one 128-byte pair of
    lines (the adjacent-line prefetch)."""

    cdef _CoreOwner owner
    cdef gp_core *core
    cdef char _padding[128]


cdef class EndpointPool:
    """EndpointPool(endpoints, *, weights=None, start='random', base_cooldown=30.0, max_cooldown=300.0, shared=None, shared_capacity=None, balance='peak_ewma')
--

Pool of endpoints that skips nodes in their failure cooldown: ``next()`` in
round-robin order, ``acquire()`` by load (``balance=``).

    ``endpoints`` is any non-empty iterable of ``GonkaEndpoint``.  Safe
    to share across threads, with or without the GIL; selection, leases and marks
    are lock-free.  ``shared="NAME"`` keeps the nodes' health in the shared-memory
    segment NAME (created if new, holding ``shared_capacity`` endpoints, 1024 by
    default), which every pool naming it sees, in any process of this machine.
    """

    cdef gp_core *_core               # _owner.core
    cdef _CoreOwner _owner            # frees the core; what leases reach through _anchors
    cdef tuple _anchors               # STRIPES _Anchor: a lease takes its stripe's
    cdef PyObject **_anchor_items     # _anchors' items (read without writing the tuple's count)
    cdef _Members _members            # the current membership (written under _update_lock)
    cdef object _update_lock
    cdef uint64_t _cursor_origin      # the stripes' starting positions, summed
    cdef list _starts                 # each stripe's starting position
    cdef _Segment _segment            # shared=: the segment holding node health, else None
    cdef object _observer             # _set_observer's fn, or None
    cdef object __weakref__           # start="random": the fork hook's registry holds it weakly

    # The arguments are parsed by hand, so that a mistake is reported against
    # EndpointPool() as the twin reports it, not against __cinit__; the first line
    # of the class docstring gives inspect and help() the signature.
    def __cinit__(self, *args, **kwargs):
        cdef size_t line = GP_CACHE_LINE
        cdef size_t head = (sizeof(gp_core) + line - 1) // line * line
        cdef Py_ssize_t stripes = STRIPES, s
        cdef uint64_t offset
        cdef uint64_t base_ns, max_ns
        cdef char *raw
        cdef char *base
        endpoints, weights, start, base_cooldown, max_cooldown, shared, shared_capacity, balance = \
            _constructor_arguments(type(self).__name__, args, kwargs)
        cdef uint64_t policy = _balance.check_balance(balance)
        _cooldown_ns(base_cooldown, &base_ns)
        _cooldown_ns(max_cooldown, &max_ns)
        if base_ns == 0 or max_ns < base_ns:
            raise ValueError("need 0 < base_cooldown <= max_cooldown, got "
                             f"{base_cooldown!r} and {max_cooldown!r}")
        nodes, weights, schedule, start = _prepare(endpoints, weights, start)
        if shared is not None:
            self._segment = _Segment(shared, shared_capacity)
        elif shared_capacity is not None:
            raise TypeError("shared_capacity= sizes a shared segment: pass shared= too")
        members = _Members(nodes, weights, schedule, self._segment)
        cdef _CoreOwner owner = _CoreOwner.__new__(_CoreOwner)
        cdef _Anchor anchor
        raw = <char *>PyMem_RawCalloc(1, line + head + <size_t>stripes * sizeof(gp_stripe))
        if raw == NULL:
            raise MemoryError()
        base = <char *>((<uintptr_t>raw + line - 1) // line * line)
        owner.core = <gp_core *>base
        owner.core.allocation = raw
        self._owner = owner
        self._core = owner.core
        self._core.stripes = <gp_stripe *>(base + head)
        self._core.stripe_mask = <uint64_t>stripes - 1
        self._core.base_ns = base_ns
        self._core.max_ns = max_ns
        self._core.balance = policy
        gp_i64_store_relaxed(&self._core.test_now, -1)
        self._starts = []
        for s in range(stripes):
            offset = <uint64_t>(_random_offset() if start is None else start)
            gp_u64_store_relaxed(&self._core.stripes[s].cursor, offset)
            self._cursor_origin += offset
            self._starts.append(offset)
        self._members = members
        owner.members = members
        if members.m.slot_of != NULL:
            _bound_shared(self._core, members.m)
        gp_u64_store_relaxed(&self._core.members, <uintptr_t>members.m)
        owner.retired = []
        anchors = []
        for s in range(stripes):
            anchor = _Anchor.__new__(_Anchor)
            anchor.owner = owner
            anchor.core = owner.core
            anchors.append(anchor)
        self._anchors = tuple(anchors)
        self._anchor_items = PySequence_Fast_ITEMS(self._anchors)
        self._update_lock = _Lock()
        if start is None:
            _restart_at_random_after_fork(self)

    # -- selection (the hot path) ------------------------------------------------

    def next(self):
        """Return the next healthy endpoint in round-robin order.

        Nodes inside their cooldown are skipped; when every node is cooling down,
        the one whose cooldown ends first is returned.  Never raises.
        """
        cdef gp_members *m = _current(self._core)
        cdef uint64_t stripe = _stripe(self._core)
        return <object>_item(m, stripe, _select(self._core, m, stripe))

    def next_indexed(self):
        """Like ``next()``, also returning the node's index for ``mark_failed``."""
        cdef gp_members *m = _current(self._core)
        cdef uint64_t stripe = _stripe(self._core)
        cdef Py_ssize_t idx = _select(self._core, m, stripe)
        return (idx, <object>_item(m, stripe, idx))

    def next_many(self, k, /):
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
        cdef gp_members *m
        cdef uint64_t stripe
        cdef _Members pinned
        cdef object node
        if count > 64:
            picks = <Py_ssize_t *>PyMem_RawCalloc(count, sizeof(Py_ssize_t))
            if picks == NULL:
                raise MemoryError()
        m = _current(self._core)
        stripe = _stripe(self._core)
        if count >= _NOGIL_MIN:
            pinned = <_Members>m.owner  # holds the membership while the GIL is released
            with nogil:
                _select_batch(self._core, m, stripe, picks, count)
        else:
            _select_batch(self._core, m, stripe, picks, count)
        for i in range(count):
            node = <object>_item(m, stripe, picks[i])
            Py_INCREF(node)
            PyList_SET_ITEM(out, i, node)
        if picks != small:
            PyMem_RawFree(picks)
        return out

    def acquire(self):
        """Pick a node by the pool's ``balance=`` policy and count a request to it
        in flight: a ``Lease`` to settle once, with ``success()``, ``failure()``,
        ``overloaded()`` or ``release()`` (or ``with pool.acquire() as lease:``,
        which releases what was not settled).  Never raises.

        ``"peak_ewma"`` and ``"least_request"`` take the least cost among the
        available nodes (a whole scan up to 16 nodes, the better of two random
        ones beyond); more than half of them cooling at once is taken for a
        correlated failure, and every node competes by cost.  ``"round_robin"``
        picks as ``next()`` does.
        """
        cdef gp_core *core = self._core
        cdef uint64_t stripe = _stripe(core)
        cdef gp_stripe *own = &core.stripes[stripe]
        cdef gp_members *m = _mark_begin(core, &own.in_flight)
        cdef uint64_t now = _now(core), claim = 0
        cdef Py_ssize_t idx
        if core.balance == ROUND_ROBIN:
            if gp_i64_load_relaxed(m.cooling) <= 0:
                idx = _node_at(m, gp_u64_fetch_add_relaxed(&own.cursor, 1))
            else:
                idx = _select_at(m, &own.cursor, now)
        elif m.n <= GP_SCAN_MAX:
            idx = _pick_scan(core, m, &own.cursor, now, &claim)
        else:
            idx = _pick_pairs(core, m, &own.cursor, now, &claim)
        return _lease(self, m, stripe, &own.in_flight, idx, now, claim)

    def _acquire_index(self, index):
        """A lease on node ``index`` of the membership in force, without a pick (the
        failover loop's first untried node); IndexError if it has no such node."""
        cdef gp_core *core = self._core
        cdef uint64_t stripe = _stripe(core)
        cdef gp_atomic_u64 *marks = &core.stripes[stripe].in_flight
        cdef gp_members *m
        cdef Py_ssize_t idx, n
        key = index if type(index) is int else _endpoint_index(index)
        idx = _index_value(key)
        m = _mark_begin(core, marks)
        if idx >= m.n:
            n = m.n
            _mark_end(marks)
            raise _index_error(key, n)
        return _lease(self, m, stripe, marks, idx, _now(core), 0)

    # -- failures -----------------------------------------------------------------

    def mark_failed(self, target, cooldown=None):
        """Skip ``target`` (an index, or a ``GonkaEndpoint`` of the pool) for
        ``cooldown`` (seconds or a timedelta; 0 clears it; None lets the pool's
        backoff policy decide).

        The deadline becomes the later of the current one and now + cooldown: a new
        mark never shortens a cooldown, except 0, which clears.  Returns True, or
        False when an endpoint target is not in the pool (the mark is ignored).
        Raises IndexError, TypeError or ValueError for bad arguments, leaving the
        pool unchanged.
        """
        cdef uint64_t cooldown_ns, entered = 0, level = 0
        cdef gp_members *m
        cdef Py_ssize_t idx
        if cooldown is None:
            cooldown_ns = POLICY
        else:
            _cooldown_ns(cooldown, &cooldown_ns)
        if type(target) is int:
            idx = _index_value(target)
            m = _mark(self._core, NULL, &idx, 1, cooldown_ns, 0, False, &entered, &level)
            if idx < m.n and not entered:
                return True
            return _index_marked(m, target, idx, entered, level, self._observer)
        if _is_index(target):
            return _fail_index(self._core, target, cooldown_ns, 0, self._observer)
        return self._mark_endpoint(_check_endpoint(target), cooldown_ns, 0, False)

    def _mark_failed_at_least(self, target, cooldown, at_least):
        """``mark_failed(target, cooldown)`` with a cooldown of at least ``at_least``
        seconds: the failover loop's mark when a node's ``Retry-After`` asks for
        longer than the pool's backoff may give (one failure, counted once)."""
        cdef uint64_t cooldown_ns, floor_ns
        if cooldown is None:
            cooldown_ns = POLICY
        else:
            _cooldown_ns(cooldown, &cooldown_ns)
        _cooldown_ns(at_least, &floor_ns)
        if _is_index(target):
            return _fail_index(self._core, target, cooldown_ns, floor_ns, self._observer)
        return self._mark_endpoint(_check_endpoint(target), cooldown_ns, floor_ns, False)

    def mark_success(self, target, /):
        """Reset ``target``'s consecutive-failure count (its backoff level); a
        cooldown already running is left to run.  Returns True, or False when an
        endpoint target is not in the pool."""
        cdef gp_members *m
        cdef Py_ssize_t idx
        if self._observer is not None:
            return self._mark_success_observed(target)
        if _is_index(target):
            key = target if type(target) is int else _endpoint_index(target)
            idx = _index_value(key)
            m = _mark(self._core, NULL, &idx, 1, 0, 0, True, NULL, NULL)
            if idx >= m.n:
                raise _index_error(key, m.n)
            return True
        return self._mark_endpoint(_check_endpoint(target), 0, 0, True)

    cdef bint _mark_endpoint(self, object endpoint, uint64_t cooldown_ns, uint64_t floor_ns,
                             bint success) except -1:
        """Mark every slot of ``endpoint`` in the membership in force; False when
        it holds none.  The lookup runs Python (the endpoint's ``__eq__``), so it
        resolves against a pinned membership and ``_mark`` applies the indices only
        if that one is still in force, else it resolves against the new one."""
        cdef _Members members = <_Members>_current(self._core).owner
        cdef gp_members *m
        cdef Py_ssize_t count, k, capacity = 4
        cdef Py_ssize_t small[4]
        cdef uint64_t small_entered[4]
        cdef uint64_t small_levels[4]
        cdef Py_ssize_t *indices = small
        cdef uint64_t *entered = small_entered
        cdef uint64_t *levels = small_levels
        cdef tuple found
        try:
            while True:
                found = members.indices_of(endpoint)
                count = PyTuple_GET_SIZE(found)
                if count == 0:
                    return False
                if members.m.slot_of != NULL:
                    count = 1  # shared: an endpoint's duplicates are one record
                if count > capacity:  # an endpoint listed more than 4 times: rare
                    if indices != small:
                        PyMem_RawFree(indices)
                    indices = <Py_ssize_t *>PyMem_RawMalloc(
                        count * (sizeof(Py_ssize_t) + 2 * sizeof(uint64_t)))
                    if indices == NULL:
                        raise MemoryError()
                    capacity = count
                    entered = <uint64_t *>(indices + count)
                    levels = entered + count
                for k in range(count):
                    indices[k] = found[k]
                    entered[k] = 0
                m = _mark(self._core, members.m, indices, count, cooldown_ns, floor_ns, success,
                          entered, levels)
                if m == members.m:
                    break
                members = <_Members>m.owner
            if not success:
                for k in range(count):
                    if entered[k]:
                        _log_cooldown(endpoint, entered[k], levels[k])
                        observer = self._observer
                        if observer is not None:
                            observer("cooldown", endpoint, entered[k], levels[k])
            return True
        finally:
            if indices != small:
                PyMem_RawFree(indices)

    # -- membership and the request loop ------------------------------------------

    def update(self, endpoints, weights=None):
        """Replace the membership in one atomic step while other threads select.

        Nodes present before and after keep their deadlines and failure counts; a
        concurrent ``next()`` returns a node of the old set or of the new one.  An
        index from ``next_indexed()`` refers to the set in force when it was issued:
        after an update, mark by endpoint, which resolves against the current set.
        Same validation as the constructor; on error the pool is unchanged.
        """
        self._replace(*_prepare_update(endpoints, weights))

    @classmethod
    def from_env(cls, var="GONKA_ENDPOINTS", **options):
        """A pool from comma-separated ``url;address`` entries in an environment
        variable, the format gonka-openai reads (see ``GonkaEndpoint.parse``); the
        keywords are the constructor's (``weights``, ``shared``...)."""
        return _from_env(cls, var, options)

    @classmethod
    def from_gonka(cls, source_url, **options):
        """A pool of the Gonka network's participants, discovered from
        ``source_url`` and weighted by their weights: see
        ``gonka_pool.gonka.pool_from_gonka`` (keywords ``epoch``, ``allowlist``,
        ``timeout``, then the pool's own).  Needs ``pip install gonka-pool[gonka]``."""
        from .gonka import pool_from_gonka

        return pool_from_gonka(source_url, pool_class=cls, **options)

    def call(self, fn, **options):
        """``fn(endpoint)`` on the next healthy node, failing over while the node is
        at fault.

        Keywords: ``attempts=None`` (at most 8 nodes and 3 timeouts; or at most N),
        ``cooldown=None`` (the pool's backoff; or seconds), ``timeout_cooldown=None``
        (a timeout is an error; or seconds, never less than ``cooldown``),
        ``retry_on=()`` and ``timeout_on=()`` (exception classes added to the node's
        faults: ``OSError``, which includes ``ConnectionError`` and ``TimeoutError``,
        and the transport errors of httpx, httpx2 and aiohttp, known by name),
        ``deadline=None`` (seconds for the whole call: no attempt starts after it).
        A fault marks the node and tries the next; the last one is raised when the
        attempts run out; any other exception is raised at once and marks nothing; a
        return value marks the node a success.  An async ``fn`` is a TypeError.
        """
        return _failover.call(self, fn, **options)

    def acall(self, afn, **options):
        """``await pool.acall(afn)``: ``call``'s failover for an async ``afn(endpoint)``,
        with the same keywords; cancellation is never retried."""
        return _failover.acall(self, afn, **options)

    def __repr__(self):
        return _pool_repr(self)

    def _replace(self, tuple nodes not None, weights=None, schedule=None):
        """Swap in a new membership; nodes present before and after keep their
        deadlines and failure counts (k-th duplicate to k-th duplicate)."""
        cdef _Members new = _Members(nodes, weights, schedule, self._segment)
        cdef _Members old
        cdef Py_ssize_t n = new.m.n, j, count = 0
        cdef Py_ssize_t *pairs = <Py_ssize_t *>PyMem_RawMalloc(2 * n * sizeof(Py_ssize_t))
        if pairs == NULL:
            raise MemoryError()
        try:
            with self._update_lock:
                old = self._members
                # The Python half: endpoint comparisons may run any code, so they
                # finish before the old membership is retired.
                seen = {}
                for j in range(n):
                    node = nodes[j]
                    k = seen.get(node, 0)
                    seen[node] = k + 1
                    same = old.indices_of(node)
                    if k < len(same):
                        pairs[2 * count] = same[k]
                        pairs[2 * count + 1] = j
                        count += 1
                _swap(self._core, old.m, new.m, pairs, count,
                      old.segment is None or old.segment._intact())
                self._members = new
                self._owner.members = new
                old.release_records()
                self._retire(old)
        finally:
            PyMem_RawFree(pairs)

    cdef _retire(self, _Members old):
        # Kept by the owner, not the pool: a lease settling in another thread may be
        # inside ``old`` when the pool's last reference goes.
        cdef _CoreOwner owner = self._owner
        if not FREE_THREADED:
            return  # with the GIL no reader can be inside old; pins keep it alive
        finished = gp_u64_load_relaxed(&_gc_finished)
        owner.retired = [entry for entry in owner.retired if entry[0] >= finished]
        owner.retired.append((gp_u64_load_relaxed(&_gc_started), old))
        if len(owner.retired) >= RETIRED_COLLECT_AT:
            _gc.collect()
            finished = gp_u64_load_relaxed(&_gc_finished)
            owner.retired = [entry for entry in owner.retired if entry[0] >= finished]

    # -- reading ---------------------------------------------------------------------

    def snapshot(self):
        """One ``EndpointState`` per node, in pool order; lock-free, never blocks
        selection."""
        cdef _Members members = <_Members>_current(self._core).owner
        cdef gp_members *m = members.m
        cdef uint64_t now = _now(self._core), deadline, ewma_us
        cdef Py_ssize_t i
        states = []
        for i in range(m.n):
            deadline = gp_u64_load_relaxed(_deadline(m, i))
            ewma_us = gp_u64_load_relaxed(&m.load[i].ewma_us)
            states.append(_EndpointState(
                members.nodes[i],
                1 if members.weights is None else members.weights[i],
                deadline <= now,
                0.0 if deadline <= now else (_INF if deadline == FOREVER else (deadline - now) / 1e9),
                gp_u64_load_relaxed(_consecutive(m, i)),
                gp_u64_load_relaxed(_total(m, i)),
                gp_u64_load_relaxed(&m.load[i].in_flight),
                None if ewma_us == 0 else ewma_us / 1e6,
                gp_u64_load_relaxed(&m.load[i].limit),
            ))
        return tuple(states)

    @property
    def balance(self):
        """``acquire()``'s policy: ``"peak_ewma"``, ``"least_request"`` or
        ``"round_robin"`` (``next()`` is round robin whatever it is)."""
        return _balance.BALANCE_POLICIES[self._core.balance]

    @property
    def shared(self):
        """The name of the shared-memory segment holding the nodes' health
        (``shared=``), or None when this pool keeps it to itself."""
        return None if self._segment is None else self._segment.name

    @staticmethod
    def unlink_shared(name):
        """Remove the shared-memory segment ``name``: pools mapping it keep using
        it; the next pool naming it starts a new, empty one.  True when there was
        one to remove, False when there was none."""
        cdef bytes path = _segment_path(name)
        cdef int err
        if not SHARED_SUPPORTED:
            raise NotImplementedError("shared= segments need POSIX shared memory")
        err = gp_shm_unlink(path)
        if err == errno.ENOENT:
            return False
        if err:
            raise OSError(err, f"shared memory segment {name!r}: {_os.strerror(err)}")
        return True

    @property
    def endpoints(self):
        """The endpoints, in pool order, as a tuple."""
        return (<_Members>_current(self._core).owner).nodes

    @property
    def weights(self):
        """The weights, one per endpoint (all 1 when not given)."""
        cdef _Members members = <_Members>_current(self._core).owner
        return (1,) * len(members.nodes) if members.weights is None else members.weights

    def is_empty(self):
        """Always False: a pool cannot be built without endpoints."""
        return False

    def __len__(self):
        return _current(self._core).n

    def __bool__(self):
        return True

    def __getitem__(self, key):
        cdef tuple nodes = self.endpoints
        if type(key) is slice:
            return nodes[key]
        return nodes[_check_sequence_index(key, len(nodes))]

    def __iter__(self):
        return iter(self.endpoints)

    def __contains__(self, item):
        return item in self.endpoints

    # -- test and benchmark hooks (not public API) ---------------------------

    def _set_clock(self, now_ns):
        """Freeze the pool's clock at ``now_ns`` (>= 0), or resume the real one (None)."""
        gp_i64_store_relaxed(&self._core.test_now, -1 if now_ns is None else <int64_t>now_ns)

    def _state(self):
        """(selections so far, cooling, deadlines) exactly as stored, for the twin
        comparison; the first is the sum of the stripes' cursors."""
        cdef gp_members *m = _current(self._core)
        cdef uint64_t cursor_sum = 0
        cdef uint64_t stripe
        for stripe in range(self._core.stripe_mask + 1):
            cursor_sum += gp_u64_load_relaxed(&self._core.stripes[stripe].cursor)
        return (cursor_sum - self._cursor_origin,
                gp_i64_load_relaxed(m.cooling),
                [gp_u64_load_relaxed(_deadline(m, i)) for i in range(m.n)])

    def _load_state(self):
        """Per node, ``(in_flight, ewma_us, stamp_ns, floor_us, limit, last_event_ns,
        failed_at_ns, probe_ns)`` exactly as stored, for the twin comparison."""
        cdef gp_members *m = _current(self._core)
        cdef gp_load *load
        cdef Py_ssize_t i
        out = []
        for i in range(m.n):
            load = &m.load[i]
            out.append((gp_u64_load_relaxed(&load.in_flight), gp_u64_load_relaxed(&load.ewma_us),
                        gp_u64_load_relaxed(&load.stamp_ns), gp_u64_load_relaxed(&load.floor_us),
                        gp_u64_load_relaxed(&load.limit), gp_u64_load_relaxed(&load.last_event_ns),
                        gp_u64_load_relaxed(_failed_at(m, i)), gp_u64_load_relaxed(_probe(m, i))))
        return out

    def _check_consistency(self):
        """Raise AssertionError naming the first invariant the state breaks, else
        return None.  Call it while no other thread uses the pool (after a join):
        ``cooling`` also counts the marks in flight (see ``_set_deadline``)."""
        cdef gp_members *m = _current(self._core)
        cdef Py_ssize_t i, non_zero = 0
        cdef uint64_t stripe, slot, in_flight, consecutive, total
        cdef uint64_t wrapped = <uint64_t>1 << 63  # where a count below zero would land
        cdef int64_t cooling = gp_i64_load_relaxed(m.cooling)
        if m != self._members.m:
            raise AssertionError("the membership in force is not the pool's current one")
        if gp_u64_load(&m.retired):
            raise AssertionError("the membership in force is retired")
        for entry in self._owner.retired:
            if not gp_u64_load(&(<_Members>entry[1]).m.retired):
                raise AssertionError("a replaced membership is not marked retired")
        for stripe in range(self._core.stripe_mask + 1):
            in_flight = gp_u64_load(&self._core.stripes[stripe].in_flight)
            if in_flight:
                raise AssertionError(f"stripe {stripe} counts {in_flight} marks in flight")
        for i in range(m.n):
            if gp_u64_load_relaxed(_deadline(m, i)) != 0:
                non_zero += 1
            consecutive = gp_u64_load_relaxed(_consecutive(m, i))
            total = gp_u64_load_relaxed(_total(m, i))
            if consecutive >= wrapped or total >= wrapped:
                raise AssertionError(f"node {i}'s failure counts went below zero")
            if consecutive > total:  # _fail raises both; mark_success resets the first
                raise AssertionError(f"node {i} has {consecutive} consecutive failures, "
                                     f"more than its {total} in all")
            # Leases may be out: only a count that wrapped below zero is wrong.
            if gp_u64_load_relaxed(&m.load[i].in_flight) >= wrapped:
                raise AssertionError(f"node {i}'s in-flight count went below zero")
            if gp_u64_load_relaxed(&m.load[i].limit) < 1:
                raise AssertionError(f"node {i}'s concurrency limit is below 1")
            if gp_u64_load_relaxed(&m.load[i].ewma_us) > GP_MAX_SAMPLE_US:
                raise AssertionError(f"node {i}'s latency estimate is above 2**32 us")
            if gp_u64_load_relaxed(&m.load[i].floor_us) > GP_MAX_SAMPLE_US:
                raise AssertionError(f"node {i}'s latency floor is above 2**32 us")
        if m.slot_of != NULL:
            # shared=: the count covers every node of the segment, which other pools
            # and processes mark, and a process killed mid-mark leaves it high
            if cooling < non_zero:
                raise AssertionError(f"the segment's cooling is {cooling}, below this pool's "
                                     f"{non_zero} non-zero deadlines")
        elif cooling != non_zero:
            raise AssertionError(f"cooling is {cooling}, but {non_zero} deadlines are non-zero")
        if m.schedule == NULL:
            if m.period != <uint64_t>m.n:
                raise AssertionError(f"an unweighted pool of {m.n} nodes has a period of {m.period}")
        else:
            for slot in range(m.period):
                if m.schedule[slot] >= <uint64_t>m.n:
                    raise AssertionError(f"schedule slot {slot} names node {m.schedule[slot]} "
                                         f"of a pool of {m.n}")

    def _add_to_cooling(self, int64_t delta):
        """Add ``delta`` to ``cooling`` and to nothing else, breaking the invariant
        (test hook for ``_check_consistency`` and the debug build's assertions)."""
        gp_i64_fetch_add_relaxed(_current(self._core).cooling, delta)

    def _stripe_positions(self):
        """Each stripe's cursor minus where it started (test hook)."""
        return [gp_u64_load_relaxed(&self._core.stripes[s].cursor) - self._start_of(s)
                for s in range(self._core.stripe_mask + 1)]

    cdef uint64_t _start_of(self, uint64_t stripe):
        return self._starts[stripe] if self._starts is not None else 0

    def _restart_at_random(self):
        """Move each stripe's cursor to a fresh random position, as ``start="random"``
        placed it at construction; the selections counted so far (``_state()``,
        ``_stripe_positions()``) stay as they were.  The fork hook's, in the child
        (``_pool_common``), where no other thread runs."""
        cdef uint64_t stripe, offset, shift
        for stripe in range(self._core.stripe_mask + 1):
            offset = <uint64_t>_random_offset()
            shift = offset - gp_u64_load_relaxed(&self._core.stripes[stripe].cursor)
            gp_u64_store_relaxed(&self._core.stripes[stripe].cursor, offset)
            self._cursor_origin += shift
            self._starts[stripe] = <uint64_t>(self._start_of(stripe) + shift)

    def _next_releasing_gil(self):
        """``next()`` with the GIL released around the selection (GIL benchmark)."""
        cdef gp_members *m = _current(self._core)
        cdef _Members pinned = <_Members>m.owner
        cdef uint64_t stripe = _stripe(self._core)
        cdef Py_ssize_t idx
        with nogil:
            idx = _select(self._core, m, stripe)
        return <object>_item(m, stripe, idx)

    def _select_loop(self, Py_ssize_t k, bint release_gil=True):
        """k selections in C, returning how often each node was chosen (the
        benchmark of the core alone and the exact-balance test)."""
        cdef gp_members *m = _current(self._core)
        cdef _Members pinned = <_Members>m.owner
        cdef Py_ssize_t i
        # Padded by a cache line on each side: two threads' counters must not share
        # a line, or the loop measures false sharing instead of the core.
        cdef Py_ssize_t pad = GP_CACHE_LINE // sizeof(Py_ssize_t)
        cdef Py_ssize_t *block = <Py_ssize_t *>PyMem_RawCalloc(m.n + 2 * pad, sizeof(Py_ssize_t))
        cdef Py_ssize_t *counts = block + pad
        if block == NULL:
            raise MemoryError()
        try:
            if release_gil:
                with nogil:
                    for i in range(k):
                        counts[_select(self._core, m, _stripe(self._core))] += 1
            else:
                for i in range(k):
                    counts[_select(self._core, m, _stripe(self._core))] += 1
            return [counts[i] for i in range(m.n)]
        finally:
            PyMem_RawFree(block)

    def __reduce__(self):
        raise TypeError(f"cannot pickle {type(self).__name__!r} object: rebuild it from "
                        "pool.endpoints instead (cooldown state is per process)")

    # -- health shared with other processes (gonka_pool.redis; not public API) ------

    def _set_observer(self, fn):
        """Call ``fn(event, endpoint, remaining_ns, failures)`` after this process's
        own marks, outside any lock, never from selection: ``"cooldown"`` when a mark
        enters a cooldown (the log line's moment and figures), ``"success"`` (0, 0)
        when ``mark_success`` resets a non-zero consecutive count, ``"cleared"`` (0, 0)
        when ``_readmit`` ends a cooldown "until cleared".  None stops it.
        ``fn`` must not raise: it runs inside ``mark_failed``.

        Marks read the observer without a lock, so one replaced here could still be
        running in another thread: every observer ever set is kept until the pool
        and its last lease die (by the owner of its core, which leases read it
        from), and a mark never calls one that has been freed."""
        if fn is not None and not callable(fn):
            raise TypeError(f"observer must be callable or None, not {type(fn).__name__}")
        cdef _CoreOwner owner = self._owner
        with self._update_lock:
            if fn is not None:
                if owner.observers_set is None:
                    owner.observers_set = []
                if not any(seen is fn for seen in owner.observers_set):
                    owner.observers_set.append(fn)
            self._observer = fn
            owner.observer = fn

    def _mark_success_observed(self, target):
        """``mark_success`` while an observer is set.  The count is read just before
        the reset, so two threads resetting the same node may both report it: a
        repeated "success" is harmless, a lost one is not."""
        cdef _Members members = <_Members>_current(self._core).owner
        cdef gp_members *m = members.m
        cdef Py_ssize_t idx, i
        cdef uint64_t failures = 0
        observer = self._observer
        endpoint = None
        if _is_index(target):
            key = target if type(target) is int else _endpoint_index(target)
            idx = _index_value(key)
            if idx < m.n:
                failures = gp_u64_load_relaxed(_consecutive(m, idx))
                endpoint = members.nodes[idx]
            m = _mark(self._core, NULL, &idx, 1, 0, 0, True, NULL, NULL)
            if idx >= m.n:
                raise _index_error(key, m.n)
        else:
            endpoint = _check_endpoint(target)
            for i in members.indices_of(endpoint):
                failures |= gp_u64_load_relaxed(_consecutive(m, i))
            if not self._mark_endpoint(endpoint, 0, 0, True):
                return False
        if failures and observer is not None:
            observer("success", endpoint, 0, 0)
        return True

    def _apply_remote(self, endpoint, remaining_ns, failures):
        """Another process's cooldown, by the local rules: the deadline becomes at
        least now + ``remaining_ns`` (never shortened) and the consecutive count at
        least ``failures``; ``total`` counts this process's failures only, so it is
        left alone.  ``remaining_ns`` is capped at this pool's ``max_cooldown``: a
        remote event never cools a node longer than this pool's own backoff could.
        No observer call, no log line.  False when ``endpoint`` is not in the pool."""
        cdef uint64_t remaining = remaining_ns
        _check_endpoint(endpoint)
        if remaining > self._core.max_ns:
            remaining = self._core.max_ns
        return self._each_slot(endpoint, SLOT_REMOTE, remaining, failures) != SLOT_ABSENT

    def _apply_remote_success(self, endpoint):
        """Another process's ``mark_success``: the consecutive count is reset, a
        running cooldown is left to run.  No observer call.  False when ``endpoint``
        is not in the pool."""
        return self._mark_endpoint(_check_endpoint(endpoint), 0, 0, True)

    @property
    def _max_ns(self):
        """``max_cooldown`` in ns (the twin's attribute of the same name): what
        gonka_pool.redis caps the deadlines it stores and loads at, and how long it
        counts a remote cooldown as holding a node."""
        return self._core.max_ns

    def _readmit(self, endpoint):
        """Discovery lists ``endpoint`` again (``gonka.refresh``): a cooldown "until
        cleared" ends now, with its backoff level; any other cooldown runs on.  With
        ``shared=`` the record in the segment is cleared, so every pool on it sees the
        node back, not only this one.  The observer hears ``("cleared", endpoint, 0,
        0)`` when something was cleared (which the return value says)."""
        cdef bint cleared
        _check_endpoint(endpoint)
        cleared = self._each_slot(endpoint, SLOT_READMIT, 0, 0) == SLOT_DONE
        observer = self._observer
        if cleared and observer is not None:
            observer("cleared", endpoint, 0, 0)
        return cleared

    cdef int _each_slot(self, object endpoint, int op, uint64_t remaining, uint64_t count) except -1:
        """``op`` on every slot of ``endpoint`` in the membership in force, each in a
        mark's handshake: ``SLOT_REMOTE`` raises it as ``_raise_remote`` does (to
        ``remaining`` ns, ``count`` failures), ``SLOT_READMIT`` ends a cooldown
        "until cleared" (``_clear_forever``).  The lookup runs Python (the
        endpoint's ``__eq__``), so the indices resolve against a pinned membership
        and apply only while it is in force, else against the new one, as ``_mark``
        does.  SLOT_ABSENT when the endpoint holds no slot, SLOT_DONE when a
        readmission cleared one, else SLOT_FOUND."""
        cdef _Members members = <_Members>_current(self._core).owner
        cdef gp_atomic_u64 *in_flight
        cdef gp_members *m
        cdef Py_ssize_t idx, k
        cdef bint applied
        cdef int result
        cdef tuple found
        while True:
            found = members.indices_of(endpoint)
            if PyTuple_GET_SIZE(found) == 0:
                return SLOT_ABSENT
            result = SLOT_FOUND
            applied = True
            for k in range(PyTuple_GET_SIZE(found)):
                idx = found[k]
                in_flight = &self._core.stripes[_stripe(self._core)].in_flight
                m = _mark_begin(self._core, in_flight)
                applied = m == members.m
                if applied:
                    if op == SLOT_REMOTE:
                        _raise_remote(self._core, m, idx, remaining, count)
                    elif _clear_forever(m, idx):
                        result = SLOT_DONE
                _mark_end(in_flight)
                if not applied:
                    members = <_Members>m.owner
                    break
            if applied:
                return result


@cython.final
@cython.no_gc
@cython.freelist(16)
@cython.auto_pickle(False)
cdef class Lease:
    """One request to one node, counted in flight from ``pool.acquire()`` until it is
    settled, once: ``success()``, ``failure()``, ``overloaded()`` or ``release()``.

    Any thread may settle it, and two racing settles leave exactly one winner.  A
    lease from before an ``update()`` settles against the membership in force (by
    its endpoint, as a mark does).  Settle it, or use ``with pool.acquire() as
    lease:``: a lease dropped unsettled is released when it is freed.  Leases come
    from ``acquire()`` only: ``Lease()`` is a TypeError.

    Not tracked by the garbage collector (``no_gc``): a lease refers to its pool's
    anchor and its endpoint only, neither of which can refer back to a lease, so it
    never closes a cycle; creating it is then one allocation with no collector
    header, which ``acquire()``'s cost needs.  It does not keep its pool alive, only
    what settling needs (``_CoreOwner``), so it settles after the pool is gone.
    """

    cdef _Anchor _anchor              # its stripe's; None for an object not made by acquire()
    cdef object _endpoint
    cdef Py_ssize_t _index            # in the membership of _generation
    cdef uint64_t _generation
    cdef uint64_t _start_ns           # the pool's clock at acquire()
    cdef uint64_t _q                  # the node's in-flight count with this lease
    cdef uint64_t _claim              # the probe_ns value this lease's claim set, or 0
    cdef uint64_t _rank               # which copy of its endpoint the node was (duplicates)
    cdef gp_atomic_u64 _settled       # 0, then 1 by exchange: one settle wins

    def __init__(self, *args, **kwargs):
        raise TypeError("Lease objects come from pool.acquire()")

    @property
    def index(self):
        """The node's index in the membership in force at ``acquire()``."""
        return self._index

    @property
    def endpoint(self):
        """The node (a ``GonkaEndpoint``)."""
        return self._endpoint

    @property
    def settled(self):
        """Whether the lease was settled (or released)."""
        return gp_u64_load_relaxed(&self._settled) != 0

    def success(self):
        """The node answered: record the latency since ``acquire()``, reset its
        backoff level as ``mark_success`` does, and end a running cooldown if this
        request started after the node's last failure mark.  RuntimeError if the
        lease was already settled."""
        cdef gp_settled out
        if not self._settle(SETTLE_SUCCESS, 0, 0, &out):
            raise RuntimeError("lease already settled")
        if out.failures != 0:
            observer = self._anchor.owner.observer
            if observer is not None:
                observer("success", self._endpoint, 0, 0)

    def failure(self, cooldown=None, reason=None, *, retry_after=None):
        """The node failed: mark it as ``pool.mark_failed(endpoint, cooldown)`` does
        (None: the pool's backoff), for at least ``retry_after`` seconds when given;
        ``reason`` (a str) goes into the log line of a cooldown it starts.  True
        when this mark started a cooldown.  A bad argument raises before the lease
        is settled; RuntimeError if it already was."""
        cdef uint64_t cooldown_ns = POLICY, floor_ns = 0
        cdef gp_settled out
        if cooldown is not None:
            _cooldown_ns(cooldown, &cooldown_ns)
        if retry_after is not None:
            _cooldown_ns(retry_after, &floor_ns)
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"reason must be a str or None, not {type(reason).__name__}")
        if not self._settle(SETTLE_FAILURE, cooldown_ns, floor_ns, &out):
            raise RuntimeError("lease already settled")
        if out.entered != 0:
            if reason is None:
                _log_cooldown(self._endpoint, out.entered, out.level)
            else:
                token = _failure_report.set(_FailureReport(reason))
                try:
                    _log_cooldown(self._endpoint, out.entered, out.level)
                finally:
                    _failure_report.reset(token)
            observer = self._anchor.owner.observer
            if observer is not None:
                observer("cooldown", self._endpoint, out.entered, out.level)
            return True
        return False

    def overloaded(self, cooldown=None):
        """The node refused for load (a 429 without Retry-After): left alone for
        ``cooldown`` (default: 0.25-0.75 s, jittered), its backoff level and failure
        counts untouched, its concurrency limit lowered.  RuntimeError if the lease
        was already settled."""
        cdef uint64_t cooldown_ns = POLICY
        cdef gp_settled out
        if cooldown is not None:
            _cooldown_ns(cooldown, &cooldown_ns)
        if not self._settle(SETTLE_OVERLOADED, cooldown_ns, 0, &out):
            raise RuntimeError("lease already settled")

    def answered(self):
        """The node answered, but the answer says nothing of its health or speed (an
        error status that is the caller's, a refusal that is not the node's fault):
        its latency may raise the node's estimate, never lower it (a node never
        measured takes the other nodes' largest), and its backoff, failure counts
        and cooldown are left as they are.  So a node that answers errors at once
        draws no traffic for its speed.  RuntimeError if the lease was already
        settled."""
        cdef gp_settled out
        if not self._settle(SETTLE_ANSWERED, 0, 0, &out):
            raise RuntimeError("lease already settled")

    def release(self):
        """Settle with neither outcome (the request was not made, or was cancelled);
        nothing when the lease is already settled."""
        cdef gp_settled out
        self._settle(SETTLE_RELEASE, 0, 0, &out)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        cdef gp_settled out
        self._settle(SETTLE_RELEASE, 0, 0, &out)

    def __repr__(self):
        if self._anchor is None:
            return "<Lease (not acquired)>"
        return (f"<Lease {self._index} {self._endpoint!r} "
                f"({'settled' if gp_u64_load_relaxed(&self._settled) else 'in flight'})>")

    def __reduce__(self):
        raise TypeError("cannot pickle 'Lease' object: it holds a request in flight in this process")

    def __dealloc__(self):
        # Cython keeps the object and its fields alive through this call, with any
        # exception being raised saved around it; nothing here may raise.
        cdef gp_settled out
        if self._anchor is None or gp_u64_load_relaxed(&self._settled):
            return
        try:
            self._settle(SETTLE_RELEASE, 0, 0, &out)
        except BaseException:
            PyErr_WriteUnraisable(self)

    cdef int _settle(self, int kind, uint64_t cooldown_ns, uint64_t floor_ns,
                     gp_settled *out) except -1:
        """1 when this call settled the lease, 0 when it already was.  The lease's
        own membership, if still in force, in pure C (the core is reached through
        the lease's anchor, without another reference-count write)."""
        cdef gp_core *core
        cdef gp_atomic_u64 *marks
        cdef gp_members *m
        out.entered = 0
        out.level = 0
        out.failures = 0
        if self._anchor is None:
            raise TypeError("this Lease did not come from pool.acquire()")
        if not _first_settle(&self._settled):
            return 0
        core = self._anchor.core
        # The stripe's count of marks in flight, which update() waits on: only
        # where marks announce themselves (no thread-slot lookup with the GIL).
        marks = &core.stripes[_stripe(core)].in_flight if GP_MARKS_ANNOUNCED else NULL
        m = _mark_begin(core, marks)
        if m.generation == self._generation:
            _settle_at(core, m, self._index, kind, self._start_ns, self._q, self._claim,
                       cooldown_ns, floor_ns, out)
            _mark_end(marks)
            return 1
        _mark_end(marks)
        self._settle_moved(kind, cooldown_ns, floor_ns, out)
        return 1

    cdef int _settle_moved(self, int kind, uint64_t cooldown_ns, uint64_t floor_ns,
                           gp_settled *out) except -1:
        """``_settle`` after an ``update()``: the lease's endpoint in the membership
        in force, the same copy of it when it is listed more than once (none: it
        left, nothing to settle).  The lookup runs Python (the
        endpoint's ``__eq__``), so it resolves against a pinned membership and applies
        only if that one is still in force, as ``_mark_endpoint`` does."""
        cdef gp_core *core = self._anchor.core
        cdef _Members members = <_Members>_current(core).owner  # the owner keeps it
        cdef gp_atomic_u64 *marks
        cdef gp_members *m
        cdef tuple found
        cdef Py_ssize_t idx
        while True:
            found = members.indices_of(self._endpoint)
            # The k-th copy of the endpoint, as update() carried it over (k-th to
            # k-th); none when that copy left with the update.
            idx = found[self._rank] if self._rank < <uint64_t>PyTuple_GET_SIZE(found) else -1
            marks = &core.stripes[_stripe(core)].in_flight
            m = _mark_begin(core, marks)
            if m == members.m:
                if idx >= 0:
                    _settle_at(core, m, idx, kind, self._start_ns, self._q, self._claim,
                               cooldown_ns, floor_ns, out)
                _mark_end(marks)
                return 0
            _mark_end(marks)
            members = <_Members>m.owner


cdef inline Lease _lease(EndpointPool pool, gp_members *m, uint64_t stripe, gp_atomic_u64 *marks,
                         Py_ssize_t idx, uint64_t now, uint64_t claim):
    """The end of ``acquire()``, inside its handshake on ``m``: count the request
    in flight on node idx, leave the handshake, and make the lease."""
    cdef gp_load *load = &m.load[idx]
    cdef uint64_t q, generation = m.generation, rank = load.rank
    cdef Lease lease
    # Counted inside the handshake: update() copies the count, or the count lands
    # on the membership update() publishes; never lost between the two.
    q = _count_up(&load.in_flight)
    GP_ASSERT(q < (<uint64_t>1 << 63))
    if q == 1:
        gp_u64_store_relaxed(&load.last_event_ns, now)
    # The reference is taken before the handshake ends and before anything
    # allocates (a collection may run Python, which may call update()).
    endpoint = <object>_item(m, stripe, idx)
    _mark_end(marks)
    lease = Lease.__new__(Lease)
    # The stripe's anchor: this thread's leases write its count, not the pool's.
    lease._anchor = <_Anchor>pool._anchor_items[stripe]
    lease._endpoint = endpoint
    lease._index = idx
    lease._generation = generation
    lease._start_ns = now
    lease._q = q
    lease._claim = claim
    lease._rank = rank  # read above: past _mark_end, m may be retired and freed
    return lease


cdef inline bint _is_index(object target) except -1:
    """``_convert.is_index_target``, with its two common answers inline: an int, and
    an endpoint (so that ``mark_failed(ep)`` runs no Python to learn it)."""
    return type(target) is int or (not isinstance(target, _Endpoint) and _is_other_index(target))


cdef bint _is_other_index(object target) except -1:
    """``_is_index``'s rare case, out of line so that the inline part stays small."""
    return _is_index_target(target)


cdef object _check_endpoint(object target):
    if not isinstance(target, _Endpoint):
        raise TypeError("target must be an endpoint index (int) or a GonkaEndpoint, "
                        f"not {type(target).__name__}")
    return target


cdef Py_ssize_t _check_count(object k) except -1:
    """``next_many``'s count: an exact int in range here, inline; anything else, and
    every error, by ``_convert.count``."""
    cdef int overflow = 0
    cdef long long count
    if type(k) is int:
        count = PyLong_AsLongLongAndOverflow(k, &overflow)
        if overflow == 0 and 0 <= count <= (<Py_ssize_t>1 << 40):
            return <Py_ssize_t>count
    return _convert_count(k)


cdef Py_ssize_t _check_sequence_index(object key, Py_ssize_t n) except -1:
    """``pool[key]``: an exact int in range here, inline; anything else, and every
    error, by ``_convert.sequence_index``."""
    cdef int overflow = 0
    cdef long long i
    if type(key) is int:
        i = PyLong_AsLongLongAndOverflow(key, &overflow)
        if overflow == 0 and -n <= i < n:
            return <Py_ssize_t>(i + n if i < 0 else i)
    return _sequence_index(key, n)
