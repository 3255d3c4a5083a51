"""gonka_pool.gonka.GonkaOpenAI / AsyncGonkaOpenAI: gonka-openai 0.2.6's client as a
drop-in, against a local Gonka network whose nodes verify every signature.

gonka-openai itself is the oracle where it installs (3.11: its secp256k1 has no
cp313t wheel): its README's three GonkaOpenAI examples, read from the installed
package's own metadata, run first with gonka-openai and then with the one import
replaced, and must answer the same with the same signed requests.  Its
``python/test.py`` is not in its wheel or sdist: ``GONKA_OPENAI_TEST_PY=path``
runs it the same way, else that test is skipped.  Everything else runs on every
interpreter, on the C core or the twin as ``GONKA_POOL_NO_EXTENSIONS`` says.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

gonka = pytest.importorskip("gonka_pool.gonka", reason="the [gonka] extra is not installed")
pytest.importorskip("openai", reason="the openai SDK is not installed")
pytest.importorskip("httpx2", reason="httpx2 is not installed")
import httpx2  # noqa: E402

from gonka_pool import GonkaEndpoint  # noqa: E402
from gonka_pool.gonka import AsyncGonkaOpenAI, DiscoveryError, Endpoint, GonkaOpenAI, Signer, _proof, _sources  # noqa: E402
from gonka_pool.testing import LocalGonkaNetwork, free_port  # noqa: E402

pytestmark = pytest.mark.thread_unsafe(
    reason="the local Gonka network and the process environment are shared by the module's tests"
)

HAVE_GONKA_OPENAI = importlib.util.find_spec("gonka_openai") is not None
needs_oracle = pytest.mark.skipif(
    not HAVE_GONKA_OPENAI, reason="gonka-openai is not installed (its secp256k1 has no wheel for this interpreter)"
)
KEY = "0x" + "11" * 32
CHAT = [{"role": "user", "content": "hi"}]
ENV_NAMES = ("GONKA_PRIVATE_KEY", "GONKA_ADDRESS", "GONKA_ENDPOINTS", "GONKA_SOURCE_URL", "GONKA_VERIFY_PROOF")
SRC = str(Path(__file__).resolve().parent.parent / "src")


def address(i: int) -> str:
    return Signer(format(3000 + i, "064x"), backend="ecdsa").address


@pytest.fixture(scope="module")
def running_network():
    network = LocalGonkaNetwork()
    for i in range(3):
        network.add_node(f"n{i}", address(i), weight=10)
    delegate = network.add_node("d0", address(9), listed=False, delegate_for=address(0))
    network.start()
    yield network, delegate
    network.stop()


@pytest.fixture
def net(running_network, monkeypatch):
    network, _ = running_network
    network.allowlist = []
    network.participants_override = None
    network.public_keys.clear()
    network.register(Signer(KEY))
    for node in network.nodes:
        node.reset()
        node.at_capacity = False
        node.delegate_ta = None
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    # The local network runs on this machine: its tests allow private addresses
    # explicitly, as a user of a local network must (the gonka-openai programs
    # run unchanged, so through the environment).
    monkeypatch.setenv("GONKA_ALLOW_PRIVATE", "1")
    return network


def listed(network):
    return [node for node in network.nodes if node.listed]


def ask(client) -> str:
    return client.chat.completions.create(model="local", messages=CHAT).choices[0].message.content


def served(network) -> dict[str, int]:
    return {node.name: node.served for node in network.nodes if node.served}


# -- gonka-openai's programs, with gonka-openai as the oracle ------------------------------


def _readme_examples() -> list[str]:
    from importlib.metadata import metadata

    readme = metadata("gonka-openai").get_payload()  # type: ignore[attr-defined]
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    return [block for block in blocks if "GonkaOpenAI(" in block]


def _run(program: str, env: dict[str, str], cwd: Path) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    environment.update(env)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), SRC, environment.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", program], env=environment, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# What gonka-openai prints by itself at construction (this client prints nothing).
GONKA_OPENAI_PRINTS = ("base_url: ", "Request signing is enabled", "Using Gonka address: ")


def _without_its_prints(output: str) -> list[str]:
    return [line for line in output.splitlines() if not line.startswith(GONKA_OPENAI_PRINTS)]


def _signed_requests(network) -> list[tuple[str, str, bytes, frozenset[str]]]:
    """(node, requester, body, header names) of each request the nodes accepted."""
    seen = []
    for node in network.nodes:
        for headers, body in node.requests:
            seen.append((node.name, headers["x-requester-address"], body, frozenset(headers)))
    return sorted(seen)


def _oracle_then_ours(network, program: str, env: dict[str, str], tmp_path: Path):
    """Run ``program`` with gonka-openai, then with the one import replaced; each
    run's stdout and the requests the nodes accepted."""
    ours = program.replace("from gonka_openai import GonkaOpenAI", "from gonka_pool.gonka import GonkaOpenAI")
    assert ours != program
    runs = []
    for text in (program, ours):
        for node in network.nodes:
            node.reset()
        output = _run(text, env, tmp_path)
        runs.append((output, _signed_requests(network), [dict(n.statuses) for n in network.nodes]))
    return runs


