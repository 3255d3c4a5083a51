"""Load-aware picks: the rules of ``EndpointPool(balance=...)`` and ``pool.acquire()``.

Pure functions on integers, written once here: the twin calls them, the C core
(``_pool.pyx``) restates each one in C under the same name with a ``_`` prefix, and
``tests/test_balance.py`` compares the two on the same inputs.  Nothing here runs
Python on the C core's hot path.

Per node, each pool keeps (beside the health every pool already had):

``in_flight``
    Leases out now: ``acquire()`` adds one, settling (``success``, ``failure``,
    ``overloaded``, ``answered``, ``release``) takes it away.
``ewma_us``
    Peak-EWMA latency in microseconds, 0 while unknown (Finagle's and Linkerd's
    balancer): a sample above it replaces it at once, a lower one is blended in
    with weight ``dt / (TAU + dt)`` (``dt`` the time since the last sample: a
    rational stand-in for ``1 - exp(-dt / TAU)`` that both cores compute with the
    same IEEE operations).  A sample counts at most ``PEAK_CLIP`` times the estimate, so
    one long non-streamed generation quadruples a node's cost at most, while a node
    that really turned 10x slower is at 10x after two answers.
``stamp_ns``
    When ``ewma_us`` last changed, or an answer that says nothing of the node's
    speed (``answered()``) last confirmed it.  A node's first measured answer
    (``floor_us`` still 0) replaces whatever stand-in ``answered()`` put there.
    A node left idle for ``2**STALE_SHIFT`` ns (8.6 s) has its estimate halved
    for each such period when its cost is computed: a node that was slow once is
    tried again after about half a minute, rather than never.
``floor_us``
    The node's unloaded latency: the least sample, drifting up by 1/64 of each
    sample above it (so a node that got slower for good is not judged queued for
    ever).
``limit``
    What the node can take at once, learned as TCP Vegas and Netflix's
    concurrency-limits do: an answer no slower than 1.5x the floor at ``q``
    requests in flight (its own included) proves the node serves ``q`` at once
    (``limit`` rises to ``q``); one at 2x the floor or more, or a 429 refusal,
    proves it queued at ``q`` (``limit`` falls to ``q - 1``, at least 1).
``last_event_ns``
    The last settle, or the moment ``in_flight`` rose from 0.  While requests are
    out, ``now - last_event_ns`` is a lower bound on the age of the oldest of
    them: a node that stops answering looks slow before its first slow answer.
``failed_at_ns``, ``probe_ns``
    Health, beside the deadline (in the segment for ``shared=`` pools): when the
    node was last marked failed, and until when one lease probes it after its
    cooldown ended (no other pick takes it meanwhile).

The cost of a pick (lower wins) is ``latency x (in_flight + 1) / capacity``:
``latency`` is the (stale-decayed) estimate, raised to the pending age while
requests are out (at most ``PEAK_CLIP`` x the estimate), ``UNKNOWN_US`` for a
node never measured that has requests out, and 0 for one never measured with none
out (so every new node is tried once, and then waits for its answer); with
``least_request`` the latency is 1.  ``capacity`` is the node's weight in a
weighted pool (weights are capacities there: ``from_gonka`` gives them) and the
learned ``limit`` otherwise (1 with ``least_request``).  The cost is computed in
IEEE doubles, ``float(latency) * float(in_flight + 1) * (1.0 / capacity)`` (the C
core keeps each inverse, so that a pick multiplies), the same operations on both
cores, and the least wins, the first in scan order among equals.
"""

from __future__ import annotations

__all__ = [
    "BALANCE_POLICIES",
    "LOAD_COOLDOWN_NS",
    "PANIC_RETRY_NS",
    "PANIC_SHARE",
    "PEAK_CLIP",
    "PROBE_NS",
    "SCAN_MAX",
    "STALE_SHIFT",
    "TAU_US",
    "UNKNOWN_US",
    "answered_ewma",
    "check_balance",
    "cost",
    "jitter_ns",
    "learn_limit",
    "mix64",
    "next_ewma",
    "next_floor",
    "overloaded_limit",
]

# The policies, in the order of their codes in the C core (0, 1, 2).
BALANCE_POLICIES = ("peak_ewma", "least_request", "round_robin")
# Peak-EWMA's time constant (Finagle's and Linkerd's default): 10 s.
TAU_US = 10_000_000
# A sample counts at most this many times the current estimate.
PEAK_CLIP = 4
# An idle node's estimate halves every 2**STALE_SHIFT ns (8.6 s).
STALE_SHIFT = 33
# The latency of a node never measured while a request to it is out: higher than
# any real one, so that it waits for its first answer (Finagle's penalty).
UNKNOWN_US = 1 << 40
# Pools of at most this many nodes are scanned whole; larger ones take the better
# of two random choices (Envoy notes that P2C over two hosts picks the busier one a
# quarter of the time).
SCAN_MAX = 16
# More than this share of nodes cooling at once is a correlated failure (the
# client's network, DNS, a proxy): the pool stops trusting cooldowns and spreads
# over every node by cost (Envoy's panic threshold).  Written as a ratio n/d.
PANIC_SHARE = (1, 2)
# In that state a cooling node competes again once this long has passed since its
# last failure (one probe at a time): a node that is still down costs a fast failure
# four times a second, not one per request, and every node that came back answers
# within a fraction of a second.
PANIC_RETRY_NS = 250_000_000
# A 429 without Retry-After (Gonka's "Transfer Agent capacity reached") is load:
# the node is left alone for 0.25-0.75 s (jittered, so that the clients it refused
# do not come back together), and its backoff level is untouched.
LOAD_COOLDOWN_NS = 500_000_000
# How long one lease may hold a node whose cooldown ended before other picks may
# take it too (a probe that neither answers nor fails within this is given up).
PROBE_NS = 2_000_000_000

