"""GonkaEndpoint: validation at construction, value semantics, the url;address form."""

from __future__ import annotations

import copy
import pickle

import pytest

from gonka_pool import GonkaEndpoint


@pytest.mark.parametrize(
    "url",
    [
        "https://node1.gonka.ai",
        "http://node1.gonka.ai:8000/v1",
        "HTTPS://Node1.Gonka.AI/",
        "http://127.0.0.1:5000",
        "http://[::1]:8080/v1",
        "https://[2001:db8::1]",
        "https://bücher.example/api",
        "http://localhost",
    ],
)
def test_http_and_https_urls_with_a_host_are_accepted(url):
    assert GonkaEndpoint(url, "gonka1abc").base_url == url


@pytest.mark.parametrize(
    "url",
    ["ftp://node.example", "ws://node.example", "file:///etc/passwd", "mailto:someone@example.com", "localhost:8080"],
)
def test_other_schemes_are_rejected(url):
    with pytest.raises(ValueError, match="must use http or https scheme"):
        GonkaEndpoint(url, "a")


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "",
        "https://",
        "https:///v1",
        "http:node.example",
        "node.example",
        "//node.example",
        " https://node.example",
        "https://node.example\n",
        "https://node\x00.example",
        "https://no de.example",
        "https://node.example:99999",
        "https://node.example:0",
        "https://node.example:port",
        "https://node.example:",
        "http://[::1",
        "http://[not-ipv6]/",
        "http://[::1]junk/",
        "https://node<>.example",
        "https://node%20.example",
        "https://node.example/v1?key=1",
        "https://node.example/#frag",
    ],
)
def test_unparseable_or_hostless_urls_are_rejected(url):
    with pytest.raises(ValueError, match="invalid endpoint URL"):
        GonkaEndpoint(url, "a")


@pytest.mark.parametrize("url", ["https://user:secret@node.example", "http://user@node.example/v1"])
def test_urls_with_credentials_are_rejected_without_echoing_them(url):
    with pytest.raises(ValueError, match="credentials") as info:
        GonkaEndpoint(url, "a")
    assert "secret" not in str(info.value) and "user" not in str(info.value).split(":")[0]
    assert "invalid endpoint URL" in str(info.value)


@pytest.mark.parametrize("url", [None, b"https://node.example", 1, ["https://a"]])
def test_a_non_string_url_is_a_type_error(url):
    with pytest.raises(TypeError, match="base_url must be a str"):
        GonkaEndpoint(url, "a")


@pytest.mark.parametrize(
    ("address", "error"),
    [
        (None, TypeError),
        (b"a", TypeError),
        ("", ValueError),
        ("a b", ValueError),
        ("a;b", ValueError),
        ("a,b", ValueError),
        ("a\n", ValueError),
    ],
)
def test_a_bad_address_is_rejected(address, error):
    with pytest.raises(error, match="address"):
        GonkaEndpoint("https://node.example", address)


def test_endpoint_accepts_keywords_and_is_an_immutable_hashable_value():
    a = GonkaEndpoint(base_url="https://n1", address="a1")
    b = GonkaEndpoint("https://n1", "a1")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != GonkaEndpoint("https://n1", "a2")
    assert a != GonkaEndpoint("https://n2", "a1")
    assert a != ("https://n1", "a1")
    with pytest.raises(AttributeError):
        a.base_url = "https://evil"
    with pytest.raises(AttributeError):
        del a.address
    assert repr(a) == "GonkaEndpoint(base_url='https://n1', address='a1')"


def test_endpoint_round_trips_through_pickle_and_copy():
    ep = GonkaEndpoint("https://n1", "a1")
    assert pickle.loads(pickle.dumps(ep)) == ep
    assert copy.copy(ep) is ep and copy.deepcopy(ep) is ep


def test_endpoint_supports_structural_pattern_matching():
    match GonkaEndpoint("https://n1", "a1"):
        case GonkaEndpoint(url, address):
            assert (url, address) == ("https://n1", "a1")