def _same_node_names(network) -> None:
    # One answer whichever node serves: gonka-openai picks its node at random.
    for node in listed(network):
        node.name = "node"


@pytest.fixture
def same_names(net):
    names = [node.name for node in net.nodes]
    _same_node_names(net)
    yield net
    for node, name in zip(net.nodes, names, strict=True):
        node.name = name


@needs_oracle
def test_gonka_openais_readme_examples_run_unchanged_with_the_import_replaced(same_names, tmp_path):
    network = same_names
    # gonka-openai keeps only allowlisted nodes (an empty allowlist leaves it none).
    network.allowlist = [node.address for node in listed(network)]
    first, second = listed(network)[:2]
    examples = _readme_examples()
    assert len(examples) == 3  # source_url=, the environment, endpoints= with a strategy
    placeholders = {
        '"0x1234..."': repr(KEY),
        '"https://api.gonka.testnet.example.com"': repr(first.url),
        '"https://api2.gonka.testnet.example.com"': repr(second.url),
        '"gonka1transferaddress"': repr(first.address),
        '"gonka2transferaddress"': repr(second.address),
    }
    for number, example in enumerate(examples, 1):
        program = example
        for placeholder, value in placeholders.items():
            program = program.replace(placeholder, value)
        if number == 1:  # its source_url is a node's root
            program = program.replace(repr(first.url), repr(network.source_url))
        program += "\nprint(response.choices[0].message.content)\n"
        env = {"GONKA_PRIVATE_KEY": KEY, "GONKA_SOURCE_URL": network.source_url}
        (oracle, oracle_requests, oracle_statuses), (ours, our_requests, our_statuses) = _oracle_then_ours(
            network, program, env, tmp_path
        )
        assert _without_its_prints(oracle) == ours.splitlines() == ["hello from node"], number
        assert len(oracle_requests) == len(our_requests) == 1, number
        (oracle_node, oracle_requester, oracle_body, oracle_headers) = oracle_requests[0]
        (our_node, our_requester, our_body, our_headers) = our_requests[0]
        # The same request, signed by the same account; each node verified its
        # signature for its own address and answered 200.
        assert our_requester == oracle_requester == Signer(KEY).address, number
        assert our_body == oracle_body, number
        assert our_headers == oracle_headers, number
        assert {200} == {s for statuses in our_statuses for s in statuses}
        assert {200} == {s for statuses in oracle_statuses for s in statuses}
        if number == 3:  # first_endpoint_strategy: both send to the first endpoint
            assert oracle_node == our_node == "node" and first.served == 1


