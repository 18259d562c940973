"""``facegate gallery keygen|export|publish|apply|export-templates|import-templates``: fleet sync on the command line.

All but ``apply`` are the admin side; ``apply`` is a door taking a bundle from removable media or a script.

Kept here rather than in :mod:`facegate.cli` so the sync contract lives in one package; ``facegate.cli``
only attaches these subcommands to its ``gallery`` parser. Same conventions: JSON results on stdout,
messages on stderr, exit 0 ok, 2 bad input, 1 when the broker could not be reached or did not acknowledge.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from facegate.base.output import Output
from facegate.base.private_files import FILE_MODE

__all__ = ["add_gallery_sync_commands"]

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


def _write_atomically(path: Path, data: bytes) -> None:
    """Temporary file + rename: a web server or a publisher never reads a half-written bundle.

    Owner-only (0600) whatever the umask: bundles and template files carry biometric templates and names.
    Serving one over HTTP is a deliberate step (copy it to the web root, or chmod it there).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # a leftover temporary file keeps its old mode under O_CREAT
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _existing_gallery(path: Path) -> Any:
    from facegate.errors import GalleryError
    from facegate.gallery.store import Gallery

    if not path.is_file():
        raise GalleryError(f"{path}: no such gallery")
    return Gallery(path)


def cmd_keygen(args: argparse.Namespace, io: Output) -> int:
    from facegate.sync.keys import generate_keypair, key_id, public_key_b64

    key = generate_keypair(args.private, args.public, overwrite=args.force)
    public = key.public_key()
    io.result({"private": str(args.private), "public": str(args.public), "public_key": public_key_b64(public),
               "key_id": key_id(public).hex()})
    io.message(f"put the public key into each door's config: [sync] public_keys = [\"{public_key_b64(public)}\"]")
    return EXIT_OK


def cmd_export(args: argparse.Namespace, io: Output) -> int:
    from facegate.sync.export import export_bundle
    from facegate.sync.keys import load_private_key

    key = load_private_key(args.key)
    started = time.perf_counter()
    with _existing_gallery(args.gallery) as gallery:
        result = export_bundle(gallery, key, version=args.version, base=args.base)
    _write_atomically(args.out, result.data)
    io.result({"out": str(args.out), **result.as_dict(), "seconds": round(time.perf_counter() - started, 3)})
    return EXIT_OK


def cmd_publish(args: argparse.Namespace, io: Output) -> int:
    from facegate.errors import FacegateError
    from facegate.sync.chunks import make_manifest
    from facegate.sync.mqtt import MqttTarget, PublishError, publish_bundle

    password = args.password
    try:
        if args.password_file is not None:
            password = Path(args.password_file).read_text().strip()
        data = Path(args.bundle).read_bytes()
    except OSError as exc:
        raise FacegateError(f"{exc.filename}: {exc.strerror}") from None
    try:  # bad input, before any network: a chunk size doors would refuse for this bundle
        make_manifest(data, {}, args.chunk_bytes)
    except ValueError as exc:
        raise FacegateError(f"--chunk-bytes {args.chunk_bytes}: {exc}") from None
    target = MqttTarget(host=args.host, port=args.port, protocol=args.protocol, username=args.username,
                        password=password, tls=args.tls or bool(args.ca_file), ca_file=args.ca_file,
                        cert_file=args.cert_file, key_file=args.key_file)
    started = time.perf_counter()
    try:
        summary = publish_bundle(data, target, args.topic, chunk_bytes=args.chunk_bytes, client_id=args.client_id,
                                 timeout=args.timeout)
    except PublishError as exc:
        io.message(f"publish failed: {exc}")
        return EXIT_ERROR
    io.result({**summary, "seconds": round(time.perf_counter() - started, 3)})
    return EXIT_OK


def cmd_apply(args: argparse.Namespace, io: Output) -> int:
    """The receiver's checks and transaction, without the service: provisioning a door offline (a USB stick)
    or from a script. A running service on the same gallery picks the change up within seconds."""
    from facegate.config import load_config
    from facegate.errors import FacegateError
    from facegate.gallery.templates import embedder_dim
    from facegate.sync.apply import apply_file
    from facegate.sync.bundle import BundleError
    from facegate.sync.keys import load_public_key_file, public_key_b64
    from facegate.vision.models import Manifest

    config = load_config(args.config)
    keys = list(config.sync.public_keys) + [public_key_b64(load_public_key_file(p)) for p in args.public_key]
    if not keys:
        raise FacegateError(f"{args.config}: no trusted key: set [sync] public_keys or pass --public-key FILE")
    embedder = Manifest.load(config.models.dir).get("embedder", config.models.embedder)
    gallery_path = config.gallery_path
    gallery_path.parent.mkdir(parents=True, exist_ok=True)  # a new door: the service would make state_dir too
    started = time.perf_counter()
    try:
        result = apply_file(gallery_path, args.bundle, keys, embedder.sha256, config.sync.max_bundle_bytes,
                            embedder_dim=embedder_dim(embedder))
    except BundleError as exc:
        io.result({"bundle": str(args.bundle), "gallery": str(gallery_path), "rejected": exc.reason,
                   "detail": exc.detail})
        io.message(f"{args.bundle}: bundle refused, gallery unchanged: {exc}")
        return EXIT_BAD_INPUT
    io.result({"bundle": str(args.bundle), "gallery": str(gallery_path), **dataclasses.asdict(result),
               "seconds": round(time.perf_counter() - started, 3)})
    return EXIT_OK


