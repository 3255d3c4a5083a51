"""Secrets that must not ride along with an error (issue 21, defect 6).

A token in a URL's query or fragment (``?api_key=sk-...``, ``#access_token=...``)
reaches no error message, repr or log record, whichever public call refuses the
URL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

gonka = pytest.importorskip("gonka_pool.gonka", reason="the [gonka] extra is not installed")
from gonka_pool import GonkaEndpoint  # noqa: E402
from gonka_pool.gonka import Refresher, discover, pool_from_gonka, refresh  # noqa: E402

pytestmark = pytest.mark.thread_unsafe(
    reason="sets GONKA_ENDPOINTS, which is process-wide, and caplog sees every thread"
)

# -- defect 6: a URL's query and fragment ----------------------------------------------

# The token in two halves: a message quoting either half quotes part of it.
HALVES = ("Zq9vK", "Xw7pL")
TOKEN = "sk-" + "".join(HALVES)
SECRET_URLS = [
    f"https://node.example/v1?api_key={TOKEN}",
    f"https://node.example/v1#access_token={TOKEN}",
    f"https://node.example/v1?a=1&key={TOKEN}#frag",
    f"https://node.example?{TOKEN}",
    f"http://node.example:8080/v1/?token={TOKEN};more",
    f"https://node.example/v1?key={TOKEN}@x",  # an '@' in the query
    f"https://node .example/v1?key={TOKEN}",  # wrong before the query too
    f"ftp://node.example/v1?key={TOKEN}",  # a scheme refused before the query is looked at
    f"https://node.example/v1?key={TOKEN} more",
]


def texts_of(exc: BaseException) -> list[str]:
    """Every text an exception shows: str, repr, args, notes, and the same for each
    exception chained to it as cause or context."""
    texts, seen = [], set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), *map(repr, current.args), *map(str, getattr(current, "__notes__", ()))]
        todo += [current.__cause__, current.__context__]
    return texts


def url_calls(url: str, pool_impl: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[[], object]]:
    """Each public call that takes a URL from the user, refusing this one."""
    pool = pool_impl.EndpointPool([GonkaEndpoint("https://node1.example", "gonka1a")])

    def from_env() -> object:
        monkeypatch.setenv("GONKA_ENDPOINTS", f"https://node0.example;gonka1z,{url};gonka1a")
        return pool_impl.EndpointPool.from_env()

    calls: dict[str, Callable[[], object]] = {
        "GonkaEndpoint": lambda: GonkaEndpoint(url, "gonka1a"),
        "GonkaEndpoint.parse": lambda: GonkaEndpoint.parse(f"{url};gonka1a"),
        "EndpointPool.from_env": from_env,
        "discover": lambda: discover(url),
        "pool_from_gonka": lambda: pool_from_gonka(url, pool_class=pool_impl.EndpointPool),
        "refresh": lambda: refresh(pool, url),
        "Refresher": lambda: Refresher(pool, url),
    }
    try:
        import gonka_pool.httpx2 as httpx2_transports
        from gonka_pool.openai import client
    except ImportError:  # pragma: no cover - the [openai] extra is not installed
        return calls
    calls["httpx2.PoolTransport(origin=)"] = lambda: httpx2_transports.PoolTransport(pool, origin=url)
    calls["openai.client(origin=)"] = lambda: client(pool, origin=url)
    calls["gonka.openai_client(source_url=)"] = lambda: gonka.openai_client("0x" + "11" * 32, source_url=url)
    calls["gonka.openai_client(endpoints=)"] = lambda: gonka.openai_client("0x" + "11" * 32, endpoints=f"{url};gonka1a")
    return calls


@pytest.mark.parametrize("url", SECRET_URLS)
def test_no_error_or_log_record_quotes_a_token_in_a_urls_query_or_fragment(url, pool_impl, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    for name, call in url_calls(url, pool_impl, monkeypatch).items():
        caplog.clear()
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        texts = [*texts_of(info.value), caplog.text]
        leaked = [text for text in texts for half in HALVES if half in text]
        assert not leaked, (name, url, leaked)


def test_a_refused_url_still_shows_which_url_it_was_up_to_its_query():
    with pytest.raises(ValueError) as info:
        GonkaEndpoint.parse(f"https://node.example/v1?api_key={TOKEN};gonka1a")
    assert "'https://node.example/v1?***'" in str(info.value)