@needs_oracle
@pytest.mark.skipif(not os.environ.get("GONKA_OPENAI_TEST_PY"), reason="set GONKA_OPENAI_TEST_PY to its python/test.py")
def test_gonka_openais_test_py_runs_unchanged_with_the_import_replaced(same_names, tmp_path):
    network = same_names
    network.allowlist = [node.address for node in listed(network)]  # gonka-openai needs one
    script = Path(os.environ["GONKA_OPENAI_TEST_PY"]).read_text()
    # test.py imports the package as `src` (its repository's layout): a shim
    # package stands in, whose GonkaOpenAI is the one under test.
    for name, source in {
        "oracle": "from gonka_openai import *\nfrom gonka_openai import GonkaOpenAI\n",
        "ours": "from gonka_openai import *\nfrom gonka_pool.gonka import GonkaOpenAI\n",
    }.items():
        shim = tmp_path / name / "src"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text(source)
        (shim / "utils.py").write_text("from gonka_openai.utils import *\n")
    env = {"GONKA_PRIVATE_KEY": KEY, "GONKA_SOURCE_URL": network.source_url}  # its real-requests mode
    outputs, requests = [], []
    for name in ("oracle", "ours"):
        for each in network.nodes:
            each.reset()
        outputs.append(_run(script, env, tmp_path / name))
        requests.append(_signed_requests(network))
    assert _without_its_prints(outputs[0]) == outputs[1].splitlines()
    assert outputs[1].count("hello from node") == 2  # its two examples, real requests
    assert [r[1:] for r in requests[0]] == [r[1:] for r in requests[1]]


@needs_oracle
def test_gonka_openai_prints_and_configures_logging_and_this_client_does_neither(net, tmp_path):
    entry = listed(net)[0].url + ";" + listed(net)[0].address
    program = textwrap.dedent(
        f"""
        import logging
        from gonka_pool.gonka import GonkaOpenAI
        client = GonkaOpenAI(gonka_private_key={KEY!r}, endpoints=[{entry!r}])
        print(logging.getLogger().handlers)
        import gonka_openai
        print(bool(logging.getLogger().handlers))
        """
    )
    assert _run(program, {}, tmp_path).splitlines() == ["[]", "True"]


# -- the constructor: gonka-openai's arguments and variables --------------------------------


def test_the_nodes_come_from_endpoints_then_gonka_endpoints_then_source_url_then_gonka_source_url(net, monkeypatch):
    n0, n1, n2 = listed(net)
    monkeypatch.setenv("GONKA_PRIVATE_KEY", KEY)
    monkeypatch.setenv("GONKA_SOURCE_URL", f"http://127.0.0.1:{free_port()}")  # read last, if at all
    monkeypatch.setenv("GONKA_ENDPOINTS", f"{n1.url};{n1.address}")
    client = GonkaOpenAI(endpoints=[Endpoint(url=n0.url, address=n0.address)], source_url=net.source_url)
    assert client.gonka_pool.endpoints == (GonkaEndpoint(n0.url, n0.address),) and ask(client) == "hello from n0"
    client = GonkaOpenAI(source_url=net.source_url)  # GONKA_ENDPOINTS before source_url=
    assert ask(client) == "hello from n1" and client.gonka_refresher is None
    monkeypatch.delenv("GONKA_ENDPOINTS")
    client = GonkaOpenAI(source_url=net.source_url, refresh_interval=None)
    assert len(client.gonka_pool) == 3
    with pytest.raises(DiscoveryError):  # now GONKA_SOURCE_URL, which nothing answers
        GonkaOpenAI()
    monkeypatch.delenv("GONKA_SOURCE_URL")
    with pytest.raises(ValueError, match="gonka-openai's order"):
        GonkaOpenAI()
    monkeypatch.delenv("GONKA_PRIVATE_KEY")
    with pytest.raises(ValueError, match="GONKA_PRIVATE_KEY"):
        GonkaOpenAI(endpoints=[f"{n2.url};{n2.address}"])


def test_endpoints_are_gonka_openai_endpoints_or_anything_with_url_and_address(net):
    n0, n1, n2 = listed(net)

    class Node:  # a user's own type
        def __init__(self, url, address):
            self.url, self.address = url, address

    endpoints = [Endpoint(url=n0.url, address=n0.address), Node(n1.url, n1.address), f"{n2.url};{n2.address}"]
    client = GonkaOpenAI(gonka_private_key=KEY, endpoints=[*endpoints, GonkaEndpoint(n0.url, n0.address)])
    assert client.gonka_pool.endpoints[:3] == tuple(GonkaEndpoint(n.url, n.address) for n in (n0, n1, n2))
    with pytest.raises(TypeError, match="url and address"):
        GonkaOpenAI(gonka_private_key=KEY, endpoints=[object()])
    assert Endpoint.parse(f" {n0.url} ; {n0.address} ") == Endpoint(url=n0.url, address=n0.address)