def cmd_export_templates(args: argparse.Namespace, io: Output) -> int:
    from facegate.sync.export import export_person_templates

    with _existing_gallery(args.gallery) as gallery:
        doc = export_person_templates(gallery, args.id)
    _write_atomically(args.out, (json.dumps(doc, indent=1) + "\n").encode())
    io.result({"out": str(args.out), "person_id": args.id, "templates": len(doc["templates"]),
               "embedder_sha256": doc["embedder_sha256"]})
    io.message("unsigned: import it into the admin gallery, then export and publish a signed bundle")
    return EXIT_OK


def _embedder_dim(models: Path | None, doc: Any) -> int | None:
    """The dimension of the file's embedder per the models' manifest; None when the manifest does not list it
    (the admin gallery's own templates then say what size is right)."""
    from facegate.errors import ModelError
    from facegate.gallery.templates import embedder_dim_for
    from facegate.vision.models import Manifest

    sha = doc.get("embedder_sha256") if isinstance(doc, dict) else None
    if not isinstance(sha, str):
        return None
    try:
        return embedder_dim_for(Manifest.load(models).entries, sha)
    except ModelError:
        return None


def cmd_import_templates(args: argparse.Namespace, io: Output) -> int:
    from facegate.errors import GalleryError
    from facegate.gallery.store import Gallery
    from facegate.sync.export import import_person_templates

    try:
        doc = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as exc:
        raise GalleryError(f"{args.file}: cannot read a templates file: {exc}") from None
    with Gallery(args.gallery) as gallery:
        person_id, added = import_person_templates(gallery, doc, str(args.file), _embedder_dim(args.models, doc))
        version = gallery.version
    io.result({"person_id": person_id, "templates_added": added, "gallery_version": version})
    return EXIT_OK


def add_gallery_sync_commands(gallery: Any) -> None:
    """Attach the fleet-sync subcommands to the ``facegate gallery`` subparsers object."""
    p = gallery.add_parser("keygen", help="create an Ed25519 key pair for signing gallery bundles")
    p.add_argument("--private", type=Path, required=True, help="private key file to create (PEM, mode 0600)")
    p.add_argument("--public", type=Path, required=True, help="public key file (base64, for sync.public_keys)")
    p.add_argument("--force", action="store_true", help="overwrite an existing private key file")
    p.set_defaults(func=cmd_keygen)

    p = gallery.add_parser("export", help="write a signed bundle: a full snapshot, or a delta with --base")
    p.add_argument("--gallery", type=Path, required=True, help="the admin gallery")
    p.add_argument("--key", type=Path, required=True, help="private key file from 'gallery keygen'")
    p.add_argument("--out", type=Path, required=True, help="bundle file to write")
    p.add_argument("--version", type=int, default=None,
                   help="bundle version (default: the gallery's; a higher one moves the gallery's counter up)")
    p.add_argument("--base", type=int, default=None, help="write a delta against this earlier version")
    p.set_defaults(func=cmd_export)

    p = gallery.add_parser("publish", help="publish a bundle to MQTT: retained manifest and chunks, QoS 1")
    p.add_argument("bundle", type=Path)
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--topic", required=True, help="the doors' sync.topic, e.g. facegate/fleet/gallery")
    p.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1")
    p.add_argument("--tls", action="store_true", help="connect with TLS (implied by --ca-file)")
    p.add_argument("--ca-file", type=Path, default=None)
    p.add_argument("--cert-file", type=Path, default=None)
    p.add_argument("--key-file", type=Path, default=None)
    p.add_argument("--username", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--password-file", type=Path, default=None)
    p.add_argument("--client-id", default=None)
    p.add_argument("--chunk-bytes", type=int, default=256 * 1024, help="chunk size (default 262144)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the broker's PUBACKs")
    p.set_defaults(func=cmd_publish)

    p = gallery.add_parser("apply", help="verify a signed bundle and apply it to this door's gallery (offline)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--config", type=Path, required=True,
                   help="the door's TOML config: gallery path, [sync] public_keys and max_bundle_bytes, embedder")
    p.add_argument("--public-key", type=Path, action="append", default=[],
                   help="also trust this public key file (from 'gallery keygen'); repeatable")
    p.set_defaults(func=cmd_apply)

    p = gallery.add_parser("export-templates", help="one person's templates as unsigned JSON (door enrolment)")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_export_templates)

    p = gallery.add_parser("import-templates", help="add an export-templates file to the admin gallery")
    p.add_argument("--gallery", type=Path, required=True, help="the admin gallery")
    p.add_argument("--models", type=Path, default=None,
                   help="models directory whose manifest gives the embedder's dimension (default: the shipped one)")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_import_templates)
