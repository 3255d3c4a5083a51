"""``python -m gonka_pool bench`` runs end to end, quickly, and reports what it says."""

from __future__ import annotations

import json

import pytest

from gonka_pool import _bench


@pytest.mark.thread_unsafe(reason="starts its own threads and prints")
def test_a_tiny_run_reports_every_implementation_and_ratio(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--rounds", "2", "--seconds", "0.001", "--threads", "2,1", "--core-k", "2000", "--quiet"]
    assert _bench.main([*argv, "--json", str(out)]) == 0
    report = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["threads"] == [1, 2]
    assert result["interpreter"]["clock"].startswith(("CLOCK_MONOTONIC", "QueryPerformanceCounter"))
    names = set(result["throughput"])
    assert {"gonka_pool (python)", "lock pool", "itertools.count pool", "floor: lst.__len__()"} <= names
    if result["interpreter"]["gonka_pool"] == "c":
        assert {"gonka_pool (c)", "gonka_pool (c), next_ = obj.next per thread"} <= names
        assert set(result["core_loop"]) == {"1", "2"}
    singles = result["single_thread_ratio"]
    assert singles["next()"] == 1.0
    assert all(ratio > 0 for ratio in singles.values())
    assert all(len(v) == 2 for v in result["raw"]["single_thread_ns"].values())
    for name in names:
        assert name in report
    assert "ratio to" in report and "cores" in report


@pytest.mark.parametrize("text", ["2,4", "", "1,x", "0,1"])
def test_thread_counts_must_be_a_list_including_one(text):
    with pytest.raises(SystemExit):
        _bench.main(["--threads", text, "--quiet"])


def test_a_setup_runs_once_per_thread_before_the_repeated_call():
    calls = []

    class Probe:
        def method(self):
            calls.append("bound")
            return lambda: calls.append("call")

    run = _bench.make_runner("call_ = obj.method(); call_()")
    run(Probe(), 3)
    assert calls == ["bound"] + ["call"] * (3 * _bench.UNROLL)
