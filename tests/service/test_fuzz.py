"""Fuzzing every input a stranger or a broken tool can hand the door (issue 13).

Targets: MQTT command payloads through the real ``CommandVerifier`` (random bytes, invalid UTF-8, huge and
deeply nested JSON, wrong types, mutations of genuinely signed commands), config files (random text and
TOML built from the real keys), sync manifests, chunks and signed bundles, and images (random bytes,
truncations, mutated headers, decompression bombs) up to the face pipeline itself.

Each target holds two properties: 0 crashes (only the input's own error type ever escapes: ``CommandRejected``,
``ConfigError``, ``BundleError``, ``ImageError``/``FrameError``) and 0 accepted forgeries (anything accepted is
exactly what the key holder signed).

Bounded for ``make test`` (a few hundred cases per target). ``pytest tests/service/test_fuzz.py --long`` (or
``FACEGATE_FUZZ_LONG=1``) runs ``LONG_EXAMPLES`` (10,000) cases per target; add
``--hypothesis-show-statistics`` for the counts.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from facegate.base.imageio import decode_image, image_dimensions
from facegate.camera.replay import ReplaySource
from facegate.camera.source import FrameError
from facegate.config import Config, ConfigError, load_config
from facegate.errors import ImageError
from facegate.events.commands import CommandRejected, CommandVerifier, sign_command
from facegate.sync.bundle import BundleError, PersonRecord, TemplateRecord, build_bundle, verify_bundle
from facegate.sync.chunks import ChunkStore, make_chunks, make_manifest, parse_chunk, parse_manifest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.sync_keys import EMB, keypair, unit_vectors

LONG = os.environ.get("FACEGATE_FUZZ_LONG") == "1"
LONG_EXAMPLES = 10_000
DEVICE = "fuzz-door"
HMAC_KEY = bytes(range(32))
ED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
NOW = 1_800_000_000.0


def fuzz(examples: int) -> settings:
    """``examples`` cases in the normal suite, LONG_EXAMPLES with --long; no deadline (a shared 2-core VM)."""
    return settings(max_examples=LONG_EXAMPLES if LONG else examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.just(10**400) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + closer * depth).encode()


# ------------------------------------------------------------------ MQTT commands through the real verifier


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> CommandVerifier:
    from facegate.config import CommandsConfig

    public = base64.b64encode(ED_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    config = CommandsConfig(hmac_key=HMAC_KEY.hex(), ed25519_public_keys=[public])
    return CommandVerifier(config, DEVICE, tmp_path_factory.mktemp("nonces") / "nonces.db", clock=lambda: NOW)


def expect_rejected(verifier: CommandVerifier, payload: bytes, retained: bool = False) -> CommandRejected:
    try:
        command = verifier.verify(payload, retained)
    except CommandRejected as exc:
        return exc
    raise AssertionError(f"accepted a command nobody signed: {command!r} from {payload[:200]!r}")


command_fields = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(["unlock", "lock", "lockdown_on", "UNLOCK", ""]) | json_values,
        "ts": st.sampled_from([NOW, int(NOW), NOW - 1e6, float("nan"), -1]) | json_values,
        "nonce": st.text(min_size=0, max_size=140) | json_values,
        "alg": st.sampled_from(["hmac-sha256", "ed25519", "none", "HS256"]) | json_values,
        "sig": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64) | st.text(max_size=100) | json_values,
        "device_id": st.sampled_from([DEVICE, "other-door", None]) | json_values,
    },
)


def encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@fuzz(400)
@given(payload=st.binary(max_size=600)
       | st.binary(min_size=4000, max_size=9000)
       | command_fields.map(encode)
       | json_values.map(encode)
       | st.integers(1, 200_000).map(nested)
       | st.integers(1, 200_000).map(lambda d: nested(d, '{"a":', "}")[: -d] + b"1" + b"}" * d)
       | st.text().map(lambda t: t.encode("utf-8", "surrogatepass")),
       retained=st.booleans())
def test_fuzz_command_payloads_are_rejected_never_crash(verifier: CommandVerifier, payload: bytes,
                                                         retained: bool) -> None:
    exc = expect_rejected(verifier, payload, retained)
    assert exc.reason in {"retained", "malformed", "unsigned", "bad_signature", "unknown_action", "expired",
                          "replayed"}


_signed_count = iter(range(10**9))


@fuzz(400)
@given(data=st.data())
def test_fuzz_mutated_signed_commands_never_verify_unless_unchanged(verifier: CommandVerifier, data: Any) -> None:
    """Genuine commands (HMAC or Ed25519), then edited: only an edit that leaves the signed meaning intact
    (key order, whitespace, an unsigned extra field) may pass, and then it is the command that was signed."""
    action = data.draw(st.sampled_from(["unlock", "lock", "lockdown_on", "lockdown_off"]))
    nonce = f"fuzz-{next(_signed_count):012d}"
    kwargs: dict[str, Any] = ({"hmac_key": HMAC_KEY} if data.draw(st.booleans()) else {"ed25519_private_key": ED_KEY})
    signed = sign_command(action, DEVICE, ts=int(NOW), nonce=nonce, **kwargs)
    doc = dict(signed)
    op = data.draw(st.sampled_from(["set", "delete", "bytes"]))
    if op == "set":
        doc[data.draw(st.sampled_from([*sorted(doc), "extra"]))] = data.draw(json_values | st.text(max_size=70))
        payload = encode(doc)
    elif op == "delete":
        del doc[data.draw(st.sampled_from(sorted(doc)))]
        payload = encode(doc)
    else:
        raw = bytearray(encode(doc))
        for _ in range(data.draw(st.integers(1, 3))):
            pos = data.draw(st.integers(0, len(raw) - 1))
            raw[pos] ^= data.draw(st.integers(1, 255))
        payload = bytes(raw)
    try:
        command = verifier.verify(payload, retained=False)
    except CommandRejected:
        return
    assert (command.action, command.ts, command.nonce) == (action, NOW, nonce), payload


def test_huge_and_deep_commands_are_malformed(verifier: CommandVerifier) -> None:
    assert expect_rejected(verifier, b"{" + b'"a":' * 1 + b"1" * 10_000_000 + b"}").reason == "malformed"
    assert expect_rejected(verifier, nested(3000)).reason == "malformed"
    assert expect_rejected(verifier, b"\xff\xfe\xfd{}").reason == "malformed"


# ------------------------------------------------------------------ config files


SECTIONS = {name: sorted(field.annotation.model_fields) for name, field in Config.model_fields.items()  # type: ignore[union-attr]
            if hasattr(field.annotation, "model_fields")}
TOP_KEYS = sorted(k for k in Config.model_fields if k not in SECTIONS)

toml_scalar = (st.integers(-(2**70), 2**70).map(str) | st.floats().map(lambda f: {"nan": "nan", "inf": "inf",
                                                                                  "-inf": "-inf"}.get(str(f), repr(f)))
               | st.booleans().map(lambda b: str(b).lower())
               | st.text(max_size=30).map(lambda s: json.dumps(s))  # a JSON string is a TOML basic string
               | st.sampled_from(['"replay:/nonexistent"', '"0"', '"mock"', '"5"', '"NC"', '"secure"', "[]",
                                  '["security"]', '"1979-05-27T07:32:00Z"', "1979-05-27", "[[1]]", "{a = 1}"]))


@st.composite
def toml_documents(draw: Any) -> str:
    lines = [f"{key} = {draw(toml_scalar)}" for key in draw(st.lists(st.sampled_from([*TOP_KEYS, "bogus"]),
                                                                        max_size=3, unique=True))]
    for section in draw(st.lists(st.sampled_from([*sorted(SECTIONS), "bogus"]), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        keys = [*SECTIONS.get(section, ["x"]), "fsp"]
        for key in draw(st.lists(st.sampled_from(keys), max_size=5, unique=True)):
            lines.append(f"{key} = {draw(toml_scalar)}")
    return "\n".join(lines) + "\n"


@fuzz(300)
@given(document=toml_documents() | st.text(max_size=400).map(str)
       | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_fuzz_config_files_load_or_name_the_problem(tmp_path_factory: pytest.TempPathFactory, document: str) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_text(document, encoding="utf-8")
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path))
        return
    assert isinstance(config, Config)


@pytest.mark.parametrize("content", [b"\xff\xfe[camera]\n", b"device_id = \"\xc3\x28\"\n", b"a = " + nested(100_000),
                                     b"a = " + nested(100_000, "{b = ", "}")[:-100_000] + b"1" + b"}" * 100_000],
                         ids=["utf16_bom", "invalid_utf8", "deep_array", "deep_table"])
def test_undecodable_or_deeply_nested_config_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    """Regression (found by the fuzzer): invalid UTF-8 raised UnicodeDecodeError and deep nesting RecursionError,
    i.e. a traceback and exit code 1 instead of the key/file named and exit code 78."""
    path = tmp_path / "door.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"door\.toml"):
        load_config(path)


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a directory


# ------------------------------------------------------------------ sync: manifests, chunks, bundles


@pytest.fixture(scope="module")
def bundle() -> tuple[bytes, Any]:
    key, keys, _ = keypair()
    persons = [PersonRecord(f"id{i}", f"n{i}", {}, 1.0, 2.0, None,
                            [TemplateRecord(unit_vectors(1, i, 8)[0].tobytes(), {"q": 1.0}, None, 1.0)])
               for i in range(40)]
    return build_bundle(key, kind="full", version=3, base_version=None, embedder_sha256=EMB, persons=persons), keys


def mutate(data: bytes, draw: Any) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(out) - 1)))
        if op == "flip" and out:
            out[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif out:
            del out[pos: pos + draw(st.integers(1, 16))]
    return bytes(out)


manifest_docs = st.fixed_dictionaries(
    {"format": st.sampled_from(["facegate-sync-manifest", "x"]), "format_version": st.sampled_from([1, 2, "1"])},
    optional={k: json_values | st.integers(-1, 2**41) for k in ("size", "chunks", "chunk_bytes", "version",
                                                                 "base_version", "kind", "created")}
    | {"bundle": st.text("0123456789abcdef", min_size=64, max_size=64) | json_values},
)


@fuzz(400)
@given(data=st.data())
def test_fuzz_manifests_parse_or_are_refused(bundle: tuple[bytes, Any], data: Any) -> None:
    genuine = make_manifest(bundle[0], {"version": 3, "kind": "full"}, chunk_bytes=1024).to_bytes()
    payload = data.draw(st.binary(max_size=5000) | manifest_docs.map(encode) | st.just(genuine).map(
        lambda g: mutate(g, data.draw)))
    try:
        manifest = parse_manifest(payload)
    except BundleError:
        return
    assert manifest.chunks == -(-manifest.size // manifest.chunk_bytes) and manifest.chunks <= 4096


@fuzz(400)
@given(data=st.data())
def test_fuzz_chunks_parse_or_are_refused_and_only_matching_ones_are_stored(
        bundle: tuple[bytes, Any], tmp_path_factory: pytest.TempPathFactory, data: Any) -> None:
    manifest = make_manifest(bundle[0], {"version": 3, "kind": "full"}, chunk_bytes=1024)
    chunks = make_chunks(bundle[0], manifest)
    payload = data.draw(st.binary(max_size=3000) | st.sampled_from(chunks).map(lambda c: mutate(c, data.draw)))
    try:
        chunk = parse_chunk(payload)
    except BundleError:
        return
    store = ChunkStore(tmp_path_factory.getbasetemp() / "chunks")
    store.begin(manifest)
    stored = store.add(chunk)
    if stored:  # then it is byte for byte the bundle's own piece at that place
        assert chunk.data == bundle[0][chunk.offset: chunk.offset + len(chunk.data)]
    store.discard()


@fuzz(300)
@given(data=st.data())
def test_fuzz_mutated_bundles_never_verify(bundle: tuple[bytes, Any], data: Any) -> None:
    genuine, keys = bundle
    mutated = mutate(genuine, data.draw)
    try:
        result = verify_bundle(mutated, keys, 1 << 20)
    except BundleError:
        return
    assert mutated == genuine and result.header.version == 3  # a forgery would have been accepted


# ------------------------------------------------------------------ images: files, frames, uploads


def encoded_samples() -> dict[str, bytes]:
    rng = np.random.default_rng(13)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = {}
    for ext in (".jpg", ".png", ".bmp", ".webp", ".ppm"):
        ok, buf = cv2.imencode(ext, image)
        assert ok
        out[ext] = buf.tobytes()
    return out


SAMPLES = encoded_samples()
SMALL_LIMIT = 5000  # pixels: the 40x56 samples (2240) fit, a doubled dimension does not


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A real, complete 1-bit PNG of width x height black pixels: ~110 KB on disk, 2.7 GB as decoded RGB."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A real JPEG whose frame header says width x height: libjpeg would allocate it all and pad the missing data."""
    data = bytearray(SAMPLES[".jpg"])
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    struct.pack_into(">HH", data, pos + 5, height, width)
    return bytes(data)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode pixels fails the test: bombs must be refused from their header alone."""
    import facegate.base.imageio

    def refuse(*_args: Any) -> None:
        raise AssertionError("cv2.imdecode was called on a decompression bomb")

    monkeypatch.setattr(facegate.base.imageio.cv2, "imdecode", refuse)


@pytest.mark.parametrize("bomb", [png_bomb, jpeg_bomb], ids=["png_30000x30000", "jpeg_30000x30000"])
def test_decompression_bombs_are_refused_from_their_header(bomb: Any, no_decoding: None) -> None:
    data = bomb()
    assert image_dimensions(data)[1:] == (30000, 30000)  # type: ignore[index]
    started = time.monotonic()
    with pytest.raises(ImageError, match="30000x30000 pixels is larger than the 50,000,000-pixel limit"):
        decode_image(data, "upload.bin")
    assert time.monotonic() - started < 1.0


def test_a_bomb_in_a_replay_folder_is_a_rejected_frame(tmp_path: Path, no_decoding: None) -> None:
    (tmp_path / "0001.png").write_bytes(png_bomb())
    source = ReplaySource(tmp_path, fps=100)
    source.open()
    with pytest.raises(FrameError, match="refused before decoding"):
        source.read()


def test_cli_enrolment_refuses_a_bomb(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(jpeg_bomb())
    done = subprocess.run([sys.executable, "-m", "facegate.cli", "enroll", "--gallery", str(tmp_path / "g.db"),
                           "--id", "x", str(bomb)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "larger than the 50,000,000-pixel limit" in done.stderr


@pytest.mark.parametrize("ext", sorted(SAMPLES))
def test_each_supported_format_reports_its_size_and_decodes(ext: str) -> None:
    assert image_dimensions(SAMPLES[ext])[1:] == (56, 40)  # type: ignore[index]
    assert decode_image(SAMPLES[ext], ext).shape == (40, 56, 3)


def check_decode(data: bytes) -> None:
    try:
        image = decode_image(data, "fuzz", max_pixels=SMALL_LIMIT)
    except ImageError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= SMALL_LIMIT


def with_dimensions(data: bytes, ext: str, width: int, height: int) -> bytes:
    out = bytearray(data)
    if ext == ".png":
        struct.pack_into(">II", out, 16, width & 0xFFFFFFFF, height & 0xFFFFFFFF)
    elif ext == ".bmp":
        struct.pack_into("<ii", out, 18, width, height)
    elif ext == ".jpg":
        return jpeg_bomb(width & 0xFFFF, height & 0xFFFF)
    return bytes(out)


@fuzz(500)
@given(data=st.data())
def test_fuzz_images_decode_or_are_refused(data: Any) -> None:
    ext = data.draw(st.sampled_from(sorted(SAMPLES)))
    sample = SAMPLES[ext]
    kind = data.draw(st.sampled_from(["random", "prefixed", "truncated", "mutated", "dimensions"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=2000))
    elif kind == "prefixed":  # a real magic number, then anything
        blob = sample[: data.draw(st.integers(2, 40))] + data.draw(st.binary(max_size=2000))
    elif kind == "truncated":
        blob = sample[: data.draw(st.integers(0, len(sample)))]
    elif kind == "mutated":
        blob = mutate(sample, data.draw)
    else:
        blob = with_dimensions(sample, ext, data.draw(st.integers(-(2**31), 2**31 - 1)),
                               data.draw(st.integers(-(2**31), 2**31 - 1)))
    check_decode(blob)


@fuzz(60)
@given(height=st.integers(1, 700), width=st.integers(1, 700), fill=st.sampled_from(["noise", "flat", "stripes"]),
       seed=st.integers(0, 2**32 - 1))
def test_fuzz_frames_of_any_shape_go_through_the_pipeline(pipeline: Any, height: int, width: int, fill: str,
                                                          seed: int) -> None:
    """What a broken camera or a decoded upload can hand the pipeline: any size, flat or noisy pixels."""
    rng = np.random.default_rng(seed)
    if fill == "noise":
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    elif fill == "flat":
        image = np.full((height, width, 3), int(rng.integers(0, 256)), dtype=np.uint8)
    else:
        image = np.zeros((height, width, 3), dtype=np.uint8)
        image[::2] = 255
    results = pipeline.process(image)
    assert isinstance(results, list)
    for r in results:
        assert r.embedding is None or np.isfinite(r.embedding).all()