def test_gonka_address_is_sent_as_the_requester_and_the_private_key_is_never_exposed(net, monkeypatch):
    grantee = address(7)
    net.register(Signer(KEY, requester_address=grantee))
    n0 = listed(net)[0]
    client = GonkaOpenAI(gonka_private_key=KEY, gonka_address=grantee, endpoints=[f"{n0.url};{n0.address}"])
    assert client.gonka_address == grantee and ask(client) == "hello from n0"
    assert n0.requests[-1][0]["x-requester-address"] == grantee
    monkeypatch.setenv("GONKA_ADDRESS", grantee)
    assert GonkaOpenAI(gonka_private_key=KEY, endpoints=[f"{n0.url};{n0.address}"]).gonka_address == grantee
    with pytest.raises(AttributeError, match="never exposes the private key"):
        client.private_key  # noqa: B018 - gonka-openai's property
    secret = KEY[2:]
    assert secret not in repr(vars(client)) and secret not in repr(client._gonka_network.__dict__)
    assert str(client.base_url).startswith("http://gonka")


def test_the_strategy_chooses_each_requests_first_node_and_failover_continues_over_the_others(net):
    n0, n1, n2 = listed(net)
    shown = []

    def last_endpoint(endpoints):
        shown.append([e.url for e in endpoints])
        return endpoints[-1]

    endpoints = [Endpoint(url=n.url, address=n.address) for n in (n0, n1, n2)]
    client = GonkaOpenAI(gonka_private_key=KEY, endpoints=endpoints, endpoint_selection_strategy=last_endpoint)
    assert [ask(client) for _ in range(3)] == ["hello from n2"] * 3
    n2.at_capacity = True  # refused for load: the request fails over, n2 rests a moment
    assert ask(client) in ("hello from n0", "hello from n1")
    assert n2.statuses[429] == 1
    # While n2 rests, the strategy is shown the others, and its choice goes first.
    assert ask(client) == "hello from n1" and shown[-1] == [n0.url, n1.url]
    assert shown[0] == [n0.url, n1.url, n2.url]


def test_a_strategy_over_discovered_nodes_is_shown_gonka_openai_endpoints(net):
    def first(endpoints):
        assert all(type(e) is Endpoint for e in endpoints)
        return Endpoint(url=endpoints[1].url, address=endpoints[1].address)  # an equal copy will do

    client = GonkaOpenAI(
        gonka_private_key=KEY, source_url=net.source_url, endpoint_selection_strategy=first, refresh_interval=None
    )
    assert ask(client) == "hello from n1"


# -- delegate transfer agents, sources, proofs -------------------------------------------------


def test_each_participant_is_sent_to_its_delegate_signed_for_the_participants_address(
    net, running_network, monkeypatch
):
    _, delegate = running_network
    n0, n1, _ = listed(net)
    n0.delegate_ta = {delegate.root_url: delegate.address}  # no /v1: it is added
    n1.delegate_ta = {}
    client = GonkaOpenAI(gonka_private_key=KEY, source_url=net.source_url, pool_options={"weights": [1, 1, 1]})
    try:
        assert client.gonka_delegates == {GonkaEndpoint(n0.url, n0.address): GonkaEndpoint(delegate.url, n0.address)}
        answers = {ask(client) for _ in range(6)}
        assert answers == {"hello from d0", "hello from n1", "hello from n2"} and n0.served == 0
        assert {s for s in delegate.statuses} == {200}  # it verified signatures made for n0
        n0.delegate_ta = None  # the next refresh asks again
        assert client.gonka_refresher.refresh_now() and client.gonka_delegates == {}
    finally:
        client.gonka_refresher.close()
    # GONKA_ENDPOINTS' nodes are asked too (as gonka-openai asks its chosen one) ...
    n0.delegate_ta = {delegate.root_url: delegate.address}
    monkeypatch.setenv("GONKA_ENDPOINTS", f"{n0.url};{n0.address}")
    assert ask(GonkaOpenAI(gonka_private_key=KEY)) == "hello from d0"
    monkeypatch.delenv("GONKA_ENDPOINTS")
    # ... but not nodes given as endpoints=.
    assert ask(GonkaOpenAI(gonka_private_key=KEY, endpoints=[f"{n0.url};{n0.address}"])) == "hello from n0"


