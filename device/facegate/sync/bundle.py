"""The signed gallery bundle: building it (admin) and checking it (door). Format in docs/sync.md.

Layout, all integers big-endian::

    offset  size  field
    0       6     magic  b"FGSYNC"
    6       2     format version (1)
    8       8     key id: first 8 bytes of SHA-256 of the signer's raw Ed25519 public key
    16      4     header length H   (at most 64 KiB)
    20      8     payload length P
    28      H     header: UTF-8 JSON object (counts, versions, embedder, payload digest)
    28+H    P     payload: zlib-compressed UTF-8 JSON (persons, templates, policies, deletions)
    28+H+P  64    Ed25519 signature over bytes [0, 28+H+P)

Why this shape: a door must authenticate before it parses anything an attacker could have written, so the
only things read before the signature check are the fixed 28-byte prefix (to find the signature and pick
the key) and the total length (to refuse an oversized input without touching it). The prefix is itself
signed, so a swapped key id or length fails verification too. JSON keeps the bundle readable with standard
tools; zlib keeps it to about the size of the raw float32 templates (base64 text compresses back to ~6
bits a character). Every check raises :class:`BundleError` with a stable ``reason`` that is reported in the
``gallery_rejected`` event; nothing else escapes :func:`verify_bundle` (a hypothesis fuzz test holds it to that).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeGuard, get_args

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facegate.access.policy import PolicyError, parse_schedule
from facegate.errors import FacegateError
from facegate.gallery.store import MAX_CARD_NUMBER
from facegate.sync.keys import key_id

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAGIC",
    "REASONS",
    "Bundle",
    "BundleError",
    "BundleHeader",
    "PersonRecord",
    "PolicyRecord",
    "TemplateRecord",
    "build_bundle",
    "bundle_sha256",
    "peek_header",
    "verify_bundle",
]

MAGIC = b"FGSYNC"
FORMAT = "facegate-gallery-bundle"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">6sH8sIQ")
PREFIX_BYTES = _PREFIX.size  # 28
SIGNATURE_BYTES = 64
MAX_HEADER_BYTES = 64 * 1024
#: Decompressed payload may be at most this many times ``max_bundle_bytes`` (a zip-bomb guard, after the
#: signature check: only a trusted key could make one, but a bug in an admin tool should not take a door down).
MAX_EXPANSION = 4
MAX_DIM = 4096

Reason = Literal[
    "too_large", "truncated", "malformed", "unknown_format", "unknown_key", "bad_signature", "corrupt",
    "embedder_mismatch", "rollback", "base_mismatch", "apply_failed", "bad_template",
]
REASONS: frozenset[str] = frozenset(get_args(Reason))


class BundleError(FacegateError):
    """The bundle was refused; ``reason`` is one of :data:`REASONS`, ``version`` is set once it is authentic."""

    def __init__(self, reason: Reason, message: str, version: int | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason
        self.detail = message
        self.version = version


@dataclass(frozen=True)
class PolicyRecord:
    """A ``person_policy`` row as carried in a bundle (already validated and in canonical form)."""

    valid_from: str | None  # ISO-8601 UTC
    valid_until: str | None
    groups: list[str]
    schedule: dict[str, list[list[str]]] | None
    updated_at: float


@dataclass(frozen=True)
class TemplateRecord:
    embedding: bytes  # little-endian float32, ``dim`` values
    quality: dict[str, float]
    source: str | None
    created_at: float


@dataclass(frozen=True)
class PersonRecord:
    """One person as a unit: applying it replaces the person's row, every template and the policy."""

    id: str
    name: str | None
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    policy: PolicyRecord | None
    templates: list[TemplateRecord] = field(default_factory=list)
    card_number: int | None = None  # absent from bundles made before card numbers: applies as None
    # Negative templates ("This was not them", docs/decision.md): absent from older bundles, applied as none.
    negatives: list[TemplateRecord] = field(default_factory=list)


@dataclass(frozen=True)
class BundleHeader:
    kind: Literal["full", "delta"]
    version: int
    base_version: int | None
    created: str
    embedder_sha256: str
    persons: int
    deletes: int
    templates: int
    dim: int
    payload_sha256: str
    payload_bytes: int
    key_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **self.__dict__, "compression": "zlib"}


