"""The node health that workers share, read without changing it: a ``shared=``
segment through a read-only mapping, a ``RedisHealth`` store through ``TIME`` and
``HGETALL`` (its loader's script would delete expired entries: not used here).

Neither store keeps a failure's reason: the reason is in the pool's WARNING record
of each cooldown (``_report.log_cooldown``), in the process that failed.  What each
does keep:

- a segment (layout 3, described above ``_Segment`` in ``_pool.pyx``; one per
  user and name): per node a 32-byte BLAKE2b key of its URL and address (not the
  URL itself, so a row is named only when the caller lists its node), the
  deadline, the consecutive and total failure counts of every process, when it
  last failed (or refused for load), and which live pools hold it (a record no
  pool holds is a node every pool dropped, left to be reused: not shown);
- a Redis hash ``<channel>:cooldowns``: per node ``"<base_url>;<address>"`` the
  deadline on the server's clock and the consecutive count; a success drops the
  entry once its cooldown has run out, so nodes that never failed are absent.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from .._clock import monotonic_ns
from .._endpoint import GonkaEndpoint, redact

__all__ = ["NodeHealth", "SourceError", "endpoints_from_text", "read_redis", "read_segment"]

# _pool.pyx's segment format (layout 3), the one layout this reads.
_MAGIC = 0x314C4F4F50414B4E  # "NKAPOOL1"
_LAYOUT = 3
_HEADER_BYTES = 128
_CACHE_LINE = 64
_READY, _STATE_KIND = 2, 3  # a record's state: its kind in the low 2 bits
_HOLDER_WORDS = 4  # per record: one bit per attachment (a mapping by a live pool)
_FOREVER = 2**64 - 1
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")


class SourceError(Exception):
    """The store could not be read; the message says why and what to do."""


class NodeHealth(NamedTuple):
    """One node as a store records it; None where the store keeps no such figure."""

    node: str  # "base_url (address)", or "record N (key ...)" for an unnamed segment record
    cooling: bool
    remaining: float  # seconds of cooldown left: 0.0 available, inf until cleared
    consecutive: int
    total: int | None
    since_failure: float | None  # seconds since its last failure mark (or refusal for load)


def endpoints_from_text(text: str) -> list[GonkaEndpoint]:
    """``url;address`` entries separated by commas, as ``GONKA_ENDPOINTS`` holds them."""
    return [GonkaEndpoint.parse(entry) for entry in text.split(",") if entry.strip()]


def _label(endpoint: GonkaEndpoint) -> str:
    return f"{redact(endpoint.base_url)} ({endpoint.address})"


def _segment_key(endpoint: GonkaEndpoint) -> bytes:
    """The record key ``_Segment.record_of`` gives ``endpoint``."""
    base_url = endpoint.base_url
    return hashlib.blake2b(
        f"{len(base_url)}:{base_url}{endpoint.address}".encode(), digest_size=32, person=b"gonka_pool"
    ).digest()


def _aligned(size: int) -> int:
    return (size + _CACHE_LINE - 1) // _CACHE_LINE * _CACHE_LINE


def _map_read_only(name: str, uid: int) -> mmap.mmap:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SourceError(f"a shared segment's name is 1 to 200 letters, digits, '_', '.' or '-', got {name[:40]!r}")
    try:
        import _posixshmem  # type: ignore[import-not-found]  # CPython's shm_open (multiprocessing.shared_memory's), POSIX only
    except ImportError:
        raise SourceError("shared segments need POSIX shared memory, which this platform lacks") from None
    try:
        # _pool.pyx's _segment_path: segments are per user, by effective uid.
        fd = _posixshmem.shm_open(f"/gonka_pool.{uid}.{name}", os.O_RDONLY, 0)
    except FileNotFoundError:
        raise SourceError(
            f"no shared segment {name!r} of uid {uid} on this host: no pool of that user here was "
            f"built with shared={name!r}, or it was removed (EndpointPool.unlink_shared); "
            "workers running as another user: --uid theirs"
        ) from None
    except PermissionError:
        raise SourceError(
            f"shared segment {name!r} of uid {uid} is readable by that user only (mode 0600): "
            "run top as that user, or as root"
        ) from None
    try:
        size = os.fstat(fd).st_size
        if size < _HEADER_BYTES:
            raise SourceError(f"shared segment {name!r} is not laid out yet ({size} bytes)")
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def read_segment(
    name: str, endpoints: Iterable[GonkaEndpoint] = (), uid: int | None = None
) -> tuple[list[NodeHealth], int]:
    """The records of user ``uid``'s (this process's effective uid by default)
    segment ``name`` that a live pool holds, and its capacity; a record is named by
    the endpoint of ``endpoints`` whose key it holds."""
    mapping = _map_read_only(name, os.geteuid() if uid is None else uid)
    try:
        return _records(name, mapping, {_segment_key(e): e for e in endpoints})
    finally:
        mapping.close()


def _records(name: str, mapping: mmap.mmap, named: dict[bytes, GonkaEndpoint]) -> tuple[list[NodeHealth], int]:
    words = memoryview(mapping).cast("Q")  # 64-bit words; each aligned read is one load
    try:
        magic, layout, capacity, ready = words[0], words[1], words[2], words[3]
        if magic != _MAGIC or ready != 1:
            raise SourceError(f"shared segment {name!r} is not a gonka_pool segment, or not laid out yet")
        if layout != _LAYOUT:
            raise SourceError(
                f"shared segment {name!r} has layout {layout}; this gonka_pool reads layout {_LAYOUT}: "
                "run the top of the gonka_pool version the workers run"
            )
        array = _aligned(capacity * 8)
        keys_at = _HEADER_BYTES + array
        deadlines_at = keys_at + _aligned(capacity * 32)
        holders_at = deadlines_at + 5 * array
        if capacity < 1 or holders_at + _aligned(capacity * 8 * _HOLDER_WORDS) > len(mapping):
            raise SourceError(f"shared segment {name!r} is damaged (capacity {capacity} in {len(mapping)} bytes)")
        # Word offsets of the health arrays, in _Segment's order.
        deadlines, consecutive, total, failed_at = ((deadlines_at + k * array) // 8 for k in range(4))
        states, holders = _HEADER_BYTES // 8, holders_at // 8
        now = monotonic_ns()
        rows = []
        for i in range(capacity):
            if words[states + i] & _STATE_KIND != _READY:
                continue
            if not any(words[holders + i * _HOLDER_WORDS + w] for w in range(_HOLDER_WORDS)):
                continue  # no live pool has this node: dropped by all, left to be reused
            key = mapping[keys_at + 32 * i : keys_at + 32 * i + 32]
            endpoint = named.get(key)
            label = _label(endpoint) if endpoint is not None else f"record {i} (key {key[:6].hex()})"
            deadline, failed = words[deadlines + i], words[failed_at + i]
            rows.append(
                NodeHealth(
                    label,
                    deadline > now,
                    _remaining_ns(deadline, now),
                    words[consecutive + i],
                    words[total + i],
                    None if failed == 0 else max(0, now - failed) / 1e9,
                )
            )
        return rows, capacity
    finally:
        words.release()


def _remaining_ns(deadline: int, now: int) -> float:
    if deadline == _FOREVER:
        return math.inf
    return max(0, deadline - now) / 1e9


def _count(text: str) -> bool:
    """Whether a field of a hash entry is a count ``int()`` takes as RedisHealth
    wrote it: ASCII digits ("²".isdigit() is True), and not past int's digit limit."""
    return text.isascii() and text.isdigit() and len(text) <= 20


