"""The failover loop for any client: pool.call, pool.acall, EndpointPool.from_env,
Retry-After, and a core that imports no HTTP library.  Both implementations."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest

import gonka_pool
from conftest import nodes
from gonka_pool import GonkaEndpoint, _failover
from gonka_pool._failover import NEUTRAL, PASS, failover_plan, load_verdict, retry_after_seconds, run

pytestmark = pytest.mark.thread_unsafe(reason="from_env tests set environment variables; caplog is per-process")

T0 = 10**12  # test clock, ns: frozen so cooldown deadlines are exact
S = 10**9


def in_order(pool_impl) -> dict:
    """Settings under which ``acquire()`` picks exactly as ``next_indexed()`` does
    (round robin): these tests pin the order of attempts.  Empty for a core without
    ``balance=``, whose picks are round robin anyway."""
    try:
        pool_impl.EndpointPool(nodes(1), balance="round_robin")
    except TypeError:
        return {}
    return {"balance": "round_robin"}


@pytest.fixture
def make_pool(pool_impl):
    """conftest's ``make_pool``, picking in round robin (see ``in_order``)."""
    settings = in_order(pool_impl)
    return lambda n, **more: pool_impl.make(n, **{**settings, **more})


def run_python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return result.stdout.strip()


def frozen(pool):
    """``pool`` with its clock frozen at T0 and its next pick node 0."""
    pool._set_clock(T0)
    return from_node_0(pool)


def from_node_0(pool):
    # A pool may start its round robin anywhere: take picks until the last node.
    for _ in range(len(pool)):
        if pool.next_indexed()[0] == len(pool) - 1:
            return pool
    raise AssertionError("no round robin")


def deadlines(pool) -> list[int]:
    """Each node's stored deadline relative to T0, in seconds (0: healthy)."""
    return [0 if d == 0 else (d - T0) / S for d in pool._state()[2]]


class NodeDown(ConnectionError):
    pass


def failing_on(*bad: int):
    """fn(endpoint) that raises NodeDown on the nodes numbered ``bad``; records calls."""
    calls: list[int] = []

    def fn(endpoint: GonkaEndpoint) -> str:
        number = int(endpoint.address.removeprefix("addr"))
        calls.append(number)
        if number in bad:
            raise NodeDown(endpoint.base_url)
        return f"answer from {number}"

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


# -- pool.call ------------------------------------------------------------------


def test_call_returns_the_first_answer_and_marks_nothing(make_pool):
    pool = frozen(make_pool(3))
    fn = failing_on()
    assert [pool.call(fn) for _ in range(4)] == ["answer from 0", "answer from 1", "answer from 2", "answer from 0"]
    assert deadlines(pool) == [0, 0, 0]


def test_call_fails_over_and_marks_only_the_failed_nodes(make_pool):
    pool = frozen(make_pool(4))
    fn = failing_on(0, 1)
    assert pool.call(fn) == "answer from 2"
    assert fn.calls == [0, 1, 2]
    assert deadlines(pool) == [30, 30, 0, 0]
    # Cooling nodes are skipped by later calls.
    assert [pool.call(fn) for _ in range(3)] == ["answer from 3", "answer from 2", "answer from 3"]
    assert fn.calls[3:] == [3, 2, 3]


def test_call_tries_every_node_while_failures_are_fast(make_pool):
    for size in (2, 5):
        pool = frozen(make_pool(size))
        fn = failing_on(*range(size))
        with pytest.raises(NodeDown, match=r"node\d"):
            pool.call(fn)
        assert sorted(fn.calls) == list(range(size))


def test_call_gives_up_after_three_timeouts(make_pool):
    pool = frozen(make_pool(6))
    calls = []

    def stalls(endpoint):
        calls.append(endpoint)
        raise TimeoutError("stalled")

    with pytest.raises(TimeoutError):
        pool.call(stalls)
    assert len(calls) == 3


def test_call_reaches_the_healthy_node_past_three_bad_neighbours(make_pool):
    pool = frozen(make_pool(4))
    errors = {0: ConnectionRefusedError, 1: ConnectionResetError, 2: TimeoutError}

    def fn(endpoint):
        number = int(endpoint.address.removeprefix("addr"))
        if number in errors:
            raise errors[number](endpoint.base_url)
        return number

    assert pool.call(fn) == 3
    pool = frozen(make_pool(4))
    with pytest.raises(TimeoutError):  # an explicit attempts=3 still means 3
        pool.call(fn, attempts=3)


