"""The template gate at every entry, impossible similarities, and recognition failures said out loud.

Master faces here are what the attack test used: scaled cluster centroids of ordinary face embeddings (real
LFW faces through the shipped models), and templates of the wrong length (4 values instead of 192).
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facegate.base.imageio import read_image
from facegate.cli import main
from facegate.config import parse_config
from facegate.errors import GalleryError
from facegate.events.discovery import discovery_payload
from facegate.gallery.index import EmbeddingIndex
from facegate.gallery.store import Gallery, NewTemplate
from facegate.service import Service
from facegate.sync.bundle import PersonRecord, TemplateRecord, build_bundle
from facegate.sync.export import TEMPLATES_FORMAT, export_bundle
from facegate.sync.receiver import SyncReceiver
from gpiozero.pins.mock import MockFactory
from support.scenes import make_config, write_frames
from support.sync_keys import keypair

from tools.demo import augment

NOW = 1_700_000_000.0


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def faces(pipeline, lfw_dir: Path) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """One real embedding for each of 16 LFW persons."""
    out: dict[str, np.ndarray] = {}
    for folder in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
        results = pipeline.process(read_image(sorted(folder.iterdir())[0]), largest_only=True)
        if results and not results[0].failures:
            out[folder.name] = results[0].embedding
        if len(out) == 16:
            break
    return out


@pytest.fixture(scope="module")
def astro(pipeline, astronaut) -> np.ndarray:  # type: ignore[no-untyped-def]
    return pipeline.process(astronaut, largest_only=True)[0].embedding


def centroid(vectors: list[np.ndarray], norm: float) -> np.ndarray:
    c = np.mean(vectors, axis=0)
    return np.asarray(norm * c / np.linalg.norm(c), dtype="<f4")


def admin_gallery(path: Path, faces: dict[str, np.ndarray], sha: str, n: int = 12) -> Gallery:
    g = Gallery(path)
    for name in list(faces)[:n]:
        g.enroll(name, [NewTemplate(faces[name], {})], sha)
    return g


def templates_file(path: Path, person_id: str, vectors: list[np.ndarray], sha: str) -> Path:
    doc = {"format": TEMPLATES_FORMAT, "format_version": 1, "person_id": person_id, "name": None,
           "metadata": {}, "embedder_sha256": sha,
           "templates": [{"embedding": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode(),
                          "quality": {}, "source": "door", "created_at": NOW} for v in vectors]}
    path.write_text(json.dumps(doc))
    return path


def snapshot(path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(str(path))
    try:
        return db.execute("SELECT person_id, embedding FROM templates ORDER BY id").fetchall()
    finally:
        db.close()


# ------------------------------------------------------------------ import-templates (admin)


def test_import_templates_refuses_a_scaled_centroid(tmp_path, pipeline, faces) -> None:  # type: ignore[no-untyped-def]
    sha = pipeline.embedder_sha256
    admin_gallery(tmp_path / "admin.db", faces, sha).close()
    before = snapshot(tmp_path / "admin.db")
    master = centroid(list(faces.values())[12:], 100.0)
    file = templates_file(tmp_path / "t.json", "mallory", [master], sha)
    code, out, err = run_cli("gallery", "import-templates", "--gallery", str(tmp_path / "admin.db"), str(file))
    assert code == 2 and out == ""
    assert "mallory" in err and "not unit length" in err and "norm 100" in err
    assert snapshot(tmp_path / "admin.db") == before


def test_import_templates_refuses_the_wrong_length_even_into_an_empty_gallery(tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    vector = np.full(4, 0.5, dtype="<f4")  # unit length, but 4 values: the manifest's embedder makes 192
    file = templates_file(tmp_path / "t.json", "shorty", [vector], pipeline.embedder_sha256)
    code, _, err = run_cli("gallery", "import-templates", "--gallery", str(tmp_path / "admin.db"), str(file))
    assert code == 2 and "shorty" in err and "4 values; the embedder makes 192" in err
    assert snapshot(tmp_path / "admin.db") == []


def test_import_templates_takes_a_real_face_and_refuses_a_crowded_one(tmp_path, pipeline, faces, astro,  # type: ignore[no-untyped-def]
                                                                      astronaut) -> None:
    sha = pipeline.embedder_sha256
    g = admin_gallery(tmp_path / "admin.db", faces, sha, n=8)
    # five enrolled "persons" who are in truth the same face: a template like them sits close to all five
    for i in range(5):
        variant = pipeline.process(augment(astronaut, 1 + i, 0.9 + 0.05 * i, bool(i % 2)), largest_only=True)
        g.enroll(f"lookalike{i}", [NewTemplate(variant[0].embedding, {})], sha)
    g.close()
    genuine = templates_file(tmp_path / "g.json", "newcomer", [list(faces.values())[14]], sha)
    code, out, err = run_cli("gallery", "import-templates", "--gallery", str(tmp_path / "admin.db"), str(genuine))
    assert code == 0, err
    assert json.loads(out)["templates_added"] == 1
    crowded = templates_file(tmp_path / "c.json", "hub", [astro], sha)
    code, _, err = run_cli("gallery", "import-templates", "--gallery", str(tmp_path / "admin.db"), str(crowded))
    assert code == 2 and "hub" in err and "master face" in err


# ------------------------------------------------------------------ enrolment


def test_enrol_refuses_scaled_and_wrong_length_templates(tmp_path, faces, pipeline) -> None:  # type: ignore[no-untyped-def]
    sha = pipeline.embedder_sha256
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("ok", [NewTemplate(next(iter(faces.values())), {})], sha, dim=pipeline.embedder.dim)
        with pytest.raises(GalleryError, match=r"person 'big'.*not unit length \(norm 100"):
            g.enroll("big", [NewTemplate(centroid(list(faces.values()), 100.0), {})], sha)
        with pytest.raises(GalleryError, match=r"person 'short'.*4 values; the embedder makes 192"):
            g.enroll("short", [NewTemplate(np.full(4, 0.5, dtype=np.float32), {})], sha)  # dim as recorded
        assert g.counts() == (1, 1)


def test_cli_enrol_into_a_gallery_of_another_size_is_refused(tmp_path, astronaut, pipeline) -> None:  # type: ignore[no-untyped-def]
    from support import write_image

    with Gallery(tmp_path / "g.db") as g:  # a gallery made of 4-value templates (no dimension recorded)
        g.enroll("short", [NewTemplate(np.full(4, 0.5, dtype=np.float32), {})], pipeline.embedder_sha256)
    photo = write_image(tmp_path / "a.png", astronaut)
    code, _, err = run_cli("enroll", "--gallery", str(tmp_path / "g.db"), "--id", "astro", str(photo))
    assert code == 2 and "4-value templates; this embedder makes 192" in err


# ------------------------------------------------------------------ signed bundles (door)


def bundle_with(key: Any, persons: list[tuple[str, np.ndarray]], sha: str, version: int,
                base: int | None = None) -> bytes:
    records = [PersonRecord(pid, pid, {}, NOW, NOW, None, [TemplateRecord(np.asarray(v, "<f4").tobytes(), {}, None,
                                                                          NOW)]) for pid, v in persons]
    return build_bundle(key, kind="full" if base is None else "delta", version=version, base_version=base,
                        embedder_sha256=sha, persons=records)


class Receiver:
    def __init__(self, tmp: Path, public: str, sha: str) -> None:
        config = parse_config({"device_id": "d1", "state_dir": str(tmp / "state"), "mqtt": {"enabled": False},
                               "sync": {"public_keys": [public]}})
        self.path = config.gallery_path
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.receiver = SyncReceiver(config, sha, lambda t, **f: self.events.append((t, f)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for t, f in self.events if t == kind]


@pytest.mark.parametrize("bad", ["scaled", "short"])
def test_a_bundle_with_one_bad_template_is_refused_whole(tmp_path, pipeline, faces, bad) -> None:  # type: ignore[no-untyped-def]
    sha = pipeline.embedder_sha256
    key, _, public = keypair()
    good = [(name, v) for name, v in list(faces.items())[:3]]
    door = Receiver(tmp_path, public, sha)
    door.receiver.start()
    try:
        assert door.receiver.process(bundle_with(key, good, sha, 1), "usb") is not None
        assert len(door.of("gallery_updated")) == 1
        before = snapshot(door.path)
        if bad == "scaled":
            evil = [*good, ("mallory", centroid(list(faces.values())[3:], 100.0))]
            data = bundle_with(key, evil, sha, 2)
        else:  # every template 4 values long, header dim 4: applied by the old code, then nobody got in
            data = bundle_with(key, [(n, np.full(4, 0.5, "<f4")) for n, _ in good[:1]] + [
                ("shorty", np.full(4, 0.5, "<f4"))], sha, 2)
        door.receiver.process(data, "usb")
        rejected = door.of("gallery_rejected")
        assert len(rejected) == 1 and rejected[0]["reason"] == "bad_template"
        named = "mallory" if bad == "scaled" else good[0][0]
        assert f"person '{named}'" in rejected[0]["detail"]
        assert len(door.of("gallery_updated")) == 1
        assert snapshot(door.path) == before
    finally:
        door.receiver.stop()


def test_a_delta_with_a_scaled_template_is_refused(tmp_path, pipeline, faces) -> None:  # type: ignore[no-untyped-def]
    sha = pipeline.embedder_sha256
    key, _, public = keypair()
    names = list(faces)
    door = Receiver(tmp_path, public, sha)
    door.receiver.start()
    try:
        door.receiver.process(bundle_with(key, [(n, faces[n]) for n in names[:3]], sha, 1), "usb")
        before = snapshot(door.path)
        delta = bundle_with(key, [(names[0], centroid([faces[n] for n in names[4:]], 100.0))], sha, 2, base=1)
        door.receiver.process(delta, "usb")
        assert [r["reason"] for r in door.of("gallery_rejected")] == ["bad_template"]
        assert f"person '{names[0]}'" in door.of("gallery_rejected")[0]["detail"]
        assert snapshot(door.path) == before
    finally:
        door.receiver.stop()


def test_gallery_apply_cli_refuses_a_bad_template(tmp_path, pipeline, faces) -> None:  # type: ignore[no-untyped-def]
    key, _, public = keypair()
    bundle = tmp_path / "b.fgsync"
    bundle.write_bytes(bundle_with(key, [("mallory", centroid(list(faces.values()), 100.0))],
                                   pipeline.embedder_sha256, 1))
    config = tmp_path / "door.toml"
    config.write_text(f'device_id = "d1"\nstate_dir = "{tmp_path / "state"}"\n[sync]\npublic_keys = ["{public}"]\n')
    code, out, err = run_cli("gallery", "apply", str(bundle), "--config", str(config))
    assert code == 2 and json.loads(out)["rejected"] == "bad_template" and "mallory" in err


def test_export_refuses_an_admin_gallery_holding_a_bad_template(tmp_path, faces, pipeline) -> None:  # type: ignore[no-untyped-def]
    key, _, _ = keypair()
    g = admin_gallery(tmp_path / "admin.db", faces, pipeline.embedder_sha256, n=2)
    db = sqlite3.connect(str(tmp_path / "admin.db"))
    with db:  # written behind the gallery's back, as a bad tool or a tampered file would
        db.execute("UPDATE templates SET embedding = ? WHERE person_id = ?",
                   (centroid(list(faces.values()), 100.0).tobytes(), list(faces)[1]))
    db.close()
    with pytest.raises(GalleryError, match=f"person '{list(faces)[1]}'.*not unit length"):
        export_bundle(g, key)
    g.close()


# ------------------------------------------------------------------ the gallery at start, and doctor


@pytest.mark.parametrize("bad", ["scaled", "short"])
def test_a_gallery_holding_a_bad_template_does_not_start_and_doctor_is_red(tmp_path, pipeline, faces, photos,  # type: ignore[no-untyped-def]
                                                                          bad) -> None:
    frames = write_frames(tmp_path / "frames", photos, [("bg", 2)])
    config = make_config(tmp_path, frames, None)
    config.state_dir.mkdir(parents=True)
    with Gallery(config.gallery_path) as g:
        g.enroll("good", [NewTemplate(next(iter(faces.values())), {})], pipeline.embedder_sha256)
    blob = centroid(list(faces.values()), 100.0).tobytes() if bad == "scaled" else np.full(4, 0.5, "<f4").tobytes()
    db = sqlite3.connect(str(config.gallery_path))
    with db:
        db.execute("INSERT INTO persons (id, created_at, updated_at) VALUES ('mallory', 0, 0)")
        db.execute("INSERT INTO templates (person_id, embedding, embedder_sha256, created_at) VALUES (?, ?, ?, 0)",
                   ("mallory", blob, pipeline.embedder_sha256))
    db.close()
    toml = tmp_path / "door.toml"
    toml.write_text(f'device_id = "t1"\nstate_dir = "{config.state_dir}"\n[camera]\nsource = "replay:{frames}"\n'
                    '[door]\nrelay_pin = 17\npin_factory = "mock"\n[mqtt]\nenabled = false\n'
                    '[liveness]\nenabled = false\n')
    for _ in range(2):  # and again: a restart does not make it go away
        code, _, err = run_cli("run", "--config", str(toml))
        assert code == 2 and "person 'mallory'" in err and "does not start" in err
    code, out, _ = run_cli("doctor", "--config", str(toml))
    checks = {c["check"]: c for c in map(json.loads, out.splitlines())}
    assert code == 1
    assert not checks["gallery"]["ok"] and "person 'mallory'" in checks["gallery"]["detail"]
    if bad == "short":
        assert not checks["recognition"]["ok"]


# ------------------------------------------------------------------ the matcher and the frame loop


def test_the_matcher_refuses_an_impossible_similarity(astro) -> None:  # type: ignore[no-untyped-def]
    from facegate.gallery.index import MatchError

    index = EmbeddingIndex(["evil", "fine"], np.stack([100.0 * astro, astro]).astype(np.float32))
    with pytest.raises(MatchError, match=r"impossible similarity .* person 'evil'"):
        index.search(astro)
    nan = EmbeddingIndex(["nan"], np.full((1, 192), np.nan, dtype=np.float32))
    with pytest.raises(MatchError):
        nan.search(astro)
    assert EmbeddingIndex(["fine"], astro[None].astype(np.float32)).search(astro)[0].person_id == "fine"


def run_with_index(tmp_path: Path, photos: Any, astro_vec: np.ndarray, pipeline: Any, index_rows: np.ndarray,
                   frames: int = 12) -> tuple[Service, list[dict[str, Any]], list[dict[str, Any]]]:
    folder = write_frames(tmp_path / "frames", photos, [("bg", 2), ("astro", frames), ("bg", 2)])
    config = make_config(tmp_path, folder, None)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with Gallery(config.gallery_path) as g:  # a sound gallery: the service starts
        g.enroll("someone", [NewTemplate(np.roll(astro_vec, 7), {})], pipeline.embedder_sha256)
    factory = MockFactory()
    service = Service(config, pin_factory=factory)
    # What the gate keeps out, put straight into the matcher (belt and braces must hold on their own).
    service.index = EmbeddingIndex(["evil"] * len(index_rows), np.asarray(index_rows, dtype=np.float32))
    seen: list[dict[str, Any]] = []
    service.emitter.add_listener(seen.append)
    statuses: list[dict[str, Any]] = []
    service.communicator.publish_state = lambda name, value: statuses.append(value) if name == "status" else None  # type: ignore[method-assign]
    service.run()
    factory.reset()
    return service, seen, statuses


def test_an_impossible_similarity_is_a_recognition_error_and_never_a_grant(tmp_path, photos, astro,  # type: ignore[no-untyped-def]
                                                                           pipeline) -> None:
    _, seen, statuses = run_with_index(tmp_path, photos, astro, pipeline, (100.0 * astro)[None])
    kinds = [e["type"] for e in seen]
    assert "access_granted" not in kinds
    errors = [e for e in seen if e["type"] == "recognition_error"]
    assert len(errors) == 1 and "impossible similarity" in errors[0]["error"]
    assert any(s.get("recognition", {}).get("ok") is False for s in statuses)


def test_recognition_failing_on_every_frame_is_loud_once(tmp_path, photos, astro, pipeline) -> None:  # type: ignore[no-untyped-def]
    _, seen, statuses = run_with_index(tmp_path, photos, astro, pipeline, np.full((1, 4), 0.5), frames=20)
    errors = [e for e in seen if e["type"] == "recognition_error"]
    assert len(errors) == 1, [e["type"] for e in seen]  # one event for the episode, not one per frame
    assert "ValueError" in errors[0]["error"]
    assert "access_granted" not in [e["type"] for e in seen]
    final = statuses[-1]  # the status published at shutdown
    assert final["recognition"]["ok"] is False and "ValueError" in final["recognition"]["error"]
    assert final["recognition"]["since"] == errors[0]["ts"]


def test_recognition_health_reports_state_changes_only() -> None:
    from facegate.recognition.health import RecognitionHealth

    events: list[tuple[str, dict[str, Any]]] = []
    health = RecognitionHealth(lambda kind, **f: events.append((kind, f)), recover_frames=3)
    health.succeeded(1)
    assert events == []
    for _ in range(50):
        health.failed(ValueError("matmul"), "f.jpg")
        health.succeeded(1)  # a face now and then goes through: still failing, no flapping
        health.succeeded(0)  # frames without a face say nothing
    assert [k for k, _ in events] == ["recognition_error"] and not health.ok
    for _ in range(3):
        health.succeeded(2)
    assert [k for k, _ in events] == ["recognition_error", "recognition_ok"] and health.ok
    assert events[1][1]["failed_frames"] == 50


def test_home_assistant_has_a_recognition_problem_sensor() -> None:
    config = parse_config({"device_id": "d1", "state_dir": "/tmp/x"})
    cmps = discovery_payload(config.mqtt, "d1")["cmps"]
    sensor = cmps["recognition"]
    assert sensor["p"] == "binary_sensor" and sensor["device_class"] == "problem"
    assert "'recognition'" in sensor["value_template"] and sensor["state_topic"].endswith("/status")
    assert cmps["camera"]["device_class"] == "problem"  # the existing ones unchanged