def test_parse_reads_the_gonka_endpoints_entry_form():
    assert GonkaEndpoint.parse("https://node1.gonka.ai;gonka1abc") == GonkaEndpoint(
        "https://node1.gonka.ai", "gonka1abc"
    )
    assert GonkaEndpoint.parse("  http://n:8000/v1 ; gonka1x  ").base_url == "http://n:8000/v1"


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("https://node1.gonka.ai", ValueError, "expected 'url;address'"),
        ("https://node1.gonka.ai;", ValueError, "must not be empty"),
        (";gonka1abc", ValueError, "invalid endpoint URL"),
        ("ftp://n;a", ValueError, "http or https scheme"),
        (None, TypeError, "must be a str"),
    ],
)
def test_parse_rejects_malformed_entries(text, error, message):
    with pytest.raises(error, match=message):
        GonkaEndpoint.parse(text)


# -- entry separators and '@' inside a URL ------------------------------------------


@pytest.mark.parametrize(
    ("url", "separator"),
    [
        ("https://n1/v1;a1;https://n2/v1", ";"),  # GONKA_ENDPOINTS with ';' between entries
        ("https://n1/v1;a1,https://n2/v1", ";"),  # a whole list given to parse
        ("https://node.example/a;b", ";"),
        ("https://node.example/a,b", ","),
        ("https://n1,n2/v1", ","),
    ],
)
def test_a_semicolon_or_comma_in_a_base_url_is_refused_as_an_entry_separator(url, separator):
    with pytest.raises(ValueError, match="invalid endpoint URL") as info:
        GonkaEndpoint(url, "a1")
    assert f"contains {separator!r}: GONKA_ENDPOINTS entries are 'url;address' separated by ','" in str(info.value)


@pytest.mark.parametrize("text", ["https://n1/v1;a1,https://n2/v1;a2", "https://n1/v1;a1;https://n2/v1;a2"])
def test_parse_refuses_several_entries_instead_of_building_one_endpoint_from_them(text):
    with pytest.raises(ValueError, match="separated by ','"):
        GonkaEndpoint.parse(text)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://user:secret@node.example", "credentials are not allowed"),
        ("https://user:sec/ret@node.example", "'@' is not allowed anywhere"),
        ("https://user:sec?ret@node.example", "'@' is not allowed anywhere"),
        ("https://user:sec#ret@node.example", "'@' is not allowed anywhere"),
        ("https://node.example/@v1", "'@' is not allowed anywhere"),
        ("https://user:secret@[::1", "credentials are not allowed"),
    ],
)
def test_a_url_with_an_at_sign_anywhere_is_refused_with_a_text_that_quotes_none_of_it(url, message):
    with pytest.raises(ValueError, match=message) as info:
        GonkaEndpoint(url, "a")
    assert "'" + url[:9] not in str(info.value) and "sec" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("ftp://user:secret@node.example", "endpoint URL 'ftp://***@node.example' must use"),
        ("mailto:someone@example.com", "endpoint URL '***@example.com' must use"),
        ("//user:secret@node.example", "invalid endpoint URL '//***@node.example': relative"),
        ("https://user:se cret@node.example", "invalid endpoint URL 'https://***@node.example'"),
        ("https://user:s@cr@t@node .example", "invalid endpoint URL 'https://***@node .example'"),
        ("u:se//cret@node.example", "endpoint URL '***@node.example' must use"),
    ],
)
def test_an_error_found_before_the_at_sign_quotes_the_url_with_its_userinfo_redacted(url, shown):
    with pytest.raises(ValueError) as info:
        GonkaEndpoint(url, "a")
    assert str(info.value).startswith(shown)


def test_an_address_with_an_at_sign_is_refused_without_quoting_it():
    with pytest.raises(ValueError, match="invalid endpoint address: '@' is not allowed") as info:
        GonkaEndpoint("https://node.example", "sec@ret")
    assert "sec" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # no address: the password is followed by nothing the split could use
        ("https://user:secret@node.example", "invalid endpoint entry 'https://***@node.example'"),
        # a ';' in the password: the split falls inside it
        ("https://user:sec;ret@node.example", "invalid endpoint address: '@' is not allowed"),
        ("https://user:sec;ret@node.example;a1", "invalid endpoint URL: user:password"),
    ],
)
def test_parse_quotes_no_part_of_a_password_however_the_entry_splits(text, shown):
    with pytest.raises(ValueError) as info:
        GonkaEndpoint.parse(text)
    assert str(info.value).startswith(shown)
    assert "sec" not in str(info.value) and "ret@" not in str(info.value)