def test_call_never_tries_a_node_twice_while_an_untried_one_remains(pool_impl):
    pool = pool_impl.EndpointPool(nodes(4), weights=[5, 1, 1, 1], start=0, **in_order(pool_impl))
    pool._set_clock(T0)
    for i in range(4):
        pool.mark_failed(i, 100 + i)  # all cooling: selection falls back to node 0
    fn = failing_on(0, 1, 2, 3)
    with pytest.raises(NodeDown):
        pool.call(fn)
    assert sorted(fn.calls) == [0, 1, 2, 3]


def test_acall_follows_the_same_rules(make_pool):
    pool = frozen(make_pool(5))
    calls = []

    async def afn(endpoint):
        calls.append(endpoint)
        if len(calls) < 4:
            raise ConnectionRefusedError("refused")
        return "ok"

    assert asyncio.run(pool.acall(afn)) == "ok" and len(calls) == 4

    async def stalls(endpoint):
        calls.append(endpoint)
        raise TimeoutError

    calls.clear()
    with pytest.raises(TimeoutError):
        asyncio.run(pool.acall(stalls))
    assert len(calls) == 3


def test_call_raises_the_last_error_when_attempts_run_out(make_pool):
    pool = frozen(make_pool(3))
    fn = failing_on(0, 1, 2)
    with pytest.raises(NodeDown) as caught:
        pool.call(fn, attempts=2, cooldown=timedelta(seconds=5))
    assert str(caught.value) == "https://node1.example"
    assert deadlines(pool) == [5, 5, 0]


def test_call_does_not_retry_or_mark_errors_outside_retry_on(make_pool):
    pool = frozen(make_pool(3))

    def fn(endpoint):
        raise KeyError("a bug in the caller")

    with pytest.raises(KeyError):
        pool.call(fn, retry_on=ConnectionError)
    assert deadlines(pool) == [0, 0, 0]
    assert pool.next_indexed()[0] == 1  # exactly one node was selected


def test_call_cools_timeouts_for_timeout_cooldown(make_pool):
    pool = frozen(make_pool(3))
    seen = []

    def fn(endpoint):
        seen.append(endpoint)
        if len(seen) == 1:
            raise TimeoutError("stalled")
        if len(seen) == 2:
            raise OSError("refused")
        return "ok"

    assert pool.call(fn, cooldown=7, timeout_cooldown=90) == "ok"
    assert deadlines(pool) == [90, 7, 0]


def test_call_lets_keyboard_interrupt_through_without_marking(make_pool):
    pool = frozen(make_pool(2))

    def fn(endpoint):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pool.call(fn)
    assert deadlines(pool) == [0, 0]


def test_call_logs_one_warning_per_cooldown_with_its_reason(make_pool, caplog):
    pool = frozen(make_pool(3))
    with caplog.at_level(logging.DEBUG, logger="gonka_pool"):
        pool.call(failing_on(0))
    (record,) = [r for r in caplog.records if r.name == "gonka_pool"]
    assert record.levelno == logging.WARNING
    assert record.gonka_endpoint == pool[0] and record.gonka_reason == "NodeDown"
    assert record.gonka_cooldown == 30.0 and record.gonka_failures == 1
    assert "NodeDown" in record.getMessage() and "1 consecutive failure" in record.getMessage()


def test_call_logs_a_failure_on_a_node_already_cooling_at_debug_only(make_pool, caplog):
    pool = frozen(make_pool(1))
    pool.mark_failed(0, 60)  # cooling: the only node is still tried (earliest deadline)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="gonka_pool"), pytest.raises(NodeDown):
        pool.call(failing_on(0))
    (record,) = [r for r in caplog.records if r.name == "gonka_pool"]
    assert record.levelno == logging.DEBUG and record.gonka_reason == "NodeDown"