def test_a_public_node_cannot_name_a_delegate_on_this_machine_or_a_private_network(monkeypatch, caplog):
    answers = {
        "https://node.example/v1/identity": {
            "data": {
                "delegate_ta": {"http://10.0.0.5:8000": "gonka1x", "https://ta.example": "gonka1y", "ftp://x": "z"}
            }
        }
    }
    monkeypatch.setattr(_sources, "_get_json", lambda url, timeout: answers[url])
    public = GonkaEndpoint("https://node.example/v1", "gonka1node")
    with caplog.at_level(logging.WARNING, logger="gonka_pool"):
        found = _sources.delegates_of(public)
    assert found == [GonkaEndpoint("https://ta.example/v1", "gonka1node")]
    assert "private network" in caplog.text and "10.0.0.5" in caplog.text


def test_discovered_nodes_and_delegates_on_this_machine_are_refused_unless_private_addresses_are_allowed(
    net, monkeypatch
):
    monkeypatch.delenv("GONKA_ALLOW_PRIVATE")
    with pytest.raises(DiscoveryError, match="no usable participant"):
        GonkaOpenAI(gonka_private_key=KEY, source_url=net.source_url, refresh_interval=None)
    client = GonkaOpenAI(gonka_private_key=KEY, source_url=net.source_url, refresh_interval=None, allow_private=True)
    assert ask(client).startswith("hello from n")
    # Nodes the user names are the user's choice; a delegate their node names is not.
    n0, delegate = net.nodes[0], net.nodes[3]
    n0.delegate_ta = {delegate.root_url: delegate.address}
    monkeypatch.setenv("GONKA_ENDPOINTS", f"{n0.url};{n0.address}")
    named = GonkaOpenAI(gonka_private_key=KEY)
    assert named.gonka_delegates == {}
    assert ask(named) == "hello from n0"


def test_an_empty_allowlist_restricts_nothing_and_a_full_one_keeps_its_nodes(net):
    client = GonkaOpenAI(gonka_private_key=KEY, source_url=net.source_url, refresh_interval=None)
    assert len(client.gonka_pool) == 3
    net.allowlist = [listed(net)[1].address]
    client = GonkaOpenAI(gonka_private_key=KEY, source_url=net.source_url, refresh_interval=None)
    assert ask(client) == "hello from n1" and len(client.gonka_pool) == 1


def test_a_file_source_is_read_once_with_its_nodes_on_this_machine(net, tmp_path, monkeypatch):
    answer = tmp_path / "participants.json"
    answer.write_text(json.dumps(net.participants_payload()))
    monkeypatch.chdir(tmp_path)
    for source in (f"file://{answer}", "file://participants.json"):  # absolute, or relative to the directory
        client = GonkaOpenAI(gonka_private_key=KEY, source_url=source)
        assert len(client.gonka_pool) == 3 and client.gonka_refresher is None
        assert ask(client).startswith("hello from n")
    with pytest.raises(DiscoveryError, match="cannot read"):
        GonkaOpenAI(gonka_private_key=KEY, source_url="file://missing.json")


# ICS23 proofs built here byte by byte: protobuf's wire format, IAVL's leaf shape.
def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _leaf(prefix: bytes, hash_op: int = 1, prehash_value: int = 1) -> bytes:
    return _field(1, hash_op) + _field(3, prehash_value) + _field(4, 1) + _field(5, prefix)


def _root(key: bytes, value: bytes, prefix: bytes, path: list[tuple[bytes, bytes]]) -> bytes:
    hashed = hashlib.sha256(value).digest()
    node = hashlib.sha256(prefix + _varint(len(key)) + key + _varint(len(hashed)) + hashed).digest()
    for before, after in path:
        node = hashlib.sha256(before + node + after).digest()
    return node


