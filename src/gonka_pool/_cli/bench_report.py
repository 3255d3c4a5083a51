"""What ``python -m gonka_pool bench`` prints and draws from one run's result:
the text report, and the throughput plot (``--plot``, with matplotlib)."""

from __future__ import annotations

from typing import Any


def report(result: dict[str, Any]) -> str:
    info = result["interpreter"]
    lines = [
        (
            f"gonka_pool bench: Python {info['python']} "
            f"({'free-threaded' if info['free_threaded_build'] else 'GIL'} build), "
            f"GIL {'enabled' if info['gil_enabled'] else 'disabled'}, {info['cores']} cores, "
            f"{info['machine']}, implementation {info['gonka_pool']}, clock {info['clock']}"
        ),
        f"{result['nodes']} nodes, {result['rounds']} interleaved rounds, medians",
        "",
        "Single thread, all cases of a round on one thread: ns per call (median), and the",
        "median over rounds of the ratio to that round's next():",
    ]
    singles = result["single_thread_ns"]
    ratios = result["single_thread_ratio"]
    for name, ns in singles.items():
        lines.append(f"  {name:38s} {ns:8.1f} ns  {ratios[name]:6.2f}x")
    for name, ratio in result["weighted_next_ratio"].items():
        lines.append(f"  {name}, weighted / unweighted: {ratio:.2f}x")
    lines += [
        "",
        "Building a pool, one thread, the garbage collector paused: ms (median), and the",
        "median over rounds of the ratio to that round's unweighted build of the same size:",
    ]
    for name, ms in result["build_ms"].items():
        lines.append(f"  {name:44s} {ms:8.2f} ms  {result['build_ratio'][name]:6.2f}x")
    share = result["weighted_share"]
    lines.append(
        f"  share error, {share['nodes']} nodes, weights 1..10^6, {share['picks']:,} picks: "
        f"{share['error']:.2%} of picks (goal <= 1%); every node owed a pick got one: "
        f"{'yes' if share['every_node_picked'] else 'NO'} (fewest picks: {share['least_picks']})"
    )
    throughput = result["throughput"]
    ref_name = "gonka_pool (c)" if "gonka_pool (c)" in throughput else "gonka_pool (python)"
    ref = throughput[ref_name][1]
    threads = result["threads"]
    lines += ["", f"Aggregate calls/s by threads (ratio to {ref_name} next() on 1 thread):"]
    header = f"  {'implementation':44s}" + "".join(f"{t:>9d}T" for t in threads) + f"{'2T/1T':>9s}"
    lines.append(header)
    for name, by_threads in throughput.items():
        ratios = "".join(f"{by_threads[t] / ref:9.2f}x" for t in threads)
        scale = by_threads.get(2, float("nan")) / by_threads[1]
        lines.append(f"  {name:44s}{ratios}{scale:9.2f}")
    lines.append(
        "  (absolute, M calls/s) "
        + ", ".join(f"{name}: {by_threads[1] / 1e6:.1f}" for name, by_threads in throughput.items())
    )
    if result["core_loop"]:
        core = result["core_loop"]
        lines += ["", "C core alone (nogil loop, selections/s; ratio to 1 thread):"]
        lines.append("  " + "  ".join(f"{t}T {core[t] / 1e6:7.1f} M ({core[t] / core[1]:.2f}x)" for t in threads))
    lines.append("")
    lines.append(f"Scaling is bounded by the machine's {info['cores']} cores.")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = result["interpreter"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, by_threads in result["throughput"].items():
        ts = sorted(by_threads)
        ax.plot(ts, [by_threads[t] / 1e6 for t in ts], marker="o", label=name)
    ax.set_xlabel("threads")
    ax.set_ylabel("M calls/s (aggregate)")
    ax.set_title(f"Python {info['python']}, GIL {'on' if info['gil_enabled'] else 'off'}, {info['cores']} cores")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
