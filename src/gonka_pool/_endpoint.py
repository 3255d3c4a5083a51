"""``GonkaEndpoint``: one node of the network, validated once, immutable after."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Final
from urllib.parse import urlsplit

__all__ = ["GonkaEndpoint"]

# Whitespace and control characters anywhere in a URL or address: the WHATWG parser
# silently strips or percent-encodes some of them, which would make the endpoint
# differ from the text the user wrote (and from what the Rust seed would accept).
_FORBIDDEN_CHARS: Final = re.compile(r"[\x00-\x20\x7f-\x9f\s]")
# Code points that a WHATWG host may not contain (beyond those split off above).
_FORBIDDEN_HOST_CHARS: Final = re.compile(r"[<>\[\]\\^|%@/?#:]")
# Beyond those, non-ASCII text may hide characters that print as nothing: format
# characters (zero-width spaces, bidi overrides, the BOM), which IDNA drops or a log
# shows invisibly, and lone surrogates, which cannot be encoded to send a request.
_INVISIBLE_CATEGORIES: Final = frozenset({"Cf", "Cs"})


def _has_invisible(text: str) -> bool:
    return not text.isascii() and any(unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in text)


def _plain_str(text: str) -> str:
    """``text`` as an exact ``str``: a subclass could override the very methods
    (``lower``, ``startswith``, ``__hash__``) that validation relies on."""
    return text if type(text) is str else str.__str__(text)


# A scheme and "//" that can be kept when redacting: nothing before them can be
# part of a password, so an error still shows which URL it is about.
_AUTHORITY_PREFIX: Final = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//")
# The scheme as urlsplit finds it, matched here so that a URL with '@' can be refused
# before urlsplit runs: its errors may quote the netloc, userinfo and all.
_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# Where a query or a fragment starts.
_QUERY_OR_FRAGMENT: Final = re.compile(r"[?#]")

CREDENTIALS_MESSAGE: Final = (
    "invalid endpoint URL: user:password credentials are not allowed in an "
    "endpoint URL (they would leak through repr and logs)"
)
# A '/', '?' or '#' inside a password ends the authority early, so its '@' and the
# rest of the password land in the path, query or fragment.
AT_AFTER_HOST_MESSAGE: Final = (
    "invalid endpoint URL: '@' is not allowed anywhere in an endpoint URL (after the "
    "host it usually ends a password that contains '/', '?' or '#', which would leak "
    "through repr and logs)"
)
AT_IN_ADDRESS_MESSAGE: Final = (
    "invalid endpoint address: '@' is not allowed (in a 'url;address' entry it "
    "usually ends a URL password that contained ';')"
)


def redact(text: str) -> str:
    """``text`` fit to quote in an error, repr or log: what could be userinfo, a
    query or a fragment becomes ``***``.

        >>> redact("https://user:pw@node.example/v1?api_key=sk-1#top")
        'https://***@node.example/v1?***'

    Userinfo is everything from after ``scheme://`` (or from the start) to the last
    ``@``: the last and not the first, as a password may itself contain ``@``, and
    ``/``, ``?``, ``#``, ``;`` or ``,`` in it move where parsers split, so only the
    last ``@`` is sure to lie after the password.  A query or fragment carries
    tokens as often (``?api_key=...``, OAuth's ``#access_token=...``): it is cut
    after its ``?`` or ``#``, to the end of the text, since a mistaken URL may hold
    a space or a ``;address`` after it.  A ``?`` or ``#`` before that last ``@`` is
    either in a password or starts a query that holds an ``@``; the text cannot
    tell which, so all of it after the scheme goes.
    """
    at = text.rfind("@")
    if at >= 0:
        prefix = _AUTHORITY_PREFIX.match(text)
        keep = prefix.end() if prefix is not None and prefix.end() <= at else 0
        if _QUERY_OR_FRAGMENT.search(text, keep, at):
            return f"{text[:keep]}***"
        text = f"{text[:keep]}***{text[at:]}"
    mark = _QUERY_OR_FRAGMENT.search(text)
    return text if mark is None else f"{text[: mark.end()]}***"


def _invalid(url: str, reason: str) -> ValueError:
    return ValueError(f"invalid endpoint URL {redact(url)!r}: {reason}")


def _separator_in_url(url: str, separator: str) -> ValueError:
    # Mostly GONKA_ENDPOINTS written with ';' between entries, or a whole list
    # passed to parse: the URL would swallow the entries after it.
    return _invalid(
        url,
        f"contains {separator!r}: GONKA_ENDPOINTS entries are 'url;address' "
        "separated by ',', and a base URL may contain neither",
    )


def validate_base_url(url: object) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host, else raise.

    ValueError messages contain ``invalid endpoint URL`` or ``must use http or https
    scheme``, as the seed's do.  A URL containing ``@`` (credentials) is rejected
    with a fixed text, and every message that quotes a URL quotes it through
    ``redact``, so no password, query or fragment reaches an error, repr or log.
    """
    if not isinstance(url, str):
        raise TypeError(f"base_url must be a str, not {type(url).__name__}")
    url = _plain_str(url)
    if _FORBIDDEN_CHARS.search(url):
        raise _invalid(url, "contains whitespace or control characters")
    if _has_invisible(url):
        raise _invalid(url, "contains an invisible format character or a lone surrogate")
    scheme = _SCHEME.match(url)
    if scheme is None:
        raise _invalid(url, "relative URL without a scheme")
    if scheme[1].lower() not in ("http", "https"):
        raise ValueError(f"endpoint URL {redact(url)!r} must use http or https scheme")
    if "@" in url:
        rest = url[scheme.end() :]
        authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0] if rest.startswith("//") else ""
        raise ValueError(CREDENTIALS_MESSAGE if "@" in authority else AT_AFTER_HOST_MESSAGE)
    for separator in ";,":
        if separator in url:
            raise _separator_in_url(url, separator)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
        raise _invalid(url, str(exc)) from None
    if parts.scheme != scheme[1].lower():
        # Only if urllib ever finds the scheme differently from _SCHEME.
        raise _invalid(url, "relative URL without a scheme")
    netloc = parts.netloc
    if not url[len(parts.scheme) + 1 :].startswith("//") or not netloc:
        raise _invalid(url, "empty host")
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        if "%" in host:
            # RFC 6874 zone IDs name an interface of this machine; the WHATWG URL
            # standard (browsers, httpx's parser) does not accept them.
            raise _invalid(url, "an IPv6 zone ID is not allowed")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _invalid(url, f"invalid IPv6 address {host!r}") from None
        if rest and not rest.startswith(":"):
            raise _invalid(url, "unexpected text after the IPv6 address")
    else:
        host = parts.hostname or ""
        if not host or host.endswith(".."):
            raise _invalid(url, "empty host")
        if _FORBIDDEN_HOST_CHARS.search(netloc.rpartition(":")[0] if ":" in netloc else netloc):
            raise _invalid(url, "forbidden character in host")
    try:
        port = parts.port
    except ValueError:
        raise _invalid(url, "invalid port") from None
    if netloc.endswith(":") or (port is not None and not 0 < port <= 65535):
        raise _invalid(url, "invalid port")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise _invalid(url, "a base URL cannot carry a query or fragment")
    return url


