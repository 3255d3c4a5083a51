"""A password in an endpoint URL never reaches an exception or a log record.

Whatever else is wrong with a URL that carries ``user:password@``, the errors of
``GonkaEndpoint(...)``, ``GonkaEndpoint.parse``, ``EndpointPool.from_env`` and
``EndpointPool.update`` (their text, repr, args, notes and chained exceptions) and
anything logged meanwhile leave the password out.  Passwords here contain the
characters that move where parsers split (``/ ? # ; , @ : [ ] %``, whitespace), so
the test covers the mis-split cases as well as the plain one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gonka_pool import GonkaEndpoint

pytestmark = pytest.mark.thread_unsafe(
    reason="sets GONKA_ENDPOINTS, which is process-wide, and caplog collects the records of every thread"
)

MARKER = "S3CRET"
SPLITTERS = list("/?#;,@ :[]%\t\n\u3000\uff1a\uff20")

# Each segment of a password holds the whole marker, and segments are joined by
# characters that split URLs or entries: any piece of a mis-split password that
# reaches a message therefore shows the marker.  No lone surrogate or NUL, which an
# environment variable cannot hold.
FILLER = st.text(
    alphabet=st.one_of(st.sampled_from(SPLITTERS), st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
    max_size=4,
)
SEGMENT = st.builds(lambda a, b: f"{a}{MARKER}{b}", FILLER, FILLER)
PASSWORDS = st.builds(
    lambda first, rest: first + "".join(sep + seg for sep, seg in rest),
    SEGMENT,
    st.lists(st.tuples(st.sampled_from([*SPLITTERS, "//"]), SEGMENT), max_size=3),
)
SCHEMES = st.sampled_from(
    ["https://", "http://", "HTTPS://", "ftp://", "//", "", "https:", "https:/", "mailto:", " https://"]
)
USERS = st.sampled_from(["u", "user", "", "gonka.admin"])
HOSTS = st.one_of(
    st.sampled_from(
        [
            "node.example",
            "127.0.0.1",
            "[::1]",
            "[::1",
            "::1]",
            "[]",
            "",
            "a b",
            "bücher.example",
            "h@x",
            "[fe80::1%25x]",
            "n1;a1",
            "n,1",
            "a..",
            "%41",
        ]
    ),
    st.from_regex(r"[a-z0-9.\-]{0,10}", fullmatch=True),
)
PORTS = st.sampled_from(["", ":8080", ":1", ":0", ":65536", ":99999", ":x", ":", "::80"])
PATHS = st.sampled_from(["", "/", "/v1", "/v1?x=1", "#frag", "/a;b", "/a,b", "/v1/ "])
URLS = st.builds(
    lambda scheme, user, password, host, port, path: (f"{scheme}{user}:{password}@{host}{port}{path}", password),
    SCHEMES,
    USERS,
    PASSWORDS,
    HOSTS,
    PORTS,
    PATHS,
)
NEIGHBOURS = "https://node0.example;addr0"


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception chained to it, as cause or context, recursively."""
    seen = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


def texts_of(exc: BaseException) -> list[str]:
    """Every text an exception shows: str, repr, args, notes, and the same for each
    exception chained to it as cause or context."""
    texts: list[str] = []
    for current in chain(exc):
        texts += [str(current), repr(current), *map(repr, current.args), *map(str, getattr(current, "__notes__", ()))]
    return texts


def assert_secret_kept(call, caplog, password: str) -> None:
    """``call()`` may succeed or raise; a raise and the log show no ``MARKER``."""
    caplog.clear()
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - any exception's text is checked
        leaked = [text for text in texts_of(exc) if MARKER in text]
        assert not leaked, (password, leaked)
    logged = [record.getMessage() for record in caplog.records] + [caplog.text]
    assert not [text for text in logged if MARKER in text], password


def calls_for(url: str, pool_impl, monkeypatch):
    """Each public way a URL reaches validation, as a zero-argument call."""
    pool = pool_impl.EndpointPool([GonkaEndpoint("https://node1.example", "addr1")])

    def from_env(value: str):
        def read():
            monkeypatch.setenv("GONKA_ENDPOINTS", value)
            return pool_impl.EndpointPool.from_env()

        return read

    return [
        lambda: GonkaEndpoint(url, "a1"),
        lambda: GonkaEndpoint.parse(f"{url};a1"),
        lambda: GonkaEndpoint.parse(url),
        from_env(f"{url};a1"),
        from_env(url),
        from_env(f"{NEIGHBOURS},{url};a1,https://node2.example;addr2"),
        from_env(f"{NEIGHBOURS},{url},https://node2.example;addr2"),
        from_env(f"{NEIGHBOURS};{url};a1"),
        lambda: pool.update([GonkaEndpoint(url, "a1")]),
        lambda: pool.update([GonkaEndpoint("https://node1.example", "addr1"), url]),
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://u:S3CRET@h",
        "https://u:S3CRET pass@h",
        "ftp://u:S3CRET@h",
        "https://u:S3#CRET@h",
        "https://u:S3/CRET@h",
        "https://u:S3?CRET@h",
        "https://u:S3CRET@[::1",
        "//u:S3CRET@h",
        "https://u:S3,CRET@h",
        "https://u:S3;CRET@h",
        "https://u:S3@CRET@h",
        "u:S3CRET@h",
        "https:u:S3CRET@h",
        "https://u:S3CRET@h:port",
        "https://u:S3CRET@h:99999",
        "https://u:S3CRET@h/v1?x=1",
        "https://u:S3%CRET@h",
        "https://u:S3\uff20CRET@h",
    ],
)
def test_no_error_or_log_line_shows_the_password_of_a_url_from_the_security_review(url, pool_impl, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    # The marker split in two: a message quoting either half would leak part of it.
    for call in calls_for(url, pool_impl, monkeypatch):
        caplog.clear()
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        texts = [*texts_of(info.value), caplog.text]
        for half in ("S3", "CRET"):
            assert not [text for text in texts if half in text], (url, texts)


@pytest.mark.parametrize(
    ("value", "entry"),
    [
        ("https://u:S3CRET@h", "entry 1 of 1"),
        ("https://u:S3,CRET@h;a1", "entry 2 of 2"),
        ("https://n0;a0,https://u:S3CRET@h;a1", "entry 2 of 2"),
        ("https://u:S3;CRET@h;a1,https://n0;a0", "entry 1 of 2"),
    ],
)
def test_from_env_names_the_entry_with_credentials_without_quoting_it(pool_impl, monkeypatch, value, entry):
    monkeypatch.setenv("GONKA_ENDPOINTS", value)
    with pytest.raises(ValueError, match="credentials") as info:
        pool_impl.EndpointPool.from_env()
    message = str(info.value)
    assert message.startswith(f"environment variable GONKA_ENDPOINTS, {entry} (counting from 1)")
    assert "S3" not in message and "CRET" not in message


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(url_and_password=URLS)
@example(url_and_password=("https://u:S3CRET pass@h", "S3CRET pass"))
@example(url_and_password=("https://u:S3CRET;xS3CRET@h", "S3CRET;xS3CRET"))
@example(url_and_password=("https://u:S3CRET,xS3CRET@h", "S3CRET,xS3CRET"))
def test_no_error_or_log_line_shows_any_part_of_a_generated_password(url_and_password, pool_impl, monkeypatch, caplog):
    url, password = url_and_password
    caplog.set_level(logging.DEBUG)
    with monkeypatch.context() as patched:
        for call in calls_for(url, pool_impl, patched):
            assert_secret_kept(call, caplog, password)
