"""Chunks and manifests on the wire, and the on-disk chunk store that lets a door resume after a restart."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path

import pytest
from facegate.cli import main
from facegate.gallery.store import Gallery
from facegate.sync.bundle import BundleError
from facegate.sync.chunks import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNKS,
    ChunkStore,
    Manifest,
    make_chunks,
    make_manifest,
    parse_chunk,
    parse_manifest,
)
from facegate.sync.export import export_bundle
from hypothesis import given, settings
from hypothesis import strategies as st
from support.sync_keys import add_random_persons, keypair

DATA = os.urandom(10_000) + b"tail"


def test_chunks_round_trip_in_any_order_with_duplicates(tmp_path: Path) -> None:
    manifest = make_manifest(DATA, {"version": 4, "kind": "full"}, 1024)
    assert parse_manifest(manifest.to_bytes()) == manifest and manifest.chunks == 10
    chunks = [parse_chunk(p) for p in make_chunks(DATA, manifest)]
    store = ChunkStore(tmp_path)
    store.begin(manifest)
    order = [*range(10), 3, 3, 7]
    random.Random(1).shuffle(order)
    added = [store.add(chunks[i]) for i in order]
    assert added.count(True) == 10 and store.complete
    assert store.assemble() == DATA
    store.discard()
    assert list(tmp_path.iterdir()) == []


def test_store_resumes_after_restart_and_drops_damaged_leftovers(tmp_path: Path) -> None:
    manifest = make_manifest(DATA, {}, 1024)
    chunks = [parse_chunk(p) for p in make_chunks(DATA, manifest)]
    store = ChunkStore(tmp_path)
    store.begin(manifest)
    for i in (0, 2, 5):
        store.add(chunks[i])
    folder = tmp_path / manifest.bundle
    (folder / "4.chunk.tmp").write_bytes(b"half a write")  # died mid-write: never renamed
    (folder / "6.chunk").write_bytes(b"short")  # damaged: wrong size
    again = ChunkStore(tmp_path)
    assert again.manifest == manifest and again.missing() == [1, 3, 4, 6, 7, 8, 9]
    again.begin(manifest)  # the same manifest re-announced keeps what is there
    assert again.missing() == [1, 3, 4, 6, 7, 8, 9]
    other = make_manifest(DATA[::-1], {}, 1024)
    again.begin(other)  # a newer bundle: the old chunks go
    assert not folder.exists() and again.missing() == list(range(10))
    assert not again.add(chunks[1])  # a chunk of the old bundle is not mixed in


def test_chunks_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    manifest = make_manifest(DATA, {}, 1024)
    payloads = make_chunks(DATA, manifest)
    with pytest.raises(BundleError, match="corrupt"):
        parse_chunk(payloads[1][:-1] + b"X")
    with pytest.raises(BundleError):
        parse_chunk(b"no header line at all")
    head, _, body = payloads[1].partition(b"\n")
    fields = json.loads(head)
    fields["offset"] = 0  # claims to be somewhere else
    store = ChunkStore(tmp_path)
    store.begin(manifest)
    assert not store.add(parse_chunk(json.dumps(fields).encode() + b"\n" + body))
    bad = json.loads(manifest.to_bytes())
    bad["chunks"] = 3
    with pytest.raises(BundleError, match="can not hold"):
        parse_manifest(json.dumps(bad).encode())
    with pytest.raises(BundleError):
        store.assemble()  # incomplete


def test_store_keeps_a_running_count_and_restarts_from_scratch(tmp_path: Path) -> None:
    manifest = make_manifest(DATA, {}, 1024)
    chunks = [parse_chunk(p) for p in make_chunks(DATA, manifest)]
    store = ChunkStore(tmp_path)
    store.begin(manifest)
    for i in range(9):
        store.add(chunks[i])
        store.add(chunks[i])  # a duplicate does not count twice
        assert store.missing_count == 9 - i
    assert not store.complete and store.missing() == [9]
    # Chunks that did not hash to the bundle: all go, the manifest stays, and a restart resumes from nothing.
    store.restart()
    assert store.manifest == manifest and store.missing_count == 10 and store.missing() == list(range(10))
    assert not list((tmp_path / manifest.bundle).glob("*.chunk"))
    again = ChunkStore(tmp_path)
    assert again.manifest == manifest and again.missing_count == 10


@pytest.mark.parametrize(("size", "count", "chunk_bytes", "message"), [
    (64 << 20, 65536, 1024, "65536 chunks of 1024 bytes"),  # the review's case: 64 MiB in 1 KiB chunks
    (1 << 20, 1024, 1024, "chunks under 16384 bytes are accepted only for bundles of at most 64 chunks"),
    ((MAX_CHUNKS + 1) << 14, MAX_CHUNKS + 1, 16 * 1024, f"at most {MAX_CHUNKS} chunks are accepted"),
    (10_000, 20, 500, "chunk size 500 is not between"),
])
def test_manifests_with_too_many_or_too_small_chunks_are_refused(size: int, count: int, chunk_bytes: int,
                                                                  message: str) -> None:
    """An unsigned manifest must not make a door subscribe to, store and handle tens of thousands of chunks."""
    with pytest.raises(BundleError, match=message) as refused:
        parse_manifest(Manifest("a" * 64, size, count, chunk_bytes).to_bytes())
    assert refused.value.reason == "malformed"
    with pytest.raises(ValueError, match=message):  # the publisher refuses to publish it in the first place
        make_manifest(b"x" * size, {}, chunk_bytes)


@pytest.mark.parametrize(("size", "chunk_bytes"), [
    (64 * 1024, 1024),  # small bundles may use small chunks (tests, tiny deltas)
    (MAX_CHUNKS << 14, 16 * 1024),  # 64 MiB in 16 KiB chunks: the most chunks a door takes
    (200_000, 16 * 1024),  # tests/tools/test_sync_fleet.py publishes with 16 KiB chunks
    (8_000_000, DEFAULT_CHUNK_BYTES),
])
def test_usual_chunkings_are_accepted(size: int, chunk_bytes: int) -> None:
    manifest = make_manifest(b"x" * size, {}, chunk_bytes)
    assert parse_manifest(manifest.to_bytes()) == manifest


def test_publish_refuses_a_chunk_size_doors_would_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin = Gallery(tmp_path / "admin.db")
    add_random_persons(admin, 120)
    bundle = tmp_path / "full.bundle"
    bundle.write_bytes(export_bundle(admin, keypair()[0]).data)
    assert bundle.stat().st_size > 64 * 1024
    # Bad input (exit 2) before any network: port 1 is never contacted.
    assert main(["gallery", "publish", str(bundle), "--topic", "t", "--port", "1", "--chunk-bytes", "1024"]) == 2
    assert "chunks under 16384 bytes" in capsys.readouterr().err


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_manifest_and_chunk_parsers(blob: bytes) -> None:
    for parse in (parse_manifest, parse_chunk):
        with contextlib.suppress(BundleError):
            parse(blob)
        with contextlib.suppress(BundleError):
            parse(b'{"format":"facegate-sync-manifest","format_version":1,' + blob)
