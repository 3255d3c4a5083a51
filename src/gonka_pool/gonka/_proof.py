"""The ICS23 proof of a participants answer, checked as gonka-openai 0.2.6 checks
it when ``GONKA_VERIFY_PROOF=1`` (its ``get_participants_with_proof``).

The answer carries ``active_participants_bytes`` (hex), two proof ops and the
block's ``app_hash``.  The first op (``ics23:iavl``) proves that the module store
holds those bytes under the op's key; the second (``ics23:simple``) proves that the
multistore holds that store's root under its key, and must hash to ``app_hash``.
Only the shapes gonka-openai supports are accepted: existence proofs, SHA-256 or
no hashing, no length prefix or a protobuf varint one; anything else is refused.

What this does not establish, exactly as in gonka-openai: ``app_hash`` is read from
the same answer (no light client checks it against the validators' signatures),
and the participants used are the answer's JSON list, which is not compared with
the proven bytes.  A source that lies consistently is not caught; a proof that
does not hash up is.

The three protobuf messages read here (``CommitmentProof``, ``ExistenceProof``,
``LeafOp`` / ``InnerOp`` of cosmos/ics23/v1/proofs.proto) are decoded by hand,
with protobuf's own rules (a repeated message field merges, the last member of a
oneof wins), so that no protobuf runtime is needed: it has no wheel for
free-threaded 3.13t.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from ._discovery import DiscoveryError

# cosmos.ics23.v1 enum values: HashOp and LengthOp.
NO_HASH, SHA256 = 0, 1
NO_PREFIX, VAR_PROTO = 0, 1
IAVL_OP, SIMPLE_OP = "ics23:iavl", "ics23:simple"
# Names under which an answer may hold its proof ops (gonka-openai's search order).
_OPS_KEYS = ("ops", "Ops", "proof_ops", "proofOps", "ProofOps")


class ProofError(DiscoveryError):
    """The participants answer's proof is missing, malformed or does not hold."""


# -- protobuf wire format -----------------------------------------------------------------


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if at >= len(data):
            break
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise ProofError("malformed protobuf in the proof: a varint runs off the end")


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """``(field number, value)`` in order: an int for varints, bytes for
    length-delimited fields; fixed-width fields are skipped (none is read)."""
    fields: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, at = _varint(data, at)
            fields.append((number, value))
        elif wire == 2:
            length, at = _varint(data, at)
            if at + length > len(data):
                raise ProofError("malformed protobuf in the proof: a field runs off the end")
            fields.append((number, data[at : at + length]))
            at += length
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
            if at > len(data):
                raise ProofError("malformed protobuf in the proof: a field runs off the end")
        else:
            raise ProofError(f"malformed protobuf in the proof: wire type {wire}")
    return fields


def _message(
    data: bytes, scalars: dict[int, str], messages: dict[int, str], repeated: dict[int, str]
) -> dict[str, Any]:
    """A message as protobuf decodes it: the last value of a scalar field wins,
    the occurrences of a message field merge (their bytes concatenated), a
    repeated field keeps every occurrence."""
    message: dict[str, Any] = {name: b"" for name in messages.values()}
    message.update({name: [] for name in repeated.values()})
    for number, value in _fields(data):
        if number in scalars:
            message[scalars[number]] = value
        elif number in messages and isinstance(value, bytes):
            message[messages[number]] += value
        elif number in repeated and isinstance(value, bytes):
            message[repeated[number]].append(value)
    return message


def _enum(message: dict[str, Any], name: str) -> int:
    value = message.get(name, 0)
    if not isinstance(value, int):
        raise ProofError(f"malformed protobuf in the proof: {name} is not a varint")
    return value


def _bytes(message: dict[str, Any], name: str) -> bytes:
    value = message.get(name, b"")
    if not isinstance(value, bytes):
        raise ProofError(f"malformed protobuf in the proof: {name} is not bytes")
    return value


def _existence(commitment: bytes) -> dict[str, Any]:
    """The ``ExistenceProof`` of a ``CommitmentProof``; any other case is refused."""
    case, exist = None, b""
    for number, value in _fields(commitment):
        if number in (1, 2, 3, 4):
            if number != case:  # a oneof: setting another member clears the one before
                case, exist = number, b""
            if isinstance(value, bytes):
                exist += value
    if case != 1:
        names = {None: "None", 2: "nonexist", 3: "batch", 4: "compressed"}
        raise ProofError(f"unsupported commitment proof type: {names.get(case, case)}")
    proof = _message(exist, {1: "key", 2: "value"}, {3: "leaf"}, {4: "path"})
    for name in ("key", "value"):
        proof[name] = _bytes(proof, name)
    return proof


def _hash(op: int, data: bytes) -> bytes:
    if op == SHA256:
        return hashlib.sha256(data).digest()
    if op == NO_HASH:
        return data
    raise ProofError(f"unsupported hash op: {op}")


def _length_prefix(op: int, data: bytes) -> bytes:
    if op == NO_PREFIX:
        return b""
    if op == VAR_PROTO:
        size, out = len(data), bytearray()
        while size > 0x7F:
            out.append(size & 0x7F | 0x80)
            size >>= 7
        out.append(size)
        return bytes(out)
    raise ProofError(f"unsupported length op: {op}")


