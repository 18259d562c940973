"""Signed gallery bundles: export, verification (signature first), atomic apply, deltas, change log, fuzzing."""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from facegate.access.policy import AccessPolicy
from facegate.cli import main
from facegate.config import ConfigError, parse_config
from facegate.errors import GalleryError
from facegate.gallery.store import Gallery, NewTemplate
from facegate.sync.apply import apply_bundle, sync_state
from facegate.sync.bundle import (
    MAGIC,
    PREFIX_BYTES,
    BundleError,
    PersonRecord,
    PolicyRecord,
    TemplateRecord,
    build_bundle,
    verify_bundle,
)
from facegate.sync.export import export_bundle, export_person_templates, import_person_templates
from facegate.sync.keys import load_private_key, public_keys_by_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.sync_keys import EMB, add_random_persons, content, keypair, synced_part, unit_vectors

MAX = 64 * 1024 * 1024


@pytest.fixture
def admin(tmp_path: Path) -> Gallery:
    g = Gallery(tmp_path / "admin.db")
    add_random_persons(g, 20)
    with AccessPolicy(g) as pol:
        pol.set_person("p00001", valid_until="2031-01-01T00:00:00+02:00", groups=["staff", "lab"],
                       schedule={"mon": [["08:00", "18:00"]], "fri": [["22:00", "06:00"]]})
        pol.set_person("p00002", groups=["security"])
    return g


@pytest.fixture
def device(tmp_path: Path) -> Gallery:
    g = Gallery(tmp_path / "device.db")
    with AccessPolicy(g) as pol:
        pol.set_lockdown(True)  # device-local: sync must never touch it
    return g


def verify(data: bytes, keys: Any, max_bytes: int = MAX) -> Any:
    return verify_bundle(data, keys, max_bytes)


def test_full_bundle_round_trip_keeps_policy_and_leaves_lockdown(admin, device) -> None:  # type: ignore[no-untyped-def]
    key, keys, _ = keypair()
    result = export_bundle(admin, key)
    assert result.kind == "full" and result.version == admin.version and result.persons == 20
    applied = apply_bundle(device, verify(result.data, keys), EMB)
    assert (applied.version, applied.persons, applied.templates) == (admin.version, 20, 20)
    a, d = content(admin.path), content(device.path)
    assert synced_part(a) == synced_part(d)
    assert d["version"] == str(admin.version)
    assert d["device_local"] == [("lockdown", "1")]
    assert sync_state(device).version == admin.version and sync_state(device).bundle_sha256 == result.sha256
    with AccessPolicy(device) as pol:  # the synced policy is readable by the door's policy code
        assert pol.get_person("p00001").groups == ("staff", "lab")  # type: ignore[union-attr]
        assert pol.lockdown
    index = device.build_index()
    query = np.frombuffer(a["templates"][5][1], dtype="<f4")
    assert index.search(query, k=1)[0].person_id == "p00005"


# ------------------------------------------------------------------ rejections leave the gallery unchanged


def _rejected(device: Gallery, data: bytes, keys: Any, reason: str, max_bytes: int = MAX) -> BundleError:
    before = content(device.path)
    with pytest.raises(BundleError) as info:
        apply_bundle(device, verify(data, keys, max_bytes), EMB)
    assert info.value.reason == reason, info.value
    assert content(device.path) == before
    return info.value


def test_forged_signature_is_refused(admin, device) -> None:  # type: ignore[no-untyped-def]
    key, keys, _ = keypair()
    data = bytearray(export_bundle(admin, key).data)
    data[PREFIX_BYTES + 40] ^= 0x01  # inside the header: same lengths, same key id, broken signature
    _rejected(device, bytes(data), keys, "bad_signature")
    data = bytearray(export_bundle(admin, key).data)
    data[-1] ^= 0x80  # the signature itself
    _rejected(device, bytes(data), keys, "bad_signature")