_U64 = (1 << 64) - 1
_MAX_SAMPLE_US = 1 << 32  # 71 minutes: samples are clipped here, products stay < 2**61
_MAX_DT_US = 1 << 28  # 4.5 minutes: beyond it the old estimate has no weight left to speak of


def check_balance(balance: object) -> int:
    """The code of a ``balance=`` value; TypeError or ValueError otherwise."""
    names = ", ".join(map(repr, BALANCE_POLICIES))
    if not isinstance(balance, str):
        raise TypeError(f"balance must be one of {names}, not {type(balance).__name__}")
    try:
        return BALANCE_POLICIES.index(balance)
    except ValueError:
        raise ValueError(f"balance must be one of {names}, got {balance!r}") from None


def next_ewma(ewma_us: int, stamp_ns: int, sample_us: int, now_ns: int) -> int:
    """The estimate after a sample of ``sample_us`` (>= 1) at ``now_ns``."""
    sample = min(sample_us, _MAX_SAMPLE_US)
    if ewma_us == 0:
        return sample
    if sample > ewma_us * PEAK_CLIP:
        sample = ewma_us * PEAK_CLIP
    if sample >= ewma_us:
        return sample
    dt_us = (now_ns - stamp_ns) // 1000 if now_ns > stamp_ns else 0
    if dt_us > _MAX_DT_US:
        dt_us = _MAX_DT_US
    # ewma - (ewma - sample) * dt / (TAU + dt), in IEEE doubles as the C core
    # computes it (a double division costs it a fraction of an integer one).
    return ewma_us - int(float(ewma_us - sample) * float(dt_us) / float(TAU_US + dt_us))


def answered_ewma(ewma_us: int, floor_us: int, sample_us: int, largest_us: int) -> int:
    """The estimate after an answer that says nothing of the node
    (``lease.answered()``: an error status that is the caller's, a refusal that is
    not the node's fault).  A node that answers errors at once must not look the
    fastest and draw the traffic (and read every prompt), so:

    - a node with a measured answer (``floor_us`` > 0): the sample may raise the
      estimate as any sample does (clipped at ``PEAK_CLIP`` x), never lower it;
    - a node never measured: the estimate is a stand-in, the largest estimate of
      the other nodes (``largest_us``) or the sample if larger, set afresh at each
      such answer.  It is no longer new (a new node's cost is 0 while idle), its
      share is at most the slowest node's, and its first measured answer replaces
      the stand-in (``next_ewma`` is given 0 while ``floor_us`` is 0)."""
    sample = min(sample_us, _MAX_SAMPLE_US)
    if floor_us == 0:
        return sample if sample > largest_us else largest_us
    if sample > ewma_us * PEAK_CLIP:
        sample = ewma_us * PEAK_CLIP
    return sample if sample > ewma_us else ewma_us


def next_floor(floor_us: int, sample_us: int) -> int:
    """The unloaded latency after a sample (>= 1)."""
    sample = min(sample_us, _MAX_SAMPLE_US)
    if floor_us == 0 or sample < floor_us:
        return sample
    return floor_us + ((sample - floor_us) >> 6)


def learn_limit(limit: int, floor_us: int, sample_us: int, in_flight_at_pick: int) -> int:
    """The concurrency limit after an answer of ``sample_us`` to a request that was
    the ``in_flight_at_pick``-th out at its node (``floor_us`` before this sample)."""
    if floor_us == 0:
        return limit
    if sample_us * 2 < floor_us * 3:  # under 1.5x the floor: not queued
        return in_flight_at_pick if in_flight_at_pick > limit else limit
    if sample_us >= floor_us * 2:  # queued behind what the node can take
        return overloaded_limit(limit, in_flight_at_pick)
    return limit


def overloaded_limit(limit: int, in_flight_at_pick: int) -> int:
    """The limit after the node queued or refused at ``in_flight_at_pick``."""
    below = in_flight_at_pick - 1 if in_flight_at_pick > 1 else 1
    return below if below < limit else limit


def cost(
    policy: int,
    ewma_us: int,
    stamp_ns: int,
    in_flight: int,
    last_event_ns: int,
    now_ns: int,
) -> int:
    """The latency term of a node's cost (the numerator's first factor), in us."""
    if policy == 1:  # least_request
        return 1
    latency = ewma_us
    if latency == 0:
        return 0 if in_flight == 0 else UNKNOWN_US
    if in_flight == 0:
        if now_ns > stamp_ns:
            halvings = (now_ns - stamp_ns) >> STALE_SHIFT
            latency = 0 if halvings >= 63 else latency >> halvings
        return latency
    if now_ns > last_event_ns:
        age_us = (now_ns - last_event_ns) // 1000
        if age_us > latency:
            latency = age_us if age_us < ewma_us * PEAK_CLIP else ewma_us * PEAK_CLIP
    return latency


def mix64(x: int) -> int:
    """splitmix64's output for state ``x`` (Steele, Lea, Flood): the P2C draw of a
    cursor position, and the jitter of a load cooldown."""
    z = (x + 0x9E3779B97F4A7C15) & _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return z ^ (z >> 31)


def jitter_ns(base_ns: int, now_ns: int, idx: int) -> int:
    """``base_ns`` scaled by a factor in [0.5, 1.5), from a splitmix64 hash of the
    moment and the node (no random state to share between threads or cores)."""
    z = mix64((now_ns + idx * 0x9E3779B97F4A7C15) & _U64)
    # base/2 + base * (z / 2**64), without overflow: base < 2**40 here.
    return base_ns // 2 + ((base_ns * (z >> 32)) >> 32)
