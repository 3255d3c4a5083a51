"""Regenerate gonka_vectors.json from gonka-openai, the network's own SDK (the oracle).

Run with an interpreter where gonka-openai installs (it needs a compiler-built
secp256k1, requests, protobuf and httpx; not a dependency of gonka-pool):

    python -m venv /tmp/oracle && /tmp/oracle/bin/pip install gonka-openai httpx
    /tmp/oracle/bin/python tests/data/make_gonka_vectors.py > tests/data/gonka_vectors.json

Keys and bodies come from a fixed seed, so the file only changes if the oracle does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from importlib.metadata import version

from gonka_openai.utils import gonka_address, gonka_signature

logging.disable(logging.CRITICAL)  # gonka_openai calls logging.basicConfig at import

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def main() -> None:
    rng = random.Random(12)
    keys = ["11" * 32, "0" * 63 + "1", format(N - 1, "064x")]
    keys += [format(rng.randrange(1, N), "064x") for _ in range(5)]
    bodies = [
        b"",
        b"{}",
        '{"model":"m","messages":[{"role":"user","content":"\u00e9\u4e2d"}]}'.encode(),
        bytes(rng.randrange(256) for _ in range(3000)),
    ]
    vectors = []
    for i in range(32):
        key = keys[i % len(keys)]
        body = bodies[i % len(bodies)]
        timestamp = rng.choice([1, 1_700_000_000_000_000_000 + rng.randrange(10**15)])
        transfer = rng.choice(["gonka1xyz", gonka_address(format(rng.randrange(1, N), "064x"))])
        vectors.append(
            {
                "private_key": ("0x" + key) if i % 2 else key,
                "address": gonka_address(key),
                "body_hex": body.hex(),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "timestamp_ns": timestamp,
                "transfer_address": transfer,
                "signature": gonka_signature(body, key, timestamp, transfer),
            }
        )
    print(
        json.dumps(
            {
                "generator": f"gonka-openai {version('gonka-openai')} gonka_signature / gonka_address",
                "vectors": vectors,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