def test_a_valid_signature_by_an_unknown_key_is_refused(admin, device) -> None:  # type: ignore[no-untyped-def]
    key, _, _ = keypair()
    _other, other_keys, _ = keypair()
    _rejected(device, export_bundle(admin, key).data, other_keys, "unknown_key")


def test_an_attacker_cannot_relabel_a_bundle_with_a_trusted_key_id(admin, device) -> None:  # type: ignore[no-untyped-def]
    trusted, keys, _ = keypair()
    attacker = Ed25519PrivateKey.generate()
    data = bytearray(export_bundle(admin, attacker).data)
    data[8:16] = next(iter(keys))  # claim the trusted key's id; the prefix is signed, so this can't verify
    _rejected(device, bytes(data), keys, "bad_signature")
    assert trusted is not None


@pytest.mark.parametrize("cut", [1, 5, PREFIX_BYTES - 1, PREFIX_BYTES + 10, -65, -1])
def test_truncated_bundles_are_refused(admin, device, cut) -> None:  # type: ignore[no-untyped-def]
    key, keys, _ = keypair()
    data = export_bundle(admin, key).data
    _rejected(device, data[:cut], keys, "truncated")


def test_corrupt_and_foreign_inputs_are_refused(admin, device) -> None:  # type: ignore[no-untyped-def]
    key, keys, _ = keypair()
    data = export_bundle(admin, key).data
    _rejected(device, data + b"\x00", keys, "corrupt")
    _rejected(device, b"", keys, "truncated")
    _rejected(device, b"PK\x03\x04 a zip file", keys, "malformed")
    _rejected(device, b'{"persons": []}', keys, "malformed")
    future = bytearray(data)
    future[6:8] = struct.pack(">H", 2)
    _rejected(device, bytes(future), keys, "unknown_format")


def test_oversized_bundles_are_refused_before_anything_else(admin, device) -> None:  # type: ignore[no-untyped-def]
    key, keys, _ = keypair()
    data = export_bundle(admin, key).data
    _rejected(device, data, keys, "too_large", max_bytes=len(data) - 1)
    # A prefix that declares a huge payload is refused by its claim, without waiting for the bytes.
    claim = MAGIC + struct.pack(">H8sIQ", 1, b"\x00" * 8, 100, 2**40)
    _rejected(device, claim, keys, "too_large", max_bytes=1 << 20)


def test_rollback_and_replayed_versions_are_refused(admin, device) -> None:  # type: ignore[no-untyped-def]
    key, keys, _ = keypair()
    old = export_bundle(admin, key).data
    add_random_persons(admin, 3, start=100, seed=1)
    new = export_bundle(admin, key).data
    apply_bundle(device, verify(new, keys), EMB)
    err = _rejected(device, old, keys, "rollback")
    assert err.version is not None and err.version < device.version
    _rejected(device, new, keys, "rollback")  # the same version again (also never re-applied)


def test_templates_from_another_embedder_are_refused(admin, device) -> None:  # type: ignore[no-untyped-def]
    key, keys, _ = keypair()
    data = export_bundle(admin, key).data
    before = content(device.path)
    with pytest.raises(BundleError) as info:
        apply_bundle(device, verify(data, keys), "f" * 64)
    assert info.value.reason == "embedder_mismatch" and content(device.path) == before


# ------------------------------------------------------------------ deltas


