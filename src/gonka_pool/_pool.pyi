# Stub for the C core, and the one surface type checkers see: gonka_pool exports this
# EndpointPool under TYPE_CHECKING whichever core runs.  The pure twin (_pool_py.py)
# has the same public surface and the same private test hooks, except the two marked
# "C core only" below.  Checked against the built module by `make lint` (stubtest).
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any, Literal, SupportsFloat, SupportsIndex, TypeVar, overload

from typing_extensions import Self, disjoint_base

from ._endpoint import GonkaEndpoint
from ._report import EndpointState
from ._schedule import SchedulePlan

ATOMICS: str
CLOCK: tuple[str, int]
FREE_THREADED: bool
STRIPES: int
NEXT_MANY_NOGIL_MIN: int
SHARED_SUPPORTED: bool
DEFAULT_SHARED_CAPACITY: int
MAX_SHARED_CAPACITY: int

_Cooldown = SupportsFloat | SupportsIndex | timedelta
_Target = SupportsIndex | GonkaEndpoint

# C core only: the C schedule builder, tested against _schedule's Python one.
def _schedule_table(slots: Sequence[int], smooth: bool) -> list[int]: ...

_T = TypeVar("_T")
_Faults = type[BaseException] | tuple[type[BaseException], ...]

@disjoint_base
class EndpointPool:
    def __new__(
        cls,
        endpoints: Iterable[GonkaEndpoint],
        *,
        weights: Iterable[int] | None = ...,
        start: SupportsIndex | Literal["random"] = ...,
        base_cooldown: _Cooldown = ...,
        max_cooldown: _Cooldown = ...,
        shared: str | None = ...,
        shared_capacity: SupportsIndex | None = ...,
    ) -> Self: ...
    @property
    def shared(self) -> str | None: ...
    @staticmethod
    def unlink_shared(name: str) -> bool: ...
    @classmethod
    def from_env(
        cls,
        var: str = ...,
        *,
        weights: Iterable[int] | None = ...,
        start: SupportsIndex | Literal["random"] = ...,
        base_cooldown: _Cooldown = ...,
        max_cooldown: _Cooldown = ...,
        shared: str | None = ...,
        shared_capacity: SupportsIndex | None = ...,
    ) -> Self: ...
    @classmethod
    def from_gonka(
        cls,
        source_url: str,
        *,
        epoch: str | int = ...,
        allowlist: bool = ...,
        timeout: float = ...,
        weights: Iterable[int] | None = ...,
        start: SupportsIndex | Literal["random"] = ...,
        base_cooldown: _Cooldown = ...,
        max_cooldown: _Cooldown = ...,
    ) -> Self: ...
    def update(self, endpoints: Iterable[GonkaEndpoint], weights: Iterable[int] | None = ...) -> None: ...
    # fn gets the endpoint and nothing else, so there are no arguments for a ParamSpec
    # to carry; the keywords are the failover's (the runtime takes them as **options).
    # acall is a plain method that returns the coroutine, hence Coroutine, not async def.
    def call(
        self,
        fn: Callable[[GonkaEndpoint], _T],
        *,
        attempts: int | None = ...,
        cooldown: _Cooldown | None = ...,
        timeout_cooldown: _Cooldown | None = ...,
        retry_on: _Faults = ...,
        timeout_on: _Faults = ...,
        deadline: float | None = ...,
    ) -> _T: ...
    def acall(
        self,
        afn: Callable[[GonkaEndpoint], Awaitable[_T]],
        *,
        attempts: int | None = ...,
        cooldown: _Cooldown | None = ...,
        timeout_cooldown: _Cooldown | None = ...,
        retry_on: _Faults = ...,
        timeout_on: _Faults = ...,
        deadline: float | None = ...,
    ) -> Coroutine[Any, Any, _T]: ...
    def next(self) -> GonkaEndpoint: ...
    def next_indexed(self) -> tuple[int, GonkaEndpoint]: ...
    def next_many(self, k: SupportsIndex, /) -> list[GonkaEndpoint]: ...
    def mark_failed(self, target: _Target, cooldown: _Cooldown | None = None) -> bool: ...
    def _mark_failed_at_least(self, target: _Target, cooldown: _Cooldown | None, at_least: _Cooldown) -> bool: ...
    def mark_success(self, target: _Target, /) -> bool: ...
    def snapshot(self) -> tuple[EndpointState, ...]: ...
    @property
    def endpoints(self) -> tuple[GonkaEndpoint, ...]: ...
    @property
    def weights(self) -> tuple[int, ...]: ...
    def is_empty(self) -> bool: ...
    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    @overload
    def __getitem__(self, key: SupportsIndex, /) -> GonkaEndpoint: ...
    @overload
    def __getitem__(self, key: slice, /) -> tuple[GonkaEndpoint, ...]: ...
    def __iter__(self) -> Iterator[GonkaEndpoint]: ...
    def __contains__(self, key: object, /) -> bool: ...
    def _replace(
        self,
        nodes: tuple[GonkaEndpoint, ...],
        weights: tuple[int, ...] | None = ...,
        schedule: SchedulePlan | None = ...,
    ) -> None: ...
    def _set_clock(self, now_ns: int | None) -> None: ...
    def _state(self) -> tuple[int, int, list[int]]: ...
    def _check_consistency(self) -> None: ...
    # C core only: each stripe's cursor (the twin has one cursor, no stripes).
    def _stripe_positions(self) -> list[int]: ...
    def _next_releasing_gil(self) -> GonkaEndpoint: ...
    def _select_loop(self, k: int, release_gil: bool = ...) -> list[int]: ...
    def _set_observer(self, fn: Callable[[str, GonkaEndpoint, int, int], object] | None) -> None: ...
    def _mark_success_observed(self, target: _Target) -> bool: ...
    def _apply_remote(self, endpoint: GonkaEndpoint, remaining_ns: int, failures: int) -> bool: ...
    def _apply_remote_success(self, endpoint: GonkaEndpoint) -> bool: ...
