"""Chunks and manifests on the wire, and the on-disk chunk store that lets a door resume after a restart."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path

import pytest
from facegate.sync.bundle import BundleError
from facegate.sync.chunks import ChunkStore, make_chunks, make_manifest, parse_chunk, parse_manifest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_manifest_and_chunk_parsers(blob: bytes) -> None:
    for parse in (parse_manifest, parse_chunk):
        with contextlib.suppress(BundleError):
            parse(blob)
        with contextlib.suppress(BundleError):
            parse(b'{"format":"facegate-sync-manifest","format_version":1,' + blob)