# -- GONKA_ENDPOINTS mistakes -----------------------------------------------------------

ENV_UNSAFE = pytest.mark.thread_unsafe(reason="sets GONKA_ENDPOINTS, which is process-wide")


@ENV_UNSAFE
@pytest.mark.parametrize(
    "value",
    [
        "https://n1;a1,https://n2;a2,",
        ",https://n1;a1,https://n2;a2",
        "https://n1;a1,,https://n2;a2",
        "https://n1;a1, ,https://n2;a2 , ",
    ],
)
def test_from_env_skips_empty_entries_as_openai_client_does(pool_impl, monkeypatch, value):
    monkeypatch.setenv("GONKA_ENDPOINTS", value)
    expected = [GonkaEndpoint("https://n1", "a1"), GonkaEndpoint("https://n2", "a2")]
    assert list(pool_impl.EndpointPool.from_env().endpoints) == expected
    # One GONKA_ENDPOINTS for every entry point: the one-call client reads it alike.
    pytest.importorskip("openai")
    pytest.importorskip("ecdsa")
    from gonka_pool.gonka import openai_client

    client = openai_client("0x" + "11" * 32)
    assert list(client.gonka_pool.endpoints) == expected


@ENV_UNSAFE
@pytest.mark.parametrize("value", [",", " , ,", ",,,"])
def test_from_env_refuses_a_variable_of_commas_alone(pool_impl, monkeypatch, value):
    monkeypatch.setenv("GONKA_ENDPOINTS", value)
    with pytest.raises(ValueError, match="environment variable GONKA_ENDPOINTS holds only commas"):
        pool_impl.EndpointPool.from_env()


@ENV_UNSAFE
def test_from_env_numbers_an_invalid_entry_counting_the_empty_ones(pool_impl, monkeypatch):
    monkeypatch.setenv("GONKA_ENDPOINTS", "https://n1;a1,,ftp://n2;a2")
    with pytest.raises(ValueError, match=r"^environment variable GONKA_ENDPOINTS, entry 3 of 3 \(counting from 1\)"):
        pool_impl.EndpointPool.from_env()


@ENV_UNSAFE
@pytest.mark.parametrize(
    ("value", "entry", "bad"),
    [
        ("https://n1;a1,ftp://n2;a2", "entry 2 of 2", "ftp://n2;a2"),
        ("https://n1", "entry 1 of 1", "https://n1"),
        ("https://n1;a1, not a url;a2 ,https://n3;a3", "entry 2 of 3", " not a url;a2 "),
        ("https://n1;a 1", "entry 1 of 1", "https://n1;a 1"),
    ],
)
def test_from_env_names_the_variable_and_the_position_of_an_invalid_entry(pool_impl, monkeypatch, value, entry, bad):
    monkeypatch.setenv("MY_NODES", value)
    with pytest.raises(ValueError) as parse:
        GonkaEndpoint.parse(bad)
    with pytest.raises(ValueError) as info:
        pool_impl.EndpointPool.from_env("MY_NODES")
    where = f"environment variable MY_NODES, {entry} (counting from 1)"
    assert str(info.value) == f"{where}: {parse.value}"


@ENV_UNSAFE
def test_from_env_refuses_semicolons_used_between_entries(pool_impl, monkeypatch):
    monkeypatch.setenv("GONKA_ENDPOINTS", "https://n1/v1;a1;https://n2/v1;a2")
    with pytest.raises(ValueError) as info:
        pool_impl.EndpointPool.from_env()
    message = str(info.value)
    assert message.startswith("environment variable GONKA_ENDPOINTS, entry 1 of 1 (counting from 1): ")
    assert "contains ';': GONKA_ENDPOINTS entries are 'url;address' separated by ','" in message


@ENV_UNSAFE
def test_from_env_accepts_a_variable_name_with_braces(pool_impl, monkeypatch):
    monkeypatch.setenv("NODES_{0}", "https://n1;a1,ftp://n2;a2")
    with pytest.raises(ValueError, match=r"^environment variable NODES_\{0\}, entry 2 of 2"):
        pool_impl.EndpointPool.from_env("NODES_{0}")