def test_call_raises_a_callers_bug_at_once_and_cools_no_node(make_pool):
    pool = frozen(make_pool(3))
    calls = []

    def ask(endpoint):
        calls.append(endpoint)
        return [][1]

    with pytest.raises(IndexError):
        pool.call(ask)
    assert len(calls) == 1 and deadlines(pool) == [0, 0, 0]
    with pytest.raises(NodeDown):  # retry_on= widens what is the node's fault
        pool.call(failing_on(0, 1, 2), retry_on=KeyError)
    with pytest.raises(IndexError):
        pool.call(ask, retry_on=IndexError, attempts=2)
    assert len(calls) == 3


def test_call_follows_the_pools_backoff_and_resets_it_on_success(pool_impl):
    pool = frozen(pool_impl.EndpointPool(nodes(2), start=0, base_cooldown=1.0, max_cooldown=8.0, **in_order(pool_impl)))
    flaky = failing_on(0)
    seen = []
    for outage, expected in enumerate([1, 2, 4, 8, 8]):
        pool._set_clock(T0 + outage * 100 * S)  # every earlier cooldown is over
        from_node_0(pool)
        assert pool.call(flaky) == "answer from 1"
        state = pool.snapshot()[0]
        seen.append((state.cooldown_remaining, state.consecutive_failures))
        assert state.cooldown_remaining == expected
    assert [count for _, count in seen] == [1, 2, 3, 4, 5]
    pool._set_clock(T0 + 1000 * S)
    from_node_0(pool)
    assert pool.call(failing_on()) == "answer from 0"  # the answer resets the level
    assert pool.snapshot()[0].consecutive_failures == 0
    assert pool.snapshot()[0].total_failures == 5


def test_call_counts_timeout_on_as_timeouts(make_pool):
    class ClientTimeout(Exception):  # e.g. requests.Timeout, which is no TimeoutError
        pass

    pool = frozen(make_pool(3))

    def fn(endpoint):
        if endpoint == pool[0]:
            raise ClientTimeout
        return "ok"

    assert pool.call(fn, cooldown=5, timeout_cooldown=90, timeout_on=ClientTimeout) == "ok"
    assert deadlines(pool) == [90, 0, 0]


def test_call_never_cools_a_timeout_for_less_than_an_error(make_pool):
    pool = frozen(make_pool(3))
    errors = iter([TimeoutError("stalled"), OSError("refused")])

    def fn(endpoint):
        error = next(errors, None)
        if error is not None:
            raise error
        return "ok"

    assert pool.call(fn, cooldown=20, timeout_cooldown=5) == "ok"
    assert deadlines(pool) == [20, 20, 0]


def test_call_stops_starting_attempts_at_its_deadline(make_pool):
    pool = frozen(make_pool(5))
    calls = []

    def slow_failure(endpoint):
        calls.append(endpoint)
        time.sleep(0.2)
        raise ConnectionResetError("reset")

    started = time.monotonic()
    with pytest.raises(ConnectionResetError):
        pool.call(slow_failure, attempts=5, deadline=0.3)
    assert len(calls) == 2 and time.monotonic() - started < 1.0


def test_call_refuses_an_async_function(make_pool):
    pool = frozen(make_pool(2))

    async def ask(endpoint):
        return "never awaited"

    selections = pool._state()[0]
    with pytest.raises(TypeError, match="acall"):
        pool.call(ask)
    assert pool._state()[0] == selections  # refused before any node was picked
    with pytest.raises(TypeError, match="acall"):
        pool.call(lambda endpoint: ask(endpoint), retry_on=Exception)
    assert deadlines(pool) == [0, 0] and pool._state()[0] == selections + 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"attempts": 0}, ValueError),
        ({"attempts": -1}, ValueError),
        ({"attempts": 1.5}, TypeError),
        ({"attempts": True}, TypeError),
        ({"cooldown": -1}, ValueError),
        ({"cooldown": float("nan")}, ValueError),
        ({"cooldown": "30"}, TypeError),
        ({"cooldown": True}, TypeError),
        ({"timeout_cooldown": timedelta(seconds=-1)}, ValueError),
        ({"retry_on": ValueError("not a class")}, TypeError),
        ({"retry_on": [OSError]}, TypeError),
        ({"retry_on": (OSError, int)}, TypeError),
        ({"timeout_on": "TimeoutError"}, TypeError),
        ({"deadline": 0}, ValueError),
        ({"deadline": -1}, ValueError),
        ({"deadline": math.inf}, ValueError),
        ({"deadline": "5"}, TypeError),
    ],
)
def test_call_rejects_bad_arguments_before_calling_anything(make_pool, kwargs, error):
    pool = frozen(make_pool(2))
    selections = pool._state()[0]
    fn = failing_on()
    with pytest.raises(error):
        pool.call(fn, **kwargs)
    with pytest.raises(error):
        asyncio.run(pool.acall(_async(fn), **kwargs))
    assert fn.calls == [] and pool._state()[0] == selections