def _stored_label(key: str) -> str:
    """A hash key as the table shows it.  Anyone who can write to Redis writes these
    keys: one that is not a valid endpoint is shown escaped (``ascii``), so that no
    control sequence reaches the operator's terminal."""
    base_url, _, address = key.rpartition(";")
    try:
        return _label(GonkaEndpoint(base_url, address))
    except (TypeError, ValueError):
        return f"not an endpoint: {redact(key)[:80]!a}"


def read_redis(client: Any, channel: str = "gonka_pool", endpoints: Iterable[GonkaEndpoint] = ()) -> list[NodeHealth]:
    """The nodes of ``RedisHealth``'s hash for ``channel``, then the endpoints of
    ``endpoints`` it does not hold (available, as far as Redis knows)."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.hgetall(f"{channel}:cooldowns")
    try:
        (seconds, micros), stored = pipe.execute()
    except Exception as exc:  # noqa: BLE001 - any client error becomes the command's message
        raise SourceError(f"could not read Redis: {type(exc).__name__}: {redact(str(exc))}") from None
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    rows, seen = [], set()
    for field, value in stored.items():
        key = field.decode("utf-8", "replace") if isinstance(field, bytes) else str(field)
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        deadline, _, failures = text.partition(":")
        if not (_count(deadline) and _count(failures)):
            continue  # not an entry of RedisHealth's
        seen.add(key)
        left_ms = int(deadline) - now_ms
        rows.append(NodeHealth(_stored_label(key), left_ms > 0, max(0, left_ms) / 1000, int(failures), None, None))
    for endpoint in endpoints:
        if f"{endpoint.base_url};{endpoint.address}" not in seen:
            rows.append(NodeHealth(_label(endpoint), False, 0.0, 0, None, None))
    return rows
