"""Bundles over MQTT: a retained manifest plus retained, self-describing chunks, and the door's chunk store.

Topics under the configured ``sync.topic`` T::

    T/manifest    retained JSON: which bundle is current, its size and chunk count (unsigned: a pointer)
    T/chunk/<i>   retained: one line of JSON {bundle, index, count, size, offset, sha256}, "\\n", raw bytes

Each chunk has its own topic so each stays retained (a broker keeps one retained message per topic), and
names its bundle, so a stale chunk of an older bundle on the same topic is recognised and ignored. Nothing in
the manifest or a chunk header is trusted: the assembled bytes must hash to the manifest's bundle id, and then
the bundle's own signature decides. The manifest only lets a door skip what it already has, refuse an
oversized bundle before downloading it, and know which chunks to ask for.

The :class:`ChunkStore` keeps received chunks of the one bundle being assembled under
``state_dir/sync/chunks/<bundle sha256>/``, each written atomically (temporary file, fsync, rename), so a
restart resumes with the chunks it has and asks only for the missing ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from facegate.base.private_files import private_dir, write_private
from facegate.sync.bundle import BundleError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "MAX_CHUNKS",
    "MIN_CHUNK_BYTES",
    "Chunk",
    "ChunkStore",
    "Manifest",
    "chunk_topic",
    "chunking_problem",
    "make_chunks",
    "make_manifest",
    "manifest_topic",
    "parse_chunk",
    "parse_manifest",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 256 * 1024
MANIFEST_FORMAT = "facegate-sync-manifest"
MAX_MANIFEST_BYTES = 4096
MAX_CHUNK_HEADER_BYTES = 1024
#: A door does work per chunk (a topic to subscribe, a file to write and fsync, a message to handle), and the
#: manifest that sets the chunk count is unsigned. These bounds keep that work proportional to the bundle's
#: size: at most MAX_CHUNKS chunks (4096 x the default 256 KiB = 1 GiB), and chunks below MIN_CHUNK_BYTES only
#: for a small bundle of at most MAX_SMALL_CHUNKS of them (tests and tiny deltas). 4096 x 16 KiB = 64 MiB, the
#: default ``sync.max_bundle_bytes``.
MAX_CHUNKS = 4096
MIN_CHUNK_BYTES = 16 * 1024
MAX_SMALL_CHUNKS = 64
ABSOLUTE_MIN_CHUNK_BYTES = 1024
MAX_CHUNK_BYTES = 2**28


def manifest_topic(topic: str) -> str:
    return f"{topic}/manifest"


def chunk_topic(topic: str, index: int) -> str:
    return f"{topic}/chunk/{index}"


def _is_sha(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_int(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


@dataclass(frozen=True)
class Manifest:
    bundle: str  # sha256 of the bundle file
    size: int
    chunks: int
    chunk_bytes: int
    version: int | None = None  # informational (unsigned); the bundle's signed header is what counts
    kind: str | None = None
    base_version: int | None = None
    created: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps({"format": MANIFEST_FORMAT, "format_version": 1, **asdict(self)},
                          separators=(",", ":")).encode()


def chunking_problem(size: int, count: int, chunk_bytes: int) -> str | None:
    """Why a door refuses ``count`` chunks of ``chunk_bytes`` for a ``size``-byte bundle, or None if it is fine.

    Shared by the publisher (which refuses to publish what doors would refuse) and the door's manifest parser.
    """
    if not ABSOLUTE_MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        return f"chunk size {chunk_bytes} is not between {ABSOLUTE_MIN_CHUNK_BYTES} and {MAX_CHUNK_BYTES} bytes"
    if count > MAX_CHUNKS:
        return (f"{count} chunks of {chunk_bytes} bytes for {size} bytes: at most {MAX_CHUNKS} chunks are "
                f"accepted (use chunks of at least {max(MIN_CHUNK_BYTES, -(-size // MAX_CHUNKS))} bytes)")
    if chunk_bytes < MIN_CHUNK_BYTES and count > MAX_SMALL_CHUNKS:
        return (f"{count} chunks of {chunk_bytes} bytes: chunks under {MIN_CHUNK_BYTES} bytes are accepted only "
                f"for bundles of at most {MAX_SMALL_CHUNKS} chunks")
    return None


def make_manifest(data: bytes, header: dict[str, Any], chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Manifest:
    """Raises ValueError for a chunk size that doors would refuse for this bundle (see :func:`chunking_problem`)."""
    count = max(1, -(-len(data) // max(chunk_bytes, 1)))
    problem = chunking_problem(len(data), count, chunk_bytes)
    if problem is not None:
        raise ValueError(problem)
    version, base = header.get("version"), header.get("base_version")
    return Manifest(hashlib.sha256(data).hexdigest(), len(data), count, chunk_bytes,
                    version if isinstance(version, int) else None, str(header.get("kind")),
                    base if isinstance(base, int) else None, str(header.get("created")))


def parse_manifest(payload: bytes) -> Manifest:
    if len(payload) > MAX_MANIFEST_BYTES:
        raise BundleError("malformed", f"manifest of {len(payload)} bytes")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BundleError("malformed", "manifest is not UTF-8 JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise BundleError("malformed", "not a facegate sync manifest")
    if doc.get("format_version") != 1:
        raise BundleError("unknown_format", f"manifest format_version {doc.get('format_version')!r:.20}")
    size, count, chunk_bytes = doc.get("size"), doc.get("chunks"), doc.get("chunk_bytes")
    if not (_is_sha(doc.get("bundle")) and _is_int(size, 1, 2**40) and _is_int(count, 1, 2**40)
            and _is_int(chunk_bytes, 1, MAX_CHUNK_BYTES)):
        raise BundleError("malformed", "manifest fields bundle/size/chunks/chunk_bytes are missing or invalid")
    assert isinstance(size, int) and isinstance(count, int) and isinstance(chunk_bytes, int)
    if count != -(-size // chunk_bytes):
        raise BundleError("malformed", f"{count} chunks of {chunk_bytes} bytes can not hold {size} bytes")
    problem = chunking_problem(size, count, chunk_bytes)
    if problem is not None:
        raise BundleError("malformed", problem)
    version, base = doc.get("version"), doc.get("base_version")
    return Manifest(str(doc["bundle"]), size, count, chunk_bytes,
                    version if _is_int(version, 0, 2**62) else None,
                    str(doc.get("kind"))[:16] if doc.get("kind") is not None else None,
                    base if _is_int(base, 0, 2**62) else None,
                    str(doc.get("created"))[:64] if doc.get("created") is not None else None)


@dataclass(frozen=True)
class Chunk:
    bundle: str
    index: int
    count: int
    size: int
    offset: int
    data: bytes


def make_chunks(data: bytes, manifest: Manifest) -> list[bytes]:
    """The MQTT payloads of all chunks, in index order."""
    out = []
    for i in range(manifest.chunks):
        offset = i * manifest.chunk_bytes
        piece = data[offset: offset + manifest.chunk_bytes]
        head = {"bundle": manifest.bundle, "index": i, "count": manifest.chunks, "size": manifest.size,
                "offset": offset, "sha256": hashlib.sha256(piece).hexdigest()}
        out.append(json.dumps(head, separators=(",", ":")).encode() + b"\n" + piece)
    return out


def parse_chunk(payload: bytes) -> Chunk:
    """A chunk message; its data must hash to the header's sha256 (catches a damaged or mixed-up chunk early)."""
    end = payload.find(b"\n", 0, MAX_CHUNK_HEADER_BYTES)
    if end < 0:
        raise BundleError("malformed", "chunk has no header line")
    try:
        head = json.loads(payload[:end])
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BundleError("malformed", "chunk header is not JSON") from None
    if not isinstance(head, dict):
        raise BundleError("malformed", "chunk header is not an object")
    index, count, size, offset = head.get("index"), head.get("count"), head.get("size"), head.get("offset")
    if not (_is_sha(head.get("bundle")) and _is_sha(head.get("sha256")) and _is_int(count, 1, MAX_CHUNKS)
            and _is_int(index, 0, MAX_CHUNKS - 1) and _is_int(size, 1, 2**40) and _is_int(offset, 0, 2**40)):
        raise BundleError("malformed", "chunk header fields are missing or invalid")
    assert isinstance(index, int) and isinstance(count, int) and isinstance(size, int) and isinstance(offset, int)
    data = payload[end + 1:]
    if hashlib.sha256(data).hexdigest() != head["sha256"]:
        raise BundleError("corrupt", f"chunk {index} does not match its sha256")
    if index >= count or offset + len(data) > size:
        raise BundleError("malformed", f"chunk {index}/{count} at {offset}+{len(data)} exceeds {size} bytes")
    return Chunk(str(head["bundle"]), index, count, size, offset, data)