@pytest.mark.parametrize("forever", [10**400, Fraction(10**400), math.inf])
def test_call_accepts_what_mark_failed_accepts_as_a_cooldown(make_pool, caplog, forever):
    pool = frozen(make_pool(3))
    with caplog.at_level(logging.INFO, logger="gonka_pool"), pytest.raises(NodeDown):
        pool.call(failing_on(0, 1, 2), cooldown=forever)
    assert pool._state()[2] == [2**64 - 1] * 3  # "until cleared", not an overflow
    assert len([r for r in caplog.records if getattr(r, "gonka_reason", None)]) == 3
    with pytest.raises(ValueError):
        pool.call(failing_on(), cooldown=-forever)


# -- pool.acall -----------------------------------------------------------------


def _async(fn):
    async def afn(endpoint):
        await asyncio.sleep(0)
        return fn(endpoint)

    return afn


def test_acall_fails_over_like_call(make_pool):
    pool = frozen(make_pool(4))
    fn = failing_on(0, 1)
    assert asyncio.run(pool.acall(_async(fn))) == "answer from 2"
    assert fn.calls == [0, 1, 2]
    assert deadlines(pool) == [30, 30, 0, 0]


def test_acall_gives_up_with_the_last_error(make_pool):
    pool = frozen(make_pool(3))
    fn = failing_on(0, 1, 2)
    with pytest.raises(NodeDown, match="node2"):
        asyncio.run(pool.acall(_async(fn)))
    assert deadlines(pool) == [30, 30, 30]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TimeoutError is TimeoutError from 3.11")
def test_acall_cools_asyncio_timeouts_for_timeout_cooldown(make_pool):
    pool = frozen(make_pool(2))

    async def afn(endpoint):
        if endpoint == pool[0]:
            await asyncio.wait_for(asyncio.sleep(1), 0.001)
        return "ok"

    assert asyncio.run(pool.acall(afn, timeout_cooldown=90)) == "ok"
    assert deadlines(pool) == [90, 0]
    assert asyncio.run(pool.acall(afn)) == "ok"  # the pool's backoff: 30 s first
    assert deadlines(pool) == [90, 0]


def test_acall_follows_the_pools_backoff_and_stops_at_its_deadline(pool_impl):
    pool = frozen(pool_impl.EndpointPool(nodes(3), start=0, base_cooldown=2.0, max_cooldown=8.0, **in_order(pool_impl)))
    calls = []

    async def afn(endpoint):
        calls.append(endpoint)
        await asyncio.sleep(0.2)
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        asyncio.run(pool.acall(afn, deadline=0.3))
    assert len(calls) == 2 and deadlines(pool) == [2, 2, 0]
    with pytest.raises(IndexError):
        asyncio.run(pool.acall(_async(lambda endpoint: [][0])))
    assert deadlines(pool) == [2, 2, 0]


def test_acall_never_retries_cancellation(make_pool):
    pool = frozen(make_pool(3))
    started = []

    async def afn(endpoint):
        started.append(endpoint)
        await asyncio.sleep(10)

    async def main():
        task = asyncio.ensure_future(pool.acall(afn))
        while not started:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(started) == 1 and deadlines(pool) == [0, 0, 0]


def test_acall_rejects_a_sync_function_without_marking_nodes(make_pool):
    pool = frozen(make_pool(3))
    with pytest.raises(TypeError, match=r"use pool\.call"):
        asyncio.run(pool.acall(failing_on()))
    assert deadlines(pool) == [0, 0, 0]


# -- from_env -------------------------------------------------------------------