def test_delta_applies_upserts_deletes_and_policy_changes(admin, device) -> None:  # type: ignore[no-untyped-def]
    key, keys, _ = keypair()
    full = export_bundle(admin, key)
    apply_bundle(device, verify(full.data, keys), EMB)
    # Changes after the full snapshot: a new person, a removed one (with a policy: cascade), a policy change,
    # a policy cleared, a template added to an existing person.
    add_random_persons(admin, 2, start=500, seed=7)
    admin.remove("p00002")
    with AccessPolicy(admin) as pol:
        pol.set_person("p00003", groups=["night"], schedule={"sat": [["00:00", "24:00"]]})
        pol.clear_person("p00001")
    admin.enroll("p00004", [NewTemplate(unit_vectors(1, 99)[0], {"sharpness": 1.0})], EMB)
    delta = export_bundle(admin, key, base=full.version)
    assert delta.kind == "delta" and delta.base_version == full.version
    assert (delta.persons, delta.deletes) == (5, 1)  # 2 new, p00003, p00001, p00004; p00002 deleted
    assert delta.data.__len__() < full.data.__len__() / 2
    applied = apply_bundle(device, verify(delta.data, keys), EMB)
    assert applied.upserted == 5 and applied.deleted == 1 and applied.version == admin.version
    assert synced_part(content(admin.path)) == synced_part(content(device.path))
    db = sqlite3.connect(str(device.path))
    assert db.execute("SELECT COUNT(*) FROM templates WHERE person_id = 'p00002'").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM person_policy WHERE person_id = 'p00002'").fetchone()[0] == 0
    assert content(device.path)["device_local"] == [("lockdown", "1")]


def test_delta_against_another_base_waits_for_a_full_snapshot(admin, device) -> None:  # type: ignore[no-untyped-def]
    key, keys, _ = keypair()
    v1 = export_bundle(admin, key)
    apply_bundle(device, verify(v1.data, keys), EMB)
    add_random_persons(admin, 1, start=300, seed=2)
    v2 = export_bundle(admin, key)
    add_random_persons(admin, 1, start=301, seed=3)
    d23 = export_bundle(admin, key, base=v2.version)  # the door never got v2
    err = _rejected(device, d23.data, keys, "base_mismatch")
    assert err.version == d23.version
    full = export_bundle(admin, key)  # version is unchanged since d23, so it is the same gallery state
    apply_bundle(device, verify(full.data, keys), EMB)
    assert synced_part(content(admin.path)) == synced_part(content(device.path))


def test_local_changes_do_not_confuse_the_rollback_check(admin, device) -> None:  # type: ignore[no-untyped-def]
    key, keys, _ = keypair()
    v = export_bundle(admin, key)
    apply_bundle(device, verify(v.data, keys), EMB)
    device.enroll("local-guest", [NewTemplate(unit_vectors(1, 5)[0], {})], EMB)  # bumps the local version
    add_random_persons(admin, 1, start=400, seed=4)
    delta = export_bundle(admin, key, base=v.version)
    apply_bundle(device, verify(delta.data, keys), EMB)  # base = last applied bundle version, not local version
    assert device.person("local-guest") is not None  # a delta does not remove what it does not name
    apply_bundle(device, verify(export_bundle(admin, key, version=admin.version + 1).data, keys), EMB)
    assert device.person("local-guest") is None  # a full snapshot is the fleet's gallery, exactly


def test_delta_needs_change_history(admin, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key, _, _ = keypair()
    with pytest.raises(GalleryError, match="nothing changed"):
        export_bundle(admin, key, base=admin.version)
    # A gallery from before the change log existed can only export full snapshots from where the log starts.
    old = tmp_path / "old.db"
    db = sqlite3.connect(str(old))
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                     "INSERT INTO meta VALUES ('version', '7'), ('embedder_sha256', '" + EMB + "');")
    db.close()
    g = Gallery(old)
    add_random_persons(g, 1)
    with pytest.raises(GalleryError, match="export a full snapshot"):
        export_bundle(g, key, base=3)
    assert export_bundle(g, key, base=7).persons == 1


def test_change_log_records_every_writer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = Gallery(tmp_path / "g.db")
    g.enroll("a", [NewTemplate(unit_vectors(1)[0], {})], EMB)  # v1
    g.enroll("b", [NewTemplate(unit_vectors(1)[0], {})], EMB)  # v2
    with AccessPolicy(g) as pol:
        pol.set_person("a", groups=["x"])  # v3
        pol.set_lockdown(True)  # device-local: not a change
    g.remove("b")  # v4
    rows = dict((r[0], r[1:]) for r in sqlite3.connect(str(g.path)).execute("SELECT * FROM sync_changes"))
    assert rows == {"a": (3, 0), "b": (4, 1)} and g.version == 4