def _existence(key: bytes, value: bytes, prefix: bytes, path: list[tuple[bytes, bytes]], **leaf) -> bytes:
    inner = b"".join(_field(4, _field(1, 1) + _field(2, before) + _field(3, after)) for before, after in path)
    proof = _field(1, key) + _field(2, value) + _field(3, _leaf(prefix, **leaf)) + inner
    return _field(1, proof)  # CommitmentProof.exist


def proven_payload(network, **tamper) -> dict:
    payload = json.loads(json.dumps(network.participants_payload()))
    value = tamper.get("value", b"\x0a\x05epoch" + bytes(range(40)))
    store_key, store_prefix, store_path = (
        b"ActiveParticipants/current",
        b"\x00\x02\x04",
        [(b"\x02\x04\x06", b"\x20" * 33)],
    )
    store_root = _root(store_key, value, store_prefix, store_path)
    app_key, app_prefix, app_path = b"inference", b"\x00", [(b"\x01" + b"\x55" * 32, b"")]
    app_hash = _root(app_key, store_root, app_prefix, app_path)
    iavl = _existence(store_key, value, store_prefix, store_path, **tamper.get("leaf", {}))
    simple = _existence(app_key, store_root, app_prefix, app_path)
    ops = [
        {
            "type": tamper.get("iavl_type", "ics23:iavl"),
            "key": base64.b64encode(store_key).decode(),
            "data": base64.b64encode(iavl).decode(),
        },
        {"type": "ics23:simple", "key": base64.b64encode(app_key).decode(), "data": base64.b64encode(simple).decode()},
    ][: tamper.get("ops", 2)]
    payload["active_participants_bytes"] = tamper.get("bytes", value).hex()
    payload["proof_ops"] = {"ops": ops}
    payload["block"] = {"header": {"app_hash": tamper.get("app_hash", app_hash).hex().upper()}}
    return payload


PROOF_CASES = {
    "valid": {},
    "other participants bytes": {"bytes": b"\x0a\x05other"},
    "another app hash": {"app_hash": b"\x01" * 32},
    "one op": {"ops": 1},
    "ops swapped": {"iavl_type": "ics23:simple"},
    "sha512 leaf": {"leaf": {"hash_op": 2}},
    "raw value leaf": {"leaf": {"prehash_value": 0}},
}


@pytest.mark.parametrize("case", sorted(PROOF_CASES))
def test_gonka_verify_proof_accepts_exactly_the_proofs_that_hash_up_to_the_app_hash(net, case):
    payload = proven_payload(net, **PROOF_CASES[case])
    if case == "valid":
        _proof.verify_participants_proof(payload)
    else:
        with pytest.raises(_proof.ProofError):
            _proof.verify_participants_proof(payload)


@needs_oracle
@pytest.mark.parametrize("case", sorted(PROOF_CASES))
def test_gonka_verify_proof_judges_each_proof_as_gonka_openai_does(net, case, monkeypatch):
    oracle = pytest.importorskip("gonka_openai.get_participants_with_proof")
    payload = proven_payload(net, **PROOF_CASES[case])
    monkeypatch.setenv("GONKA_VERIFY_PROOF", "1")
    try:
        theirs = [(e.url, e.address) for e in oracle._process_payload(payload)]
    except RuntimeError as exc:
        theirs = str(exc)
    try:
        _proof.verify_participants_proof(payload)
        ours = [(p.endpoint.base_url, p.endpoint.address) for p in _sources.participants_in(payload, "x", True)[0]]
    except _proof.ProofError as exc:
        ours = str(exc)
    assert ours == theirs


def test_a_client_with_gonka_verify_proof_discovers_only_from_a_proven_answer(net, monkeypatch, tmp_path):
    monkeypatch.setenv("GONKA_VERIFY_PROOF", "1")
    with pytest.raises(_proof.ProofError):  # the local network sends no proof
        GonkaOpenAI(gonka_private_key=KEY, source_url=net.source_url)
    net.participants_override = proven_payload(net)
    client = GonkaOpenAI(gonka_private_key=KEY, source_url=net.source_url)
    try:
        assert len(client.gonka_pool) == 3 and client.gonka_refresher.verify_proof
        net.participants_override = proven_payload(net, app_hash=b"\x02" * 32)
        assert not client.gonka_refresher.refresh_now()  # a refresh checks it too, keeps the nodes
        assert len(client.gonka_pool) == 3
    finally:
        client.gonka_refresher.close()
    answer = tmp_path / "proven.json"
    answer.write_text(json.dumps(proven_payload(net)))
    assert ask(GonkaOpenAI(gonka_private_key=KEY, source_url=f"file://{answer}")).startswith("hello from n")