def test_from_env_reads_gonka_endpoints_in_order(pool_impl, monkeypatch):
    monkeypatch.setenv(
        "GONKA_ENDPOINTS", " https://node0.example;addr0 , https://node1.example/v1 ;addr1,http://127.0.0.1:8080;addr2"
    )
    pool = pool_impl.EndpointPool.from_env()
    assert type(pool) is pool_impl.EndpointPool
    assert pool.endpoints == (
        GonkaEndpoint("https://node0.example", "addr0"),
        GonkaEndpoint("https://node1.example/v1", "addr1"),
        GonkaEndpoint("http://127.0.0.1:8080", "addr2"),
    )


def test_from_env_reads_another_variable(pool_impl, monkeypatch):
    monkeypatch.setenv("MY_NODES", "https://node0.example;addr0")
    assert pool_impl.EndpointPool.from_env("MY_NODES").endpoints == tuple(nodes(1))


@pytest.mark.parametrize(("value", "state"), [(None, "not set"), ("", "empty"), ("  ", "empty")])
def test_from_env_names_the_variable_when_it_is_missing(pool_impl, monkeypatch, value, state):
    if value is None:
        monkeypatch.delenv("GONKA_ENDPOINTS", raising=False)
    else:
        monkeypatch.setenv("GONKA_ENDPOINTS", value)
    with pytest.raises(ValueError, match=f"environment variable GONKA_ENDPOINTS is {state}"):
        pool_impl.EndpointPool.from_env()


@pytest.mark.parametrize(
    "entries",
    [
        "https://node0.example",  # no address
        "ftp://node0.example;addr0",  # scheme
        "https://user:secret@node0.example;addr0",  # credentials
        "https://node0.example;addr 0",  # bad address
        "not a url;addr0",
    ],
)
def test_from_env_rejects_entries_as_gonka_endpoint_parse_does(pool_impl, monkeypatch, entries):
    monkeypatch.setenv("GONKA_ENDPOINTS", entries)
    with pytest.raises((ValueError, TypeError)) as from_env:
        pool_impl.EndpointPool.from_env()
    with pytest.raises(type(from_env.value)) as parse:
        for entry in entries.split(","):
            GonkaEndpoint.parse(entry)
    # from_env names the variable and the entry, then says what parse says.
    assert str(from_env.value).startswith("environment variable GONKA_ENDPOINTS, entry ")
    assert str(from_env.value).endswith(str(parse.value)) or "credentials" in str(parse.value)
    assert "secret" not in str(from_env.value)


def test_from_env_rejects_a_variable_name_that_is_not_a_str(pool_impl):
    with pytest.raises(TypeError):
        pool_impl.EndpointPool.from_env(b"GONKA_ENDPOINTS")


# -- Retry-After ----------------------------------------------------------------

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Wed, 01 Jan 2025 12:02:00 GMT", 120.0),
        ("Wed, 01 Jan 2025 11:00:00 GMT", 0.0),  # already past
        ("9" * 400, 300.0),  # capped, not "until cleared"
        ("99999999999", 300.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 300.0),
        (None, None),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("1e3", None),
        ("١٢٠", None),  # Arabic-Indic digits are not delay-seconds
    ],
)
def test_retry_after_is_delay_seconds_or_an_http_date(header, seconds):
    assert retry_after_seconds(header, now=NOW) == seconds


def test_retry_after_is_capped_at_the_given_limit():
    assert retry_after_seconds("120", now=NOW, limit=10.0) == 10.0
    assert retry_after_seconds("Fri, 31 Dec 9999 23:59:59 GMT", now=NOW, limit=60.0) == 60.0
    assert retry_after_seconds("5", now=NOW, limit=10.0) == 5.0


# -- the core stays dependency-free ---------------------------------------------


@pytest.mark.parametrize("no_extensions", ["", "1"])
def test_importing_the_package_imports_no_http_library(no_extensions):
    out = run_python(
        """
        import sys
        import gonka_pool
        pool = gonka_pool.EndpointPool.from_env()
        print(pool.call(lambda ep: ep.address), gonka_pool.IMPLEMENTATION,
              sorted(m for m in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "anyio")
                     if m in sys.modules))
        """,
        GONKA_POOL_NO_EXTENSIONS=no_extensions,
        GONKA_ENDPOINTS="https://node0.example;addr0",
    )
    assert out == f"addr0 {'python' if no_extensions else gonka_pool.IMPLEMENTATION} []"


