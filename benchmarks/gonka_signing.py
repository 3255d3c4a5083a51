"""Signing cost: gonka_pool.gonka.Signer against gonka-openai's signer, in one run.

    PYTHONPATH=src python benchmarks/gonka_signing.py [--rounds 15] [--n 300]

Contenders, interleaved round by round (each round times ``n`` signatures of a
~300-byte chat body per contender, in turn), medians over the rounds:

- ``gonka-openai``: ``gonka_openai.utils.gonka_signature`` where gonka-openai is
  installed, else the same algorithm written out (a ``SigningKey`` from the hex key
  per call, ``sign_deterministic`` with SHA-256 and its low-S encoder), labelled
  ``gonka-openai (replica)``;
- ``Signer`` with coincurve (where installed) and with ecdsa.

Then thread scaling: the throughput of 2 threads (started on a Barrier) signing
with one shared coincurve ``Signer`` over that of 1 thread, best of the rounds'
medians; and, where httpx2 is installed, the transport's own cost per request
(pick, sign, rewrite, judge) against an in-memory inner transport, with and
without signing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import sys
import threading
import time

from gonka_pool.gonka import Signer

KEY = "0x" + "11" * 32
BODY = json.dumps(
    {
        "model": "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8",
        "messages": [{"role": "user", "content": "Write a haiku about distributed inference. " * 4}],
    }
).encode()
TRANSFER = "gonka1l3e9pgs3mmwuwrh95fecme0s0qtn2880el49wm"


def gonka_openai_signer():
    try:
        from gonka_openai.utils import gonka_signature
    except ImportError:
        pass
    else:
        logging.disable(logging.INFO)  # its import calls logging.basicConfig(level=INFO)
        return "gonka-openai", gonka_signature
    from ecdsa import SECP256k1, SigningKey

    def gonka_signature(body, private_key_hex, timestamp, transfer_address):
        # gonka-openai 0.2.6 utils.gonka_signature, step by step.
        clean = private_key_hex[2:] if private_key_hex.startswith("0x") else private_key_hex
        key = SigningKey.from_string(bytes.fromhex(clean), curve=SECP256k1)

        def encode_low_s(r, s, order):
            if s > order // 2:
                s = order - s
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        message = (hashlib.sha256(body).hexdigest() + str(timestamp) + transfer_address).encode()
        import base64

        return base64.b64encode(
            key.sign_deterministic(message, hashfunc=hashlib.sha256, sigencode=encode_low_s)
        ).decode()

    return "gonka-openai (replica)", gonka_signature


def time_per_call(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


def thread_throughput(signer: Signer, threads: int, n: int) -> float:
    """Signatures per second with ``threads`` threads each signing ``n``."""
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for i in range(n):
            signer.sign(BODY, i, TRANSFER)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return threads * n / (time.perf_counter() - start)


def transport_costs(signer: Signer, n: int, rounds: int) -> dict[str, float] | None:
    try:
        import httpx2

        from gonka_pool import EndpointPool, GonkaEndpoint
        from gonka_pool.gonka import GonkaPoolTransport
    except ImportError:
        return None
    pool = EndpointPool([GonkaEndpoint(f"https://node{i}.example/v1", TRANSFER) for i in range(3)])
    inner = httpx2.MockTransport(lambda request: httpx2.Response(200, content=b"{}"))
    clients = {
        "transport, unsigned": httpx2.Client(transport=GonkaPoolTransport(pool, transport=inner)),
        "transport + Signer": httpx2.Client(transport=GonkaPoolTransport(pool, transport=inner, on_request=signer)),
    }
    times: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        for name, client in clients.items():
            times[name].append(
                time_per_call(lambda i, c=client: c.post("http://gonka/chat/completions", content=BODY), n)
            )
    return {name: statistics.median(t[1:]) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"Python {sys.version.split()[0]}, GIL {'on' if gil else 'off'}; "
        f"{args.rounds} interleaved rounds of {args.n} signatures, medians"
    )

    label, reference = gonka_openai_signer()
    contenders = {label: lambda i: reference(BODY, KEY, i, TRANSFER)}
    signers = {}
    for backend in ("coincurve", "ecdsa"):
        try:
            signers[backend] = Signer(KEY, backend=backend)
        except ImportError:
            continue
        contenders[f"Signer ({backend})"] = lambda i, s=signers[backend]: s.sign(BODY, i, TRANSFER)
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up: imports, caches, the CPU's clock
        time_per_call(fn, args.n // 3 + 1)
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            results[name].append(time_per_call(fn, args.n))
    medians = {name: statistics.median(times) for name, times in results.items()}
    base = medians[label]
    for name, seconds in medians.items():
        print(f"  {name:28s} {seconds * 1e6:9.1f} us/signature   {base / seconds:6.1f}x")

    fast = signers.get("coincurve") or signers["ecdsa"]
    # Long enough per measurement (~0.1-0.3 s) that thread start-up and the CPU's
    # clock ramp do not decide; a warm-up first, then 1 and 2 threads alternate.
    per_thread = args.n * 10
    thread_throughput(fast, 2, per_thread)
    one, two = [], []
    for _ in range(args.rounds):
        one.append(thread_throughput(fast, 1, per_thread))
        two.append(thread_throughput(fast, 2, per_thread))
    scaling = statistics.median(two) / statistics.median(one)
    print(
        f"  threads, Signer ({fast.backend}): 1 thread {statistics.median(one):,.0f}/s, "
        f"2 threads {statistics.median(two):,.0f}/s: {scaling:.2f}x"
    )

    costs = transport_costs(fast, args.n, args.rounds)
    if costs is not None:
        for name, seconds in costs.items():
            print(f"  {name:28s} {seconds * 1e6:9.1f} us/request (in-memory inner transport)")
        print(f"  {label + ' signature':28s} {base * 1e6:9.1f} us (for comparison)")


if __name__ == "__main__":
    main()