# -- the SDK's side: http_client=, copies, every argument, async --------------------------------


def test_a_callers_http_client_is_wrapped_and_keeps_its_own_settings(net):
    n0, n1, _ = listed(net)
    endpoints = [Endpoint(url=n.url, address=n.address) for n in (n0, n1)]
    n0.at_capacity = True
    for library_name in ("httpx2", "httpx"):
        library = pytest.importorskip(library_name)
        for node in net.nodes:
            node.reset()
        mine = library.Client(headers={"X-Team": "search"}, timeout=7.0)
        client = GonkaOpenAI(gonka_private_key=KEY, endpoints=endpoints, http_client=mine, pool_options={"start": 0})
        assert client._client is mine  # wrapped, not replaced
        assert ask(client) == "hello from n1"  # failed over from n0's 429
        assert n1.requests[-1][0]["x-team"] == "search" and n0.statuses == {429: 1}
        assert mine.get(n1.root_url + "/v1/epochs/current/participants").status_code == 200  # other URLs as before
        with pytest.raises(ValueError, match="another Gonka client"):
            GonkaOpenAI(gonka_private_key=KEY, endpoints=endpoints, http_client=mine)
        mine.close()


def test_with_options_and_copy_keep_the_pool_and_the_signer(net):
    n0 = listed(net)[0]
    client = GonkaOpenAI(gonka_private_key=KEY, endpoints=[f"{n0.url};{n0.address}"], deadline=30.0)
    for copy in (client.with_options(timeout=5.0, max_retries=1), client.copy(default_headers={"X-A": "1"})):
        assert type(copy) is GonkaOpenAI and copy.gonka_pool is client.gonka_pool
        assert copy._client is client._client and copy.gonka_address == client.gonka_address
        assert ask(copy) == "hello from n0"
    assert n0.requests[-1][0]["x-a"] == "1"
    fresh = httpx2.Client()
    third = client.with_options(http_client=fresh)  # a new client of the caller's, wrapped too
    assert third._client is fresh and ask(third) == "hello from n0"
    with pytest.raises(TypeError, match="placeholder origin"):
        client.with_options(base_url="https://api.openai.com/v1")


def test_every_openai_argument_is_taken(net):
    n0 = listed(net)[0]
    client = GonkaOpenAI(
        gonka_private_key=KEY,
        endpoints=[f"{n0.url};{n0.address}"],
        api_key="sk-mine",
        organization="org-1",
        project="proj-1",
        timeout=20.0,
        max_retries=2,
        default_headers={"X-B": "2"},
        default_query={"q": "1"},
        base_url="http://gonka",
    )
    assert (client.api_key, client.organization, client.project, client.max_retries) == (
        "sk-mine",
        "org-1",
        "proj-1",
        2,
    )
    assert ask(client) == "hello from n0"
    headers = n0.requests[-1][0]
    assert (headers["openai-organization"], headers["x-b"]) == ("org-1", "2")
    assert GonkaOpenAI(gonka_private_key=KEY, endpoints=[f"{n0.url};{n0.address}"]).max_retries == 0


def test_async_gonka_openai_signs_fails_over_and_copies(net):
    n0, n1, _ = listed(net)
    n0.at_capacity = True
    client = AsyncGonkaOpenAI(
        gonka_private_key=KEY,
        endpoints=[Endpoint(url=n.url, address=n.address) for n in (n0, n1)],
        endpoint_selection_strategy=lambda endpoints: endpoints[0],
    )

    async def main():
        async with client:
            first = await client.chat.completions.create(model="local", messages=CHAT)
            second = await client.with_options(timeout=9.0).chat.completions.create(model="local", messages=CHAT)
        return first.choices[0].message.content, second.choices[0].message.content

    assert asyncio.run(main()) == ("hello from n1", "hello from n1")
    assert n0.statuses == {429: 1}