def test_a_pass_verdict_fails_over_without_marking_the_node(make_pool):
    pool = frozen(make_pool(3))
    plan = failover_plan(
        pool, None, lambda exc: None, lambda result: (PASS, 0.0, "refused", False) if result == "retry" else None
    )
    answers = iter(["retry", "ok"])
    assert run(plan, lambda idx, endpoint: next(answers)) == "ok"
    assert deadlines(pool) == [0, 0, 0]


# -- leases: every attempt settles once ---------------------------------------------


def in_flight(pool) -> int:
    """Requests the pool counts in flight, over all nodes."""
    return sum(state.in_flight for state in pool.snapshot())


class RecordedLease:
    """A real lease whose settling is recorded: an outcome per settle that took effect."""

    def __init__(self, lease):
        self.lease = lease
        self.outcomes: list[str] = []

    @property
    def index(self):
        return self.lease.index

    @property
    def endpoint(self):
        return self.lease.endpoint

    def success(self):
        self.outcomes.append("success")
        self.lease.success()

    def failure(self, cooldown=None, reason=None, *, retry_after=None):
        self.outcomes.append("failure")
        return self.lease.failure(cooldown, reason=reason, retry_after=retry_after)

    def overloaded(self, cooldown=None):
        self.outcomes.append("overloaded")
        self.lease.overloaded(cooldown)

    def answered(self):
        self.outcomes.append("answered")
        self.lease.answered()

    def release(self):
        if not self.lease.settled:  # release() on a settled lease is a no-op
            self.outcomes.append("release")
        self.lease.release()


class Recorder:
    """What the failover loop needs of a pool, over a real one, recording the leases."""

    def __init__(self, pool):
        self.pool = pool
        self.leases: list[RecordedLease] = []

    def _record(self, lease):
        self.leases.append(RecordedLease(lease))
        return self.leases[-1]

    def acquire(self):
        return self._record(self.pool.acquire())

    def _acquire_index(self, idx):
        return self._record(self.pool._acquire_index(idx))

    @property
    def endpoints(self):
        return self.pool.endpoints

    def __len__(self):
        return len(self.pool)

    def outcomes(self) -> list[list[str]]:
        return [lease.outcomes for lease in self.leases]