def _root(proof: dict[str, Any]) -> bytes:
    """The root an existence proof hashes up to: its leaf op, then each inner op."""
    leaf = _message(proof["leaf"], {1: "hash", 2: "prehash_key", 3: "prehash_value", 4: "length", 5: "prefix"}, {}, {})
    prehash_key, prehash_value = _enum(leaf, "prehash_key"), _enum(leaf, "prehash_value")
    if prehash_key not in (NO_HASH, SHA256):
        raise ProofError(f"unsupported prehash_key: {prehash_key}")
    if prehash_value not in (NO_HASH, SHA256):
        raise ProofError(f"unsupported prehash_value: {prehash_value}")
    key, value = _hash(prehash_key, proof["key"]), _hash(prehash_value, proof["value"])
    length = _enum(leaf, "length")
    node = _hash(
        _enum(leaf, "hash"),
        _bytes(leaf, "prefix") + _length_prefix(length, key) + key + _length_prefix(length, value) + value,
    )
    for raw in proof["path"]:
        inner = _message(raw, {1: "hash", 2: "prefix", 3: "suffix"}, {}, {})
        node = _hash(_enum(inner, "hash"), _bytes(inner, "prefix") + node + _bytes(inner, "suffix"))
    return node


# -- the answer's JSON ----------------------------------------------------------------------


def _is_op(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    keys = {str(k).lower() for k in entry}
    return "type" in keys and "data" in keys


def _find_ops(node: object) -> list[Any]:
    """The first list of proof ops under ``node``, searched as gonka-openai does."""
    if isinstance(node, list):
        if node and all(isinstance(e, dict) for e in node) and any(_is_op(e) for e in node):
            return node
        for entry in node:
            found = _find_ops(entry)
            if found:
                return found
    elif isinstance(node, dict):
        for key in _OPS_KEYS:
            value = node.get(key)
            if isinstance(value, list) and value and any(_is_op(e) for e in value):
                return value
        for value in node.values():
            found = _find_ops(value)
            if found:
                return found
    return []


def _op_bytes(value: object, what: str) -> bytes:
    if value is None or value == "":
        return b""
    if isinstance(value, str):  # CometBFT's JSON: base64
        try:
            return base64.b64decode(value)
        except (binascii.Error, ValueError):
            raise ProofError(f"proof op {what} is not base64") from None
    raise ProofError(f"proof op {what} is not a base64 string")


def _ops(payload: dict[str, Any]) -> list[tuple[str, bytes, bytes]]:
    source = payload.get("proof_ops") or payload.get("proofOps") or payload.get("ProofOps") or {}
    found = _find_ops(source) or _find_ops(payload)
    ops = []
    for op in found:
        kind = op.get("type") if "type" in op else op.get("Type", "")
        key = op.get("key") if "key" in op else op.get("Key", "")
        data = op.get("data") if "data" in op else op.get("Data", "")
        ops.append((kind if isinstance(kind, str) else "", _op_bytes(key, "key"), _op_bytes(data, "data")))
    return ops


def _app_hash(block: object) -> bytes:
    """The block's ``app_hash`` (hex, else base64; under ``header`` too, or in a
    list of blocks); empty when there is none."""
    if isinstance(block, list):
        for entry in block:
            if isinstance(entry, dict):
                found = _app_hash(entry)
                if found:
                    return found
        return b""
    if not isinstance(block, dict):
        return b""
    value = block.get("app_hash")
    if value is None and isinstance(block.get("header"), dict):
        value = block["header"].get("app_hash")
    if not isinstance(value, str) or not value.strip():
        return b""
    text = value.strip()
    if len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError):
        return b""


def verify_participants_proof(payload: object) -> None:
    """Raise ``ProofError`` unless ``payload`` (a participants answer) proves its
    ``active_participants_bytes`` under its own ``app_hash`` (see the module)."""
    if not isinstance(payload, dict):
        raise ProofError("the participants answer is not a JSON object")
    try:
        _verify(payload)
    except RecursionError:
        raise ProofError("the participants answer nests too deeply to search for its proof") from None


def _verify(payload: dict[str, Any]) -> None:
    hex_bytes = payload.get("active_participants_bytes") or ""
    try:
        value = binascii.unhexlify(hex_bytes) if isinstance(hex_bytes, str) else None
    except (binascii.Error, ValueError):
        value = None
    if value is None:
        raise ProofError("active_participants_bytes is not hex")
    app_hash = _app_hash(payload.get("block"))
    if not app_hash:
        raise ProofError("invalid app hash in proof")
    ops = _ops(payload)
    if len(ops) != 2:
        raise ProofError(f"expected 2 proof ops, got {len(ops)}")
    (iavl_type, iavl_key, iavl_data), (simple_type, simple_key, simple_data) = ops
    if iavl_type != IAVL_OP:
        raise ProofError(f"unexpected first proof op type: {iavl_type[:64]}")
    if not iavl_data:
        raise ProofError("IAVL proof op has empty data")
    iavl = _existence(iavl_data)
    if iavl["key"] != iavl_key:
        raise ProofError("IAVL proof key mismatch")
    if iavl["value"] != value:
        raise ProofError("IAVL proof value mismatch")
    store_root = _root(iavl)
    if simple_type != SIMPLE_OP:
        raise ProofError(f"unexpected second proof op type: {simple_type[:64]}")
    if not simple_data:
        raise ProofError("simple proof op has empty data")
    simple = _existence(simple_data)
    if simple["key"] != simple_key:
        raise ProofError("simple proof key mismatch")
    if simple["value"] != store_root:
        raise ProofError("simple proof value (store root) mismatch")
    if _root(simple) != app_hash:
        raise ProofError("simple proof does not match app hash")