@dataclass(frozen=True)
class Bundle:
    header: BundleHeader
    sha256: str  # of the whole bundle file: its identity in manifests, chunk stores and events
    persons: list[PersonRecord]
    deletes: list[str]


def bundle_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ building (admin side)


def _person_json(p: PersonRecord) -> dict[str, Any]:
    return {
        "id": p.id, "name": p.name, "metadata": p.metadata, "created_at": p.created_at, "updated_at": p.updated_at,
        "card_number": p.card_number,
        "policy": None if p.policy is None else {
            "valid_from": p.policy.valid_from, "valid_until": p.policy.valid_until, "groups": p.policy.groups,
            "schedule": p.policy.schedule, "updated_at": p.policy.updated_at,
        },
        "templates": [
            {"embedding": base64.b64encode(t.embedding).decode("ascii"), "quality": t.quality, "source": t.source,
             "created_at": t.created_at}
            for t in p.templates
        ],
        **({"negatives": [
            {"embedding": base64.b64encode(t.embedding).decode("ascii"), "source": t.source,
             "created_at": t.created_at}
            for t in p.negatives
        ]} if p.negatives else {}),
    }


def build_bundle(
    private_key: Ed25519PrivateKey,
    *,
    kind: Literal["full", "delta"],
    version: int,
    base_version: int | None,
    embedder_sha256: str,
    persons: Sequence[PersonRecord],
    deletes: Sequence[str] = (),
    created: float | None = None,
    compress_level: int = 6,
) -> bytes:
    """Serialise and sign. Inputs are trusted (they come from the admin's own gallery) but still checked
    for the invariants a door will check, so a broken admin gallery fails here and not on every door."""
    if kind not in ("full", "delta"):
        raise ValueError(f"kind must be 'full' or 'delta', not {kind!r}")
    if (kind == "full") != (base_version is None):
        raise ValueError("a full bundle has no base_version; a delta needs one")
    if kind == "full" and deletes:
        raise ValueError("a full bundle replaces everything; it has no deletes")
    dims = {len(t.embedding) // 4 for p in persons for t in [*p.templates, *p.negatives]}
    if len(dims) > 1:
        raise ValueError(f"templates of different sizes in one bundle: {sorted(dims)}")
    payload_doc = {"persons": [_person_json(p) for p in persons], "deletes": list(deletes)}
    raw = json.dumps(payload_doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    payload = zlib.compress(raw, compress_level)
    public = private_key.public_key()
    kid = key_id(public)
    header = BundleHeader(
        kind=kind, version=int(version), base_version=base_version,
        created=datetime.fromtimestamp(time.time() if created is None else created, UTC).isoformat(
            timespec="seconds").replace("+00:00", "Z"),
        embedder_sha256=embedder_sha256, persons=len(persons), deletes=len(deletes),
        templates=sum(len(p.templates) for p in persons), dim=dims.pop() if dims else 0,
        payload_sha256=hashlib.sha256(payload).hexdigest(), payload_bytes=len(raw), key_id=kid.hex(),
    )
    header_bytes = json.dumps(header.as_dict(), separators=(",", ":"), sort_keys=True).encode("utf-8")
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ValueError("bundle header too large")
    signed = _PREFIX.pack(MAGIC, FORMAT_VERSION, kid, len(header_bytes), len(payload)) + header_bytes + payload
    return signed + private_key.sign(signed)


# ------------------------------------------------------------------ checking (door side)


def _frame(data: bytes, max_bytes: int) -> tuple[bytes, int, int]:
    """The unauthenticated part: size limit, magic, format version, lengths. Returns (key id, H, P)."""
    if len(data) > max_bytes:
        raise BundleError("too_large", f"{len(data)} bytes is more than sync.max_bundle_bytes = {max_bytes}")
    if not data:
        raise BundleError("truncated", "empty")
    if not data.startswith(MAGIC[: min(len(data), len(MAGIC))]):
        raise BundleError("malformed", "not a facegate gallery bundle (bad magic)")
    if len(data) < PREFIX_BYTES:
        raise BundleError("truncated", f"{len(data)} bytes, shorter than the {PREFIX_BYTES}-byte prefix")
    _magic, fmt, kid, header_len, payload_len = _PREFIX.unpack_from(data)
    if fmt != FORMAT_VERSION:
        raise BundleError("unknown_format", f"bundle format {fmt}; this door reads format {FORMAT_VERSION}")
    if header_len == 0 or header_len > MAX_HEADER_BYTES:
        raise BundleError("malformed", f"header length {header_len} out of range")
    total = PREFIX_BYTES + header_len + payload_len + SIGNATURE_BYTES
    if total > max_bytes:
        raise BundleError("too_large", f"declares {total} bytes, more than sync.max_bundle_bytes = {max_bytes}")
    if len(data) < total:
        raise BundleError("truncated", f"{len(data)} of {total} bytes")
    if len(data) > total:
        raise BundleError("corrupt", f"{len(data) - total} unexpected bytes after the signature")
    return kid, header_len, payload_len


def verify_bundle(data: bytes, keys: Mapping[bytes, Ed25519PublicKey], max_bytes: int) -> Bundle:
    """Authenticate, then parse and validate. Raises :class:`BundleError` and nothing else.

    ``keys`` maps key id (see :func:`facegate.sync.keys.key_id`) to trusted public keys.
    """
    data = bytes(data)
    kid, header_len, _payload_len = _frame(data, max_bytes)
    key = keys.get(kid)
    if key is None:
        raise BundleError("unknown_key", f"signed by key id {kid.hex()}, which is not in sync.public_keys")
    body_end = len(data) - SIGNATURE_BYTES
    try:
        key.verify(data[body_end:], data[:body_end])
    except InvalidSignature:
        raise BundleError("bad_signature", f"signature does not verify with key id {kid.hex()}") from None
    # Authentic from here on: what follows guards against admin-tool bugs, not attackers.
    header = _parse_header(data[PREFIX_BYTES: PREFIX_BYTES + header_len], kid)
    try:
        payload = data[PREFIX_BYTES + header_len: body_end]
        if hashlib.sha256(payload).hexdigest() != header.payload_sha256:
            raise BundleError("corrupt", "payload does not match payload_sha256")
        if header.payload_bytes > MAX_EXPANSION * max_bytes:
            raise BundleError("too_large", f"payload expands to {header.payload_bytes} bytes")
        raw = _inflate(payload, header.payload_bytes)
        persons, deletes = _parse_payload(raw, header)
    except BundleError as exc:
        exc.version = header.version
        raise
    except OverflowError as exc:  # belt and braces for the numeric readers above (a huge JSON integer)
        raise BundleError("malformed", f"a number is out of range: {exc}", header.version) from None
    return Bundle(header=header, sha256=bundle_sha256(data), persons=persons, deletes=deletes)


def peek_header(data: bytes) -> dict[str, Any]:
    """The header of a bundle WITHOUT checking its signature: only for the admin's own publisher, which
    needs version and kind for the manifest. A door never uses this."""
    _kid, header_len, _ = _frame(bytes(data), max(len(data), 1))
    try:
        header = json.loads(data[PREFIX_BYTES: PREFIX_BYTES + header_len])
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BundleError("malformed", "header is not JSON") from None
    if not isinstance(header, dict):
        raise BundleError("malformed", "header is not a JSON object")
    return header


def _inflate(payload: bytes, expected: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(payload, expected + 1)
        if len(raw) <= expected:
            raw += inflater.flush()
    except zlib.error as exc:
        raise BundleError("corrupt", f"payload does not decompress: {exc}") from None
    if len(raw) != expected or not inflater.eof or inflater.unused_data:
        raise BundleError("corrupt", f"payload decompresses to {len(raw)} bytes, header says {expected}")
    return raw


# --- strict JSON field readers: every failure is a BundleError("malformed") naming the field ---------------


def _bad(where: str, what: str) -> BundleError:
    return BundleError("malformed", f"{where}: {what}")


def _int(obj: Mapping[str, Any], key: str, where: str, lo: int = 0, hi: int = 2**62) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _bad(f"{where}.{key}", f"must be an integer in [{lo}, {hi}], got {value!r:.60}")
    return value


def _finite(value: Any) -> TypeGuard[int | float]:
    """A JSON number usable as a float. ``math.isfinite`` raises OverflowError (not False) for an integer
    beyond the float range such as ``10**400``, which JSON allows; that must be a refusal, not a crash."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _num(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if not _finite(value):
        raise _bad(f"{where}.{key}", f"must be a finite number, got {value!r:.60}")
    return float(value)


def _str(obj: Mapping[str, Any], key: str, where: str, *, optional: bool = False, max_len: int = 1024) -> str | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise _bad(f"{where}.{key}", f"must be a string of at most {max_len} characters")
    return value


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, "must be a JSON object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(where, "must be a JSON list")
    return value


def _hex(value: str | None, where: str, length: int) -> str:
    if value is None or len(value) != length or any(c not in "0123456789abcdef" for c in value):
        raise _bad(where, f"must be {length} lower-case hex digits")
    return value


def _parse_header(raw: bytes, kid: bytes) -> BundleHeader:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BundleError("malformed", "header is not UTF-8 JSON") from None
    h = _obj(doc, "header")
    if h.get("format") != FORMAT or h.get("format_version") != FORMAT_VERSION:
        raise BundleError("unknown_format", f"header format {h.get('format')!r:.60} {h.get('format_version')!r:.20}")
    if h.get("compression") != "zlib":
        raise BundleError("unknown_format", f"compression {h.get('compression')!r:.40}")
    kind = h.get("kind")
    if kind not in ("full", "delta"):
        raise _bad("header.kind", "must be 'full' or 'delta'")
    version = _int(h, "version", "header", 1)
    base: int | None = None
    if kind == "delta":
        base = _int(h, "base_version", "header", 0, version - 1)
    elif h.get("base_version") is not None:
        raise _bad("header.base_version", "must be null for a full bundle")
    key_hex = _hex(_str(h, "key_id", "header"), "header.key_id", 2 * len(kid))
    if key_hex != kid.hex():
        raise _bad("header.key_id", "differs from the key id in the signed prefix")
    header = BundleHeader(
        kind=kind, version=version, base_version=base,
        created=str(_str(h, "created", "header", max_len=64)),
        embedder_sha256=_hex(_str(h, "embedder_sha256", "header"), "header.embedder_sha256", 64),
        persons=_int(h, "persons", "header"), deletes=_int(h, "deletes", "header"),
        templates=_int(h, "templates", "header"), dim=_int(h, "dim", "header", 0, MAX_DIM),
        payload_sha256=_hex(_str(h, "payload_sha256", "header"), "header.payload_sha256", 64),
        payload_bytes=_int(h, "payload_bytes", "header"), key_id=key_hex,
    )
    if kind == "full" and header.deletes:
        raise _bad("header.deletes", "a full bundle has no deletes")
    if header.templates and not header.dim:
        raise _bad("header.dim", "must be positive when there are templates")
    return header


def _instant(value: Any, where: str) -> str | None:
    """An aware ISO-8601 instant, normalised to UTC text like the policy table stores it."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise _bad(where, "must be an ISO-8601 string or null")
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise _bad(where, "has no UTC offset")
        return parsed.astimezone(UTC).isoformat()
    except (ValueError, OverflowError):
        raise _bad(where, f"{value!r:.60} is not an ISO-8601 date-time") from None


def _policy(value: Any, where: str) -> PolicyRecord | None:
    if value is None:
        return None
    p = _obj(value, where)
    groups = _list(p.get("groups", []), f"{where}.groups")
    if any(not isinstance(g, str) or not g.strip() or len(g) > 256 for g in groups) or len(set(groups)) != len(groups):
        raise _bad(f"{where}.groups", "must be distinct non-empty strings")
    try:
        schedule = parse_schedule(p.get("schedule"), f"{where}.schedule")
    except PolicyError as exc:
        raise BundleError("malformed", str(exc)) from None
    start, until = _instant(p.get("valid_from"), f"{where}.valid_from"), _instant(p.get("valid_until"),
                                                                                  f"{where}.valid_until")
    if start is not None and until is not None and start >= until:
        raise _bad(where, "valid_from must be before valid_until")
    return PolicyRecord(start, until, list(groups), schedule, _num(p, "updated_at", where))


def _quality(value: Any, where: str) -> dict[str, float]:
    q = _obj(value, where)
    out: dict[str, float] = {}
    for k, v in q.items():
        if not _finite(v):
            raise _bad(f"{where}.{k}", "must be a finite number")
        out[k] = float(v)
    return out



def _embedding(t: dict[str, Any], where: str, size: int, dim: int) -> bytes:
    """A template's (or negative's) base64 float32 bytes, exactly ``size`` of them (the header's ``dim``)."""
    text = str(_str(t, "embedding", where, max_len=4 * MAX_DIM * 4))
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{where}.embedding", "not base64") from None
    if len(blob) != size or not size:
        raise _bad(f"{where}.embedding", f"{len(blob)} bytes; header dim {dim} means {size}")
    return blob


def _parse_payload(raw: bytes, header: BundleHeader) -> tuple[list[PersonRecord], list[str]]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BundleError("malformed", "payload is not UTF-8 JSON") from None
    body = _obj(doc, "payload")
    people = _list(body.get("persons"), "payload.persons")
    deletes = _list(body.get("deletes", []), "payload.deletes")
    if len(people) != header.persons or len(deletes) != header.deletes:
        raise _bad("payload", f"{len(people)} persons and {len(deletes)} deletes; header says "
                              f"{header.persons} and {header.deletes}")
    size = header.dim * 4
    persons: list[PersonRecord] = []
    blobs: list[bytes] = []
    negative_blobs: list[bytes] = []
    seen: set[str] = set()
    cards: dict[int, str] = {}
    for i, item in enumerate(people):
        where = f"payload.persons[{i}]"
        p = _obj(item, where)
        pid = str(_str(p, "id", where, max_len=256))
        if not pid or pid in seen:
            raise _bad(f"{where}.id", "empty or duplicate person id")
        seen.add(pid)
        templates = []
        for j, t_item in enumerate(_list(p.get("templates"), f"{where}.templates")):
            t_where = f"{where}.templates[{j}]"
            t = _obj(t_item, t_where)
            blob = _embedding(t, t_where, size, header.dim)
            blobs.append(blob)
            templates.append(TemplateRecord(blob, _quality(t.get("quality", {}), f"{t_where}.quality"),
                                            _str(t, "source", t_where, optional=True),
                                            _num(t, "created_at", t_where)))
        negatives = []
        for j, t_item in enumerate(_list(p.get("negatives", []), f"{where}.negatives")):
            t_where = f"{where}.negatives[{j}]"
            t = _obj(t_item, t_where)
            blob = _embedding(t, t_where, size, header.dim)
            negative_blobs.append(blob)
            negatives.append(TemplateRecord(blob, {}, _str(t, "source", t_where, optional=True),
                                            _num(t, "created_at", t_where)))
        metadata = _obj(p.get("metadata", {}), f"{where}.metadata")
        card = p.get("card_number")
        if card is not None:
            if isinstance(card, bool) or not isinstance(card, int) or not 0 <= card <= MAX_CARD_NUMBER:
                raise _bad(f"{where}.card_number", f"must be null or an integer from 0 to {MAX_CARD_NUMBER}")
            if card in cards:
                raise _bad(f"{where}.card_number", f"the same card number as {cards[card]!r}")
            cards[card] = pid
        persons.append(PersonRecord(
            id=pid, name=_str(p, "name", where, optional=True), metadata=metadata,
            created_at=_num(p, "created_at", where), updated_at=_num(p, "updated_at", where),
            policy=_policy(p.get("policy"), f"{where}.policy"), templates=templates, card_number=card,
            negatives=negatives,
        ))
    if len(blobs) != header.templates:
        raise _bad("payload", f"{len(blobs)} templates; header says {header.templates}")
    if blobs and not np.isfinite(np.frombuffer(b"".join(blobs), dtype="<f4")).all():
        raise _bad("payload", "a template has NaN or infinite values")
    if negative_blobs and not np.isfinite(np.frombuffer(b"".join(negative_blobs), dtype="<f4")).all():
        raise _bad("payload", "a negative template has NaN or infinite values")
    gone: list[str] = []
    for i, pid in enumerate(deletes):
        if not isinstance(pid, str) or not pid or len(pid) > 256:
            raise _bad(f"payload.deletes[{i}]", "must be a non-empty person id")
        if pid in seen:
            raise _bad(f"payload.deletes[{i}]", f"{pid!r} is both updated and deleted")
        gone.append(pid)
    return persons, gone
