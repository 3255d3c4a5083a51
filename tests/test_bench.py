"""``python -m gonka_pool bench`` runs end to end, quickly, and reports what it says."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gonka_pool
from gonka_pool.__main__ import main as cli_main
from gonka_pool._cli import argtypes
from gonka_pool._cli import bench as _bench

# Options for the shortest real run: should a check below ever stop rejecting its bad
# value, the run it lets through ends in well under a second instead of minutes.
TINY = {"--rounds": "1", "--seconds": "0.001", "--threads": "1", "--core-k": "1000", "--nodes": "2"}


def tiny_argv(**overrides: str) -> list[str]:
    options = dict(TINY)
    for name, value in overrides.items():
        option = "--" + name.replace("_", "-")
        if option == "--max-threads":
            options.pop("--threads")  # the two are mutually exclusive
        options[option] = value
    return [part for item in options.items() for part in item]


def run_cli(*args: str, prelude: str = "") -> tuple[subprocess.CompletedProcess, float]:
    """``python -m gonka_pool ARGS`` in a fresh interpreter, after ``prelude``."""
    package_root = str(Path(gonka_pool.__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # argparse colours its help on 3.14 when asked to; the tests read plain text.
    env.update(NO_COLOR="1", PYTHON_COLORS="0")
    code = f"import runpy, sys\n{prelude}\nrunpy.run_module('gonka_pool', run_name='__main__', alter_sys=True)"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    return proc, time.monotonic() - start


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


BAD_VALUES = [
    ("rounds", "0"),
    ("rounds", "-1"),
    ("rounds", "x"),
    ("rounds", "1.5"),
    ("threads", "0"),
    ("threads", "1,,2"),
    ("threads", "a"),
    ("threads", ""),
    ("threads", "1,-2"),
    ("seconds", "0"),
    ("seconds", "-0.1"),
    ("seconds", "s"),
    ("nodes", "1"),
    ("nodes", "0"),
    ("core_k", "0"),
    ("max_threads", "0"),
    ("max_threads", "y"),
]


@pytest.mark.thread_unsafe(reason="capsys captures the one process-wide sys.stdout and sys.stderr")
@pytest.mark.parametrize(
    "entry", [_bench.main, lambda argv: cli_main(["bench", *argv])], ids=["_bench.main", "__main__.main"]
)
@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_bad_numeric_option_exits_2_with_a_usage_message_naming_it_before_measuring(entry, name, value, capsys):
    start = time.monotonic()
    with pytest.raises(SystemExit) as exc:
        entry(tiny_argv(**{name: value}))
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    assert exc.value.code == 2
    assert captured.err.startswith("usage: python -m gonka_pool bench")
    assert f"argument --{name.replace('_', '-')}:" in captured.err
    assert captured.out == ""
    assert "measurements" not in captured.err and "\r" not in captured.err  # no progress
    assert elapsed < 2


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400"])
def test_seconds_must_be_finite(text):
    # Here rather than through main(): before the check, these calibrated for minutes.
    with pytest.raises(argparse.ArgumentTypeError, match="finite"):
        argtypes.positive_seconds(text)


def test_rounds_0_from_the_command_line_exits_2_at_once_without_a_traceback():
    proc, elapsed = run_cli("bench", "--rounds", "0")
    assert proc.returncode == 2, proc.stderr
    assert "argument --rounds: must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert elapsed < 10  # an interpreter's start on a loaded machine; the defaults measure for minutes


def test_threads_and_max_threads_together_are_refused_rather_than_one_silently_ignored():
    with pytest.raises(SystemExit) as exc:
        _bench.build_parser().parse_args(["--threads", "1,2", "--max-threads", "4"])
    assert exc.value.code == 2


def test_plot_without_matplotlib_fails_before_measuring(tmp_path):
    # None in sys.modules makes both importlib.util.find_spec and import see no matplotlib,
    # whether or not this machine has it.
    proc, elapsed = run_cli(
        "bench", *tiny_argv(), "--plot", str(tmp_path / "plot.png"), prelude="sys.modules['matplotlib'] = None"
    )
    assert proc.returncode == 2, proc.stderr
    assert "--plot needs matplotlib" in proc.stderr
    assert proc.stdout == "" and "measurements" not in proc.stderr
    assert not (tmp_path / "plot.png").exists()
    assert elapsed < 10


@pytest.mark.thread_unsafe(reason="capsys captures the one process-wide sys.stdout and sys.stderr")
def test_a_json_file_in_a_missing_folder_is_refused_before_measuring(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _bench.main([*tiny_argv(), "--json", str(tmp_path / "missing" / "bench.json")])
    captured = capsys.readouterr()
    assert exc.value.code == 2
    assert "--json: no such folder" in captured.err
    assert captured.out == "" and "measurements" not in captured.err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(progress: _bench.Progress, rounds: int, steps: int) -> None:
    for round_ in range(1, rounds + 1):
        for step in range(steps):
            progress.step(f"round {round_}: case {step}")
        progress.end_round(round_)
    progress.close()


def test_progress_off_a_terminal_writes_one_plain_line_per_round_and_no_carriage_return():
    stream = io.StringIO()
    drive(_bench.Progress(stream, total=30, rounds=3), rounds=3, steps=10)
    text = stream.getvalue()
    assert "\r" not in text
    assert text.splitlines() == [f"  round {r}/3 done ({10 * r}/30 measurements)" for r in (1, 2, 3)]


def test_progress_on_a_terminal_rewrites_one_line_in_place_and_ends_it():
    stream = Terminal()
    drive(_bench.Progress(stream, total=30, rounds=3), rounds=3, steps=10)
    text = stream.getvalue()
    assert text.count("\r") == 30
    assert text.endswith("\n") and text.count("\n") == 1
    assert "[  30/30]" in text


def test_quiet_progress_writes_nothing():
    progress = _bench.Progress(None, total=30, rounds=3)
    drive(progress, rounds=3, steps=10)  # no stream to write to, and no error


@pytest.mark.thread_unsafe(reason="starts its own threads, and capsys captures the process-wide stderr")
def test_a_run_with_stderr_not_a_terminal_writes_no_carriage_return(capsys):
    assert _bench.main(tiny_argv(rounds="2")) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err
    lines = captured.err.splitlines()
    assert [line.split(" done ")[0] for line in lines] == ["  round 1/2", "  round 2/2"]
    assert "interleaved rounds" in captured.out


def test_bench_help_is_plain_text_and_names_every_default():
    parser = _bench.build_parser()
    text = parser.format_help()
    for markup in ("``", ":class:", ":func:", ":meth:", "`"):
        assert markup not in text
    for action in parser._actions:
        if action.dest != "help":
            assert "default" in (action.help or ""), action.option_strings
    words = " ".join(text.split())  # the formatter wraps to the terminal's width
    assert "(default: 9)" in words and "(default: 0.05)" in words


def test_bench_help_works_through_python_dash_m():
    proc, _ = run_cli("bench", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m gonka_pool bench")
    assert "--rounds" in proc.stdout and "(default: 9)" in " ".join(proc.stdout.split())
    assert "`" not in proc.stdout and ":class:" not in proc.stdout


def test_the_top_level_help_lists_both_commands_in_plain_text():
    proc, _ = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    first_words = [line.split()[:2] for line in proc.stdout.splitlines()]
    assert ["demo", "show"] in first_words and ["bench", "measure"] in first_words
    assert "`" not in proc.stdout


# -- bench-failover -------------------------------------------------------------------


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the openai SDK needs 3.11+")
@pytest.mark.thread_unsafe(reason="starts local nodes and client threads of its own")
def test_bench_failover_answers_every_request_with_attempts_none(tmp_path):
    pytest.importorskip("openai")
    out = tmp_path / "failover.json"
    lines: list[str] = []
    from gonka_pool._cli import bench_failover as _bench_failover

    parser = _bench_failover.configure(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--requests", "24", "--threads", "4", "--rounds", "1", "--timeout", "0.3", "--json", str(out)]
    )
    assert _bench_failover.execute(parser, args, out=lines.append) == 0
    summaries = json.loads(out.read_text())["summaries"]
    assert set(summaries) == {"fixed cap: attempts=3", "attempts=None"}
    new = summaries["attempts=None"]
    assert new["requests"] == 24 and new["answered"] == 24
    assert new["p99_ms"] < 1000 * (0.3 * 1.1 + 0.3)  # one timeout, and slack for a busy machine
    assert any(line.lstrip().startswith("attempts=None") for line in lines)


@pytest.mark.parametrize("option", ["--requests", "--threads", "--rounds", "--timeout"])
def test_bench_failover_refuses_a_bad_number_before_starting_anything(option):
    result, elapsed = run_cli("bench-failover", option, "0")
    assert result.returncode == 2 and option in result.stderr and elapsed < 10


# -- bench-scaleout -------------------------------------------------------------------


@pytest.mark.skipif(gonka_pool.IMPLEMENTATION != "c", reason="shared= needs the C core")
@pytest.mark.thread_unsafe(reason="starts local nodes and worker processes of its own")
def test_bench_scaleout_shared_health_spares_the_workers_a_dead_node(tmp_path):
    pytest.importorskip("httpx")
    from gonka_pool._cli import bench_scaleout as _bench_scaleout

    out = tmp_path / "scaleout.json"
    lines: list[str] = []
    parser = _bench_scaleout.configure(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--workers", "3", "--seconds", "1.5", "--cooldown", "0.5", "--next-calls", "2000", "--json", str(out)]
    )
    assert _bench_scaleout.execute(parser, args, out=lines.append) == 0
    results = json.loads(out.read_text())["results"]
    independent, shared = results["independent"], results["shared"]
    assert independent["lost"] == shared["lost"] == 0
    # each independent worker learns of the dead node by itself, once per window
    assert independent["dead_per_window"] >= 2.5
    assert shared["dead_per_window"] < independent["dead_per_window"]
    # gunicorn --preload: the workers are forks of one process that built the pool
    assert results["preload"]["lost"] == 0
    assert results["preload"]["dead_per_window"] < independent["dead_per_window"]
    assert any(line.lstrip().startswith("shared") for line in lines)


@pytest.mark.parametrize("option", ["--workers", "--seconds", "--cooldown", "--timeout"])
def test_bench_scaleout_refuses_a_bad_number_before_starting_anything(option):
    result, elapsed = run_cli("bench-scaleout", option, "0")
    assert result.returncode == 2 and option in result.stderr and elapsed < 10