def judged(answers):
    """A send that replays ``answers`` (raising the exceptions among them), and a
    plan over ``pool`` judging them: NodeDown and the strings below are failures."""
    verdicts = {
        "pass": (PASS, 0.0, "signature reused", False),
        "busy": load_verdict("HTTP 429"),
        "error": (None, 0.0, "HTTP 503", False),
        "asked": (None, 120.0, "HTTP 429", False),
        "caller's error": NEUTRAL,
    }

    def judge_error(exc):
        return (None, 0.0, "NodeDown", False) if isinstance(exc, NodeDown) else None

    def judge_result(result):
        if result == "judge bug":
            raise LookupError("a bug in the judge")
        return verdicts.get(result)

    answers = iter(answers)

    def send(idx, endpoint):
        answer = next(answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return judge_error, judge_result, send


@pytest.mark.parametrize(
    ("answers", "outcome", "settled"),
    [
        (["ok"], "ok", [["success"]]),
        (
            ["pass", "busy", "error", NodeDown("x"), "ok"],
            "ok",
            [["answered"], ["overloaded"], ["failure"], ["failure"], ["success"]],
        ),
        (["error", "caller's error"], "caller's error", [["failure"], ["answered"]]),
        (["error", KeyError("the caller's bug")], KeyError, [["failure"], ["release"]]),
        (["error", KeyboardInterrupt()], KeyboardInterrupt, [["failure"], ["release"]]),
        (["busy", "judge bug"], LookupError, [["overloaded"], ["release"]]),
        ([NodeDown("x"), NodeDown("y"), "error"], "error", [["failure"], ["failure"], ["failure"]]),
    ],
    ids=[
        "answer",
        "every-verdict",
        "an-answer-that-says-nothing",
        "not-the-nodes-fault",
        "keyboard-interrupt",
        "judge-raises",
        "all-fail",
    ],
)
def test_every_attempt_settles_its_lease_exactly_once(make_pool, answers, outcome, settled):
    pool = frozen(make_pool(len(answers)))
    recorder = Recorder(pool)
    judge_error, judge_result, send = judged(answers)
    plan = failover_plan(recorder, None, judge_error, judge_result)
    if isinstance(outcome, type):
        with pytest.raises(outcome):
            run(plan, send)
    else:
        assert run(plan, send) == outcome
    assert recorder.outcomes() == settled
    assert in_flight(pool) == 0


def test_a_plan_closed_mid_attempt_releases_its_lease(make_pool):
    pool = frozen(make_pool(2))
    recorder = Recorder(pool)
    plan = failover_plan(recorder, None, lambda exc: None, lambda result: None)
    assert next(plan)[0] == 0
    assert in_flight(pool) == 1  # the attempt holds its node
    plan.close()  # what run() does when a BaseException or a cancellation ends it
    assert recorder.outcomes() == [["release"]] and in_flight(pool) == 0
    assert deadlines(pool) == [0, 0]


def test_a_tried_node_picked_again_is_released_for_the_first_untried_one(make_pool):
    pool = frozen(make_pool(3))
    for i in range(3):
        pool.mark_failed(i, 100 + i)  # all cooling: every pick is node 0, the earliest deadline
    recorder = Recorder(pool)
    fn = failing_on(0, 1, 2)
    with pytest.raises(NodeDown):
        _failover.call(recorder, fn)
    assert fn.calls == [0, 1, 2]
    # Node 0 again after each failure: released, and the first untried node acquired.
    assert recorder.outcomes() == [["failure"], ["release"], ["failure"], ["release"], ["failure"]]
    assert [lease.index for lease in recorder.leases] == [0, 0, 1, 0, 2]
    assert in_flight(pool) == 0


def test_call_leaves_no_request_in_flight_whatever_the_outcome(make_pool):
    pool = frozen(make_pool(3))
    assert pool.call(failing_on()) == "answer from 0"
    assert pool.call(failing_on(1)) == "answer from 2"
    with pytest.raises(NodeDown):
        pool.call(failing_on(0, 1, 2))
    with pytest.raises(IndexError):
        pool.call(lambda endpoint: [][0])

    def interrupted(endpoint):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pool.call(interrupted)

    async def ask(endpoint):
        return "never awaited"

    with pytest.raises(TypeError, match="acall"):
        pool.call(lambda endpoint: ask(endpoint))
    assert in_flight(pool) == 0


def test_acall_leaves_no_request_in_flight_when_cancelled(make_pool):
    pool = frozen(make_pool(3))
    started = []

    async def afn(endpoint):
        started.append(endpoint)
        if len(started) == 1:
            raise ConnectionRefusedError("refused")
        await asyncio.sleep(10)

    async def main():
        task = asyncio.ensure_future(pool.acall(afn))
        while len(started) < 2:
            await asyncio.sleep(0)
        assert in_flight(pool) == 1  # the second attempt; the first is settled
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert in_flight(pool) == 0
    assert deadlines(pool) == [30, 0, 0]  # the cancelled attempt marked nothing


def test_a_refusal_for_load_fails_over_without_escalating_the_backoff(make_pool, caplog):
    pool = frozen(make_pool(3))
    judge_error, judge_result, send = judged(["busy", "ok"])
    with caplog.at_level(logging.DEBUG, logger="gonka_pool"):
        assert run(failover_plan(pool, None, judge_error, judge_result), send) == "ok"
    busy = pool.snapshot()[0]
    assert 0 < busy.cooldown_remaining < 1  # a moment, jittered, not the backoff's 30 s
    assert (busy.consecutive_failures, busy.total_failures) == (0, 0)
    (record,) = [r for r in caplog.records if r.name == "gonka_pool"]
    assert record.levelno == logging.DEBUG and record.gonka_reason == "HTTP 429"
    assert "load" in record.getMessage()
    assert in_flight(pool) == 0


def test_a_refusal_that_asks_for_time_is_a_failure_cooled_that_long(make_pool):
    pool = frozen(make_pool(3))
    judge_error, judge_result, send = judged(["asked", "ok"])
    assert run(failover_plan(pool, None, judge_error, judge_result), send) == "ok"
    asked = pool.snapshot()[0]
    assert asked.cooldown_remaining == 120 and asked.consecutive_failures == 1
    assert in_flight(pool) == 0
