"""``python -m gonka_pool demo``'s HTTP part: three local nodes, one stopped and one
overloaded midway, several threads on one openai client, and no request failed."""

from __future__ import annotations

import importlib.util
import re

import pytest

pytestmark = [
    pytest.mark.thread_unsafe(reason="starts its own threads and local nodes"),
    pytest.mark.skipif(importlib.util.find_spec("openai") is None,
                       reason="openai is not installed"),
]


def test_the_http_demo_fails_over_without_a_failed_request():
    from gonka_pool._demo_http import demo_http

    lines: list[str] = []
    assert demo_http(phase_seconds=0.25, out=lines.append) == 0
    text = "\n".join(lines)
    assert "no request failed" in text
    # node2 is refused (ConnectError), or cut off while its port closes.
    assert re.search(r"node2  (ConnectError|RemoteProtocolError|ReadError)", text)
    assert "node3  HTTP 503" in text
