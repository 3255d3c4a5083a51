"""``python -m gonka_pool bench-balance`` runs every phase end to end, quickly, and
writes the figures it prints."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from gonka_pool.__main__ import main as cli_main

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="the openai SDK needs 3.11+")

# The shortest run that still has every phase: about 10 s a policy on a busy machine
# (the gray node's queue takes a few seconds to drain after the load).
TINY = [
    "--warmup", "0.2", "--duration", "1", "--workers", "32",
    "--outage", "1", "--outage-lead", "0.5", "--recovery", "1", "--deadline", "2",
]  # fmt: skip


@pytest.mark.thread_unsafe(reason="starts local nodes on fixed ports and client threads of its own")
def test_a_tiny_run_reports_every_phase_for_round_robin_and_the_oracle(tmp_path):
    pytest.importorskip("openai")
    from gonka_pool._cli import bench_balance as _bench_balance

    out = tmp_path / "balance.json"
    lines: list[str] = []
    parser = _bench_balance.configure(argparse.ArgumentParser())
    args = parser.parse_args([*TINY, "--policies", "round_robin,oracle", "--json", str(out)])
    assert _bench_balance.execute(parser, args, out=lines.append) == 0

    result = json.loads(out.read_text())
    policies = result["policies"]
    assert list(policies) == ["oracle", "round_robin"]  # the oracle first, whatever the order asked
    for name, policy in policies.items():
        assert policy["available"], name
        healthy, gray, outage = (policy["phases"][phase] for phase in ("healthy", "gray", "outage"))
        for phase in (healthy, gray):
            assert phase["requests"] > 0 and phase["answered"] > 0
            assert phase["p50_ms"] <= phase["p99_ms"] <= phase["p999_ms"]
            assert len(phase["shares_pct"]) == 8 and sum(phase["shares_pct"]) == pytest.approx(100)
        assert 0 <= gray["slow_node_share_after_1s_pct"] <= 100
        # every node refuses connections: nothing is answered (but by a request of each thread
        # that began as the nodes came back), and nothing waits past its deadline
        assert outage["during"]["requests"] > 0 and outage["during"]["answered"] <= 4
        assert outage["during"]["max_latency_ms"] < 2000 + 500
        assert outage["first_1s"]["answers"] > 0 and 1 <= outage["first_1s"]["nodes_answering"] <= 8
    # the oracle never sends to a full node, so no node refuses it
    assert policies["oracle"]["phases"]["healthy"]["refusals"] == 0
    ratios = result["ratios_to_oracle"]["round_robin"]
    assert set(ratios) == {"healthy", "gray"} and all(ratios[p]["p99"] > 0 for p in ratios)
    assert any(line.lstrip().startswith("round_robin") for line in lines)
    assert any(line.lstrip().startswith("outage:") for line in lines)


@pytest.mark.parametrize(
    "argv",
    [
        ["--duration", "0"],
        ["--rate-fraction", "1.2"],
        ["--policies", "fastest"],
        ["--phases", "healthy,sunny"],
        ["--slots", "1,2"],
    ],
)
def test_bench_balance_refuses_a_bad_option_before_starting_anything(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main(["bench-balance", *argv])
    assert exited.value.code == 2
    assert argv[0] in capsys.readouterr().err