# ------------------------------------------------------------------ admin files


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    private, public = tmp_path / "admin.key", tmp_path / "admin.pub"
    assert main(["gallery", "keygen", "--private", str(private), "--public", str(public)]) == 0
    assert os.stat(private).st_mode & 0o777 == 0o600
    out = json.loads(capsys.readouterr().out)
    assert public.read_text().strip() == out["public_key"]
    key = load_private_key(private)
    assert next(iter(public_keys_by_id([out["public_key"]]).values())).public_bytes_raw() == \
        key.public_key().public_bytes_raw()
    assert main(["gallery", "keygen", "--private", str(private), "--public", str(public)]) == 2  # no overwrite
    config = parse_config({"sync": {"public_keys": [out["public_key"]], "topic": "fleet/gallery"}})
    assert config.sync.public_keys == [out["public_key"]]


@pytest.mark.parametrize(("sync", "message"), [
    ({"public_keys": ["bm90IGEga2V5"], "topic": "t"}, "sync.public_keys"),
    ({"public_keys": ["A" * 43 + "="], "topic": "a/+/b"}, "sync.topic"),
    ({"url": "ftp://x/bundle"}, "sync.url"),
    ({"max_bundle_bytes": 10}, "sync.max_bundle_bytes"),
])
def test_bad_sync_config_names_the_key(sync, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        parse_config({"sync": sync})


def test_door_enrolment_travels_through_the_admin_only(tmp_path, admin) -> None:  # type: ignore[no-untyped-def]
    door = Gallery(tmp_path / "door.db")
    door.enroll("visitor", [NewTemplate(v, {"sharpness": 30.0}, "cam.jpg") for v in unit_vectors(2, 11)], EMB,
                name="Visitor", metadata={"badge": 7})
    doc = export_person_templates(door, "visitor")
    assert "sig" not in json.dumps(doc)  # unsigned by design
    person, added = import_person_templates(admin, json.loads(json.dumps(doc)))
    assert (person, added) == ("visitor", 2)
    assert admin.person("visitor")["name"] == "Visitor"  # type: ignore[index]
    doc["embedder_sha256"] = "0" * 64
    with pytest.raises(GalleryError, match="embedder"):
        import_person_templates(admin, doc)
    # ... and a door never accepts it as a bundle
    _, keys, _ = keypair()
    with pytest.raises(BundleError) as info:
        verify(json.dumps(doc).encode(), keys)
    assert info.value.reason == "malformed"


# ------------------------------------------------------------------ fuzzing: only BundleError, never a crash


@pytest.fixture(scope="module")
def signed() -> tuple[bytes, Any, Ed25519PrivateKey]:
    key, keys, _ = keypair()
    persons = [PersonRecord(f"id{i}", f"n{i}", {}, 1.0, 2.0, None,
                            [TemplateRecord(unit_vectors(1, i, 8)[0].tobytes(), {"q": 1.0}, None, 1.0)])
               for i in range(3)]
    data = build_bundle(key, kind="full", version=3, base_version=None, embedder_sha256=EMB, persons=persons)
    return data, keys, key


HUGE = 10**400  # valid JSON, but beyond the float range: math.isfinite() raises OverflowError on it


@pytest.mark.parametrize("where", ["created_at", "updated_at", "template.created_at", "quality", "policy.updated_at"])
def test_huge_json_numbers_are_malformed_not_a_crash(signed, where) -> None:  # type: ignore[no-untyped-def]
    """A number no float can hold is a refusal (``malformed``); an escaping OverflowError used to be reported as
    ``apply_failed``, which is not remembered, so HTTP downloaded the same bundle again at every poll."""
    _, keys, key = signed
    template = TemplateRecord(unit_vectors(1, 0, 8)[0].tobytes(), {"q": HUGE if where == "quality" else 1.0}, None,
                              HUGE if where == "template.created_at" else 1.0)
    policy = PolicyRecord(None, None, [], None, HUGE) if where == "policy.updated_at" else None
    person = PersonRecord("p1", "x", {}, HUGE if where == "created_at" else 1.0,
                          HUGE if where == "updated_at" else 1.0, policy, [template])
    data = build_bundle(key, kind="full", version=5, base_version=None, embedder_sha256=EMB, persons=[person])
    with pytest.raises(BundleError) as refused:
        verify(data, keys)
    assert refused.value.reason == "malformed" and refused.value.version == 5


def _check(data: bytes, keys: Any) -> None:
    try:
        verify_bundle(data, keys, 1 << 20)
    except BundleError as exc:
        assert exc.reason in {"too_large", "truncated", "malformed", "unknown_format", "unknown_key",
                              "bad_signature", "corrupt"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes(signed, blob) -> None:  # type: ignore[no-untyped-def]
    _check(blob, signed[1])
    _check(MAGIC + blob, signed[1])
    _check(signed[0][:PREFIX_BYTES] + blob, signed[1])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_bundles(signed, data) -> None:  # type: ignore[no-untyped-def]
    bundle, keys, _ = signed
    mutated = bytearray(bundle)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if op == "flip" and mutated:
            mutated[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del mutated[pos:]
        elif op == "insert":
            mutated[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif mutated:
            del mutated[pos: pos + data.draw(st.integers(1, 16))]
    _check(bytes(mutated), keys)


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.just(HUGE) | st.floats()
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=3), max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_validly_signed_nonsense_never_crashes_the_parser(signed, data) -> None:  # type: ignore[no-untyped-def]
    """The post-signature parser, reached with mutated headers and payload documents that ARE signed."""
    import hashlib
    import zlib

    _, keys, key = signed
    kid = next(iter(keys))
    person = {"id": "a", "name": None, "metadata": {}, "created_at": 1.0, "updated_at": 1.0, "policy": None,
              "templates": [{"embedding": "AAAAAA==", "quality": {}, "source": None, "created_at": 1.0}]}
    payload_doc: Any = {"persons": [person], "deletes": []}
    path = data.draw(st.sampled_from(["root", "persons", "person", "template", "policy", "deletes"]))
    junk = data.draw(_json)
    if path == "root":
        payload_doc = junk
    elif path == "persons":
        payload_doc["persons"] = junk
    elif path == "person":
        person[data.draw(st.sampled_from(sorted(person)))] = junk
    elif path == "template":
        person["templates"][0][data.draw(st.sampled_from(["embedding", "quality", "source", "created_at"]))] = junk
    elif path == "policy":
        person["policy"] = {"groups": junk, "schedule": data.draw(_json), "valid_from": data.draw(_json),
                            "valid_until": None, "updated_at": 1.0}
    else:
        payload_doc["deletes"] = junk
    raw = json.dumps(payload_doc, allow_nan=True).encode()
    payload = zlib.compress(raw)
    header = {"format": "facegate-gallery-bundle", "format_version": 1, "compression": "zlib", "kind": "full",
              "version": 2, "base_version": None, "created": "x", "embedder_sha256": EMB, "persons": 1,
              "deletes": 0, "templates": 1, "dim": 1, "payload_sha256": hashlib.sha256(payload).hexdigest(),
              "payload_bytes": len(raw), "key_id": kid.hex()}
    if data.draw(st.booleans()):
        header[data.draw(st.sampled_from(sorted(header)))] = data.draw(_json)
    head = json.dumps(header, allow_nan=True).encode()
    body = MAGIC + struct.pack(">H8sIQ", 1, kid, len(head), len(payload)) + head + payload
    _check(body + key.sign(body), keys)
