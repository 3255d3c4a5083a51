"""``python -m gonka_pool demo``'s HTTP part: three local nodes, one stopped and one
overloaded midway, several threads on one openai client, and no request failed."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.thread_unsafe(reason="starts its own threads and local nodes"),
    pytest.mark.skipif(importlib.util.find_spec("openai") is None, reason="openai is not installed"),
]


def test_the_http_demo_fails_over_without_a_failed_request():
    from gonka_pool._cli.demo_http import demo_http

    lines: list[str] = []
    assert demo_http(phase_seconds=0.25, out=lines.append) == 0
    text = "\n".join(lines)
    assert "no request failed" in text
    # node2 is refused (ConnectError), or cut off while its port closes.
    assert re.search(r"node2  (ConnectError|RemoteProtocolError|ReadError)", text)
    assert "node3  HTTP 503" in text


@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "unbuffered"])
def test_the_demo_stops_quietly_when_its_reader_goes_away(unbuffered):
    # `python -m gonka_pool demo | head -1`: no traceback, whether stdout was
    # flushed line by line (the error inside main) or at exit.
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    process = subprocess.Popen(
        [sys.executable, "-m", "gonka_pool", "demo"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = process.stdout.readline()
    process.stdout.close()
    try:
        stderr = process.communicate(timeout=60)[1]
    finally:
        process.kill()
    assert first.startswith(b"gonka_pool demo:")
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr.decode()
    if unbuffered:
        assert process.returncode == 1
    else:  # the whole output may reach the pipe at exit, before the reader leaves
        assert process.returncode in (0, 1)