def validate_address(address: object) -> str:
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, not {type(address).__name__}")
    address = _plain_str(address)
    if not address:
        raise ValueError("endpoint address must not be empty")
    if "@" in address:
        raise ValueError(AT_IN_ADDRESS_MESSAGE)
    if _FORBIDDEN_CHARS.search(address) or ";" in address or "," in address:
        raise ValueError(
            f"invalid endpoint address {redact(address)!r}: whitespace, control characters, ';' and ',' are not allowed"
        )
    if _has_invisible(address):
        raise ValueError(
            f"invalid endpoint address {redact(address)!r}: invisible format characters and "
            "lone surrogates are not allowed"
        )
    return address


class GonkaEndpoint:
    """One Gonka node: an http(s) base URL and the node's on-chain signer address.

    An immutable, hashable value; two endpoints are equal when both fields are.
    The URL is validated here, once, so a pool never holds an unusable node::

        >>> ep = GonkaEndpoint("https://node1.gonka.ai", "gonka1abc")
        >>> ep.base_url, ep.address
        ('https://node1.gonka.ai', 'gonka1abc')
        >>> ep == GonkaEndpoint.parse("https://node1.gonka.ai;gonka1abc")
        True
    """

    __slots__ = ("base_url", "address", "_hash")
    __match_args__ = ("base_url", "address")

    base_url: str
    address: str
    _hash: int

    def __init__(self, base_url: str, address: str) -> None:
        if hasattr(self, "_hash"):
            # ep.__init__(...) again would rewrite a value that pools, sets and other
            # threads already hold (and change its hash under them).
            raise AttributeError(f"{type(self).__name__} is immutable")
        base_url = validate_base_url(base_url)
        address = validate_address(address)
        set_field = object.__setattr__
        set_field(self, "base_url", base_url)
        set_field(self, "address", address)
        set_field(self, "_hash", hash((base_url, address)))

    @classmethod
    def parse(cls, text: str) -> GonkaEndpoint:
        """Parse one ``url;address`` entry, the form of gonka-openai's GONKA_ENDPOINTS.

        Surrounding whitespace of the entry and of each part is ignored.

            >>> GonkaEndpoint.parse(" https://node1.gonka.ai/v1 ; gonka1abc ")
            GonkaEndpoint(base_url='https://node1.gonka.ai/v1', address='gonka1abc')
        """
        if not isinstance(text, str):
            raise TypeError(f"endpoint entry must be a str, not {type(text).__name__}")
        entry = text.strip()
        url, sep, address = entry.rpartition(";")
        if not sep:
            raise ValueError(f"invalid endpoint entry {redact(entry)!r}: expected 'url;address'")
        if "@" in address:
            # Checked before the URL: with a ';' inside a password the split falls
            # there, and the URL's own error would quote the start of the password.
            raise ValueError(AT_IN_ADDRESS_MESSAGE)
        return cls(url.strip(), address.strip())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.base_url == other.base_url and self.address == other.address

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, address={self.address!r})"

    def __reduce__(self) -> tuple[type[GonkaEndpoint], tuple[str, str]]:
        return (type(self), (self.base_url, self.address))

    def _copy_for_stripe(self) -> GonkaEndpoint:
        """An equal object with its own reference count (the C core's per-thread
        copies), made without validating again."""
        twin = object.__new__(type(self))
        set_field = object.__setattr__
        set_field(twin, "base_url", self.base_url)
        set_field(twin, "address", self.address)
        set_field(twin, "_hash", self._hash)
        return twin

    def __copy__(self) -> GonkaEndpoint:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> GonkaEndpoint:
        return self
