"""Weights into the schedule weighted pools select from, and the cursors' random
start: what both cores share at construction (``schedule_plan``; the twin lays the
table out with ``schedule_table_py``, the C core in C)."""

from __future__ import annotations

import os
from math import gcd
from typing import NamedTuple

__all__ = [
    "SMOOTH_MAX_WORK",
    "TABLE_MAX_SLOTS",
    "TABLE_MIN_SLOTS",
    "TABLE_SLOTS_PER_NODE",
    "SchedulePlan",
    "random_offset",
    "schedule_plan",
    "schedule_table_py",
    "smooth_schedule_py",
    "spread_schedule_py",
    "table_slots",
]

# A weighted pool selects from a table of slots, one node per slot, that the
# stripes' cursors walk round (``schedule_plan``).  Its size, the period: the
# weights' own sum divided by their gcd when that fits in ``table_slots(n)``
# (exact weights), else ``table_slots(n)`` slots shared out in proportion: 64 to
# 127 per node, which keeps the total share error near n / (4 x 64n) = 0.4%
# (largest remainders), a power of two, so that a pick finds its slot with an AND
# instead of a modulo (which pays for the table read: ``bench``'s weighted rows),
# at least 2**12 (small pools keep moderately fine weights exact), at most 2**22
# (a 16 MiB table).
TABLE_SLOTS_PER_NODE = 64
TABLE_MIN_SLOTS = 1 << 12
TABLE_MAX_SLOTS = 1 << 22
# Exact weights keep nginx's smooth order (the schedule weighted pools always had)
# while building it, O(period x n), takes at most this many steps; beyond, the
# O(period) spread order (``spread_schedule_py``).
SMOOTH_MAX_WORK = 1 << 20


def table_slots(n: int) -> int:
    """The slots of a weighted pool's table when its weights do not fit exactly:
    the power of two at or above 64 per node, at least 2**12, at most 2**22, and
    never fewer than one per node."""
    wanted = min(max(TABLE_SLOTS_PER_NODE * n, TABLE_MIN_SLOTS), max(TABLE_MAX_SLOTS, n))
    return 1 << (wanted - 1).bit_length()


class SchedulePlan(NamedTuple):
    """What a weighted pool's table holds: each node's slots in one period (>= 1
    each; their sum is the period), and the order they are laid out in."""

    slots: tuple[int, ...]
    smooth: bool  # nginx's smooth order; else the spread order


def schedule_plan(weights: tuple[int, ...] | None) -> SchedulePlan | None:
    """The table for checked weights, or None when all are equal (round robin).

    Exact when the weights' sum divided by their gcd, ``P``, is at most
    ``table_slots(n)``: node i holds w_i/gcd of the P slots, so any sum(weights)
    consecutive picks of a thread hold node i exactly w_i times, in nginx's smooth
    order while P x n <= ``SMOOTH_MAX_WORK`` (the schedule such weights always
    had), else in the spread order.

    Beyond, the ``T = table_slots(n)`` slots are shared out.  A node whose share
    is below one slot gets one (lightest first, each time against the slots and
    weight still unshared), so every node is picked at least once in every T
    picks: no weight rounds to never.  The rest get floor(share) of what is left,
    and one more each for the largest remainders (ties to the lower index).  Each
    share is then off by less than one slot, and the total error
    sum_i |slots_i / T - w_i / S| is below (n + z) / T, z the nodes raised to one
    slot; about n / (4T) when remainders spread evenly (0.4% at 64 slots per
    node).  Exact integer arithmetic: any positive weight."""
    if weights is None or len(set(weights)) == 1:
        return None
    n = len(weights)
    total = sum(weights)
    common = gcd(*weights)
    period = total // common
    most = table_slots(n)
    if period <= most:
        return SchedulePlan(tuple(w // common for w in weights), period * n <= SMOOTH_MAX_WORK)
    # Lightest first.  Only a node whose share is under two slots of the whole table
    # is likely to fall under one as lighter nodes take theirs: those are sorted,
    # and all of them only if every one of those does.
    order = [i for i in range(n) if weights[i] * most < 2 * total]
    order.sort(key=weights.__getitem__)
    raised: list[int] = []
    slots_left, weight_left = most, total
    while True:
        for i in order[len(raised) :]:
            if weights[i] * slots_left >= weight_left:
                break  # this node's share is a slot or more, and so is every heavier one's
            raised.append(i)
            slots_left -= 1
            weight_left -= weights[i]
        else:
            if order and len(order) < n:
                order = sorted(range(n), key=weights.__getitem__)
                continue
        break
    shares = [divmod(w * slots_left, weight_left) for w in weights]
    slots = [whole for whole, _ in shares]
    remainders = [rest for _, rest in shares]
    for i in raised:
        slots[i], remainders[i] = 1, -1  # one slot, and none of those left over
    left = slots_left - sum(slots) + len(raised)  # < n - len(raised)
    if left:
        # sorted() is stable, reverse=True included: equal remainders keep index order.
        for i in sorted(range(n), key=remainders.__getitem__, reverse=True)[:left]:
            slots[i] += 1
    return SchedulePlan(tuple(slots), False)


def schedule_table_py(plan: SchedulePlan) -> list[int]:
    """The node of each slot of one period of ``plan``, in Python (the twin's)."""
    if plan.smooth:
        return smooth_schedule_py(plan.slots)
    return spread_schedule_py(plan.slots)


def smooth_schedule_py(reduced: tuple[int, ...]) -> list[int]:
    """nginx's smooth weighted round robin over weights already divided by their gcd.

    Every step each node's ``current`` grows by its weight, the node with the largest
    ``current`` (the lower index on a tie) is picked and pays back the total.  Over
    a period of sum(w) slots node i appears exactly w_i times, interleaved (weights
    5,1,1 give a a b a c a a, not a a a a a b c).  O(period x n): used while that is
    at most ``SMOOTH_MAX_WORK``."""
    total = sum(reduced)
    current = [0] * len(reduced)
    nodes = range(len(reduced))
    schedule = []
    for _ in range(total):
        best = 0
        for i in nodes:
            current[i] += reduced[i]
            if current[i] > current[best]:
                best = i
        current[best] -= total
        schedule.append(best)
    return schedule


def spread_schedule_py(slots: tuple[int, ...]) -> list[int]:
    """Each node's slots spread evenly over the period, in rounds swept in node order.

    With R the most slots any node has, node i's k-th of its c_i slots falls in round
    floor((k + 1/2) R / c_i) of R: at most once in each round, every c_i-th round
    apart on average.  The table lists the rounds in order and each round's nodes in
    index order (the C core's ``_spread_fill``: a counting sort, O(period + n)).  So
    nodes of close weights alternate as in round robin (equal counts give round
    robin itself), a node runs at most from the end of one round into the start of
    the next, and consecutive picks walk the nodes in ascending order, as
    unweighted picks do: at 10,000 nodes the table's own order would miss the cache
    on each pick's endpoint (20% slower next(), measured with ``python -m gonka_pool
    bench``)."""
    rounds = max(slots)
    n = len(slots)
    keys = [((2 * k + 1) * rounds // (2 * c)) * n + node for node, c in enumerate(slots) for k in range(c)]
    keys.sort()
    return [key % n for key in keys]


def random_offset() -> int:
    """A random starting cursor position, from os.urandom: the global ``random``
    sequence a user may have seeded stays untouched."""
    return int.from_bytes(os.urandom(8), "little") >> 1
