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


@pytest.mark.parametrize("url", ["ftp://node.example", "ws://node.example", "file:///etc/passwd",
                                 "mailto:someone@example.com", "localhost:8080"])
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


@pytest.mark.parametrize(("address", "error"), [(None, TypeError), (b"a", TypeError), ("", ValueError),
                                                 ("a b", ValueError), ("a;b", ValueError),
                                                 ("a,b", ValueError), ("a\n", ValueError)])
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