class ChunkStore:
    """Chunks of the bundle being assembled, on disk. Not thread-safe: the MQTT source serialises calls."""

    def __init__(self, directory: Path) -> None:
        self.directory = private_dir(Path(directory))
        self.manifest: Manifest | None = None
        self._have: set[int] = set()
        self._load()

    def _load(self) -> None:
        """Resume: the manifest and chunks persisted by a previous run (a damaged leftover is dropped)."""
        for entry in sorted(self.directory.iterdir()):
            try:
                manifest = parse_manifest((entry / "manifest.json").read_bytes())
                if manifest.bundle != entry.name or self.manifest is not None:
                    raise BundleError("malformed", "stale")
            except (OSError, BundleError):
                self._remove(entry)
                continue
            self.manifest = manifest
            for part in entry.glob("*.chunk"):
                if part.stem.isdigit() and self._valid_part(manifest, int(part.stem), part):
                    self._have.add(int(part.stem))
                else:
                    part.unlink(missing_ok=True)

    @staticmethod
    def _valid_part(manifest: Manifest, index: int, path: Path) -> bool:
        if index >= manifest.chunks:
            return False
        expected = min(manifest.chunk_bytes, manifest.size - index * manifest.chunk_bytes)
        try:
            return path.stat().st_size == expected
        except OSError:
            return False

    @staticmethod
    def _remove(path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def _dir(self, bundle: str) -> Path:
        return self.directory / bundle

    def begin(self, manifest: Manifest) -> None:
        """Assemble this bundle from now on; chunks of any other bundle are deleted."""
        if self.manifest is not None and self.manifest == manifest:
            return
        for entry in self.directory.iterdir():
            if entry.name != manifest.bundle:
                self._remove(entry)
        self.manifest = manifest
        self._have = set()
        folder = private_dir(self._dir(manifest.bundle))
        for part in folder.glob("*.chunk"):  # same bundle id, e.g. re-announced after a restart
            if part.stem.isdigit() and self._valid_part(manifest, int(part.stem), part):
                self._have.add(int(part.stem))
            else:
                part.unlink(missing_ok=True)
        self._write(folder / "manifest.json", manifest.to_bytes())

    def add(self, chunk: Chunk) -> bool:
        """Store a chunk of the current bundle; False for duplicates and chunks that do not fit the manifest."""
        m = self.manifest
        if m is None or chunk.bundle != m.bundle or chunk.index in self._have:
            return False
        expected = min(m.chunk_bytes, m.size - chunk.index * m.chunk_bytes)
        if (chunk.count != m.chunks or chunk.size != m.size or chunk.offset != chunk.index * m.chunk_bytes
                or len(chunk.data) != expected):
            log.warning("chunk %d of %s does not fit its manifest; ignored", chunk.index, m.bundle[:12])
            return False
        # No directory fsync: a chunk whose rename a power cut loses is simply fetched again.
        self._write(self._dir(m.bundle) / f"{chunk.index}.chunk", chunk.data, durable_rename=False)
        self._have.add(chunk.index)
        return True

    def missing(self) -> list[int]:
        """The indices still to fetch: O(chunks), so only for (re)subscribing, not for every chunk message."""
        m = self.manifest
        return [] if m is None else [i for i in range(m.chunks) if i not in self._have]

    @property
    def missing_count(self) -> int:
        """O(1): ``_have`` only ever holds valid indices of the current manifest."""
        return 0 if self.manifest is None else self.manifest.chunks - len(self._have)

    @property
    def complete(self) -> bool:
        return self.manifest is not None and self.missing_count == 0

    def assemble(self) -> bytes:
        m = self.manifest
        if m is None or not self.complete:
            raise BundleError("truncated", "bundle is incomplete")
        folder = self._dir(m.bundle)
        return b"".join((folder / f"{i}.chunk").read_bytes() for i in range(m.chunks))

    def restart(self) -> None:
        """Delete the current bundle's chunks but keep its manifest, to fetch every chunk again.

        For assembled bytes that do not hash to the bundle id: some stored chunk is forged or damaged, and
        chunks carry no signature of their own, so there is no telling which one.
        """
        m = self.manifest
        if m is not None:
            for part in self._dir(m.bundle).glob("*.chunk"):
                part.unlink(missing_ok=True)
        self._have = set()

    def discard(self) -> None:
        """Forget the current bundle and its chunks (after it was applied or rejected)."""
        if self.manifest is not None:
            self._remove(self._dir(self.manifest.bundle))
        self.manifest = None
        self._have = set()

    @staticmethod
    def _write(path: Path, data: bytes, *, durable_rename: bool = True) -> None:
        write_private(path, data, durable=durable_rename)  # owner-only: chunks are pieces of biometric data
