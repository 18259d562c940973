"""Data-subject rights (facegate/rights, docs/privacy.md): the admin's plain gallery copy, consent required at
every enrolment path, subject export, and retention that removes people long past their validity."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facegate.cli import main
from facegate.errors import FacegateError, GalleryError
from facegate.events import Outbox
from facegate.gallery.store import Gallery, NewTemplate
from facegate.journal import Journal
from facegate.privacy.keys import PrivacyKeyError
from facegate.rights.cli import consent_arg
from facegate.service import Service
from facegate.sync.export import read_persons
from support.privacy import sealer, unit
from support.scenes import make_config, write_frames

# ------------------------------------------------------------------ the admin's plain copy


def test_gallery_decrypt_writes_a_plain_copy_that_opens_without_a_key(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with Gallery(path, sealer(tmp_path)) as g:
        g.enroll("ada", [NewTemplate(unit(0), {}, "ada.jpg")], "emb", name="Ada Quuxworth", card_number=9,
                 metadata={"team": "night"})
        g.add_negative("ada", unit(3), "emb", source="not-ada.jpg")  # negatives are sealed too
        before = g.persons()
    out = tmp_path / "plain.db"
    res = io.StringIO()
    assert main(["gallery", "decrypt", "--gallery", str(path), "--out", str(out)], out=res, err=io.StringIO()) == 0
    assert json.loads(res.getvalue())["persons"] == 1
    (tmp_path / "privacy.key").unlink()  # the plain copy needs no key
    assert b"Ada Quuxworth" in out.read_bytes()
    with Gallery(out) as plain:
        assert plain.sealer is None and plain.persons() == before
        assert [n["source"] for n in plain.negatives("ada")] == ["not-ada.jpg"]
        assert plain.template_problems(None) == {}  # a door could start on it
        assert plain.negative_rows() == [("ada", unit(3).tobytes())]
        with plain.snapshot() as db:
            assert read_persons(db)[0].templates[0].embedding == unit(0).tobytes()
    with pytest.raises(PrivacyKeyError):
        Gallery(path)
    assert main(["gallery", "decrypt", "--gallery", str(path), "--out", str(tmp_path / "x.db")],
                out=io.StringIO(), err=io.StringIO()) == 78
    with pytest.raises(GalleryError, match="exists"):
        from facegate.rights.decrypt import decrypt_gallery
        decrypt_gallery(Gallery(out), out)


# ------------------------------------------------------------------ consent, subject access, retention


def test_require_consent_refuses_enrolment_without_it_in_cli_bulk_and_bundles(tmp_path: Path, pipeline: Any) -> None:
    from facegate.enrolment.bulk import enrol_photos
    from facegate.sync.apply import apply_bundle
    from facegate.sync.bundle import BundleError, verify_bundle
    from support.sync_keys import EMB, keypair

    path = tmp_path / "door.db"
    with Gallery(path, sealer(tmp_path)) as g:
        g.set_require_consent(True)  # as the service records [privacy] require_consent = true
        with pytest.raises(GalleryError, match="no consent recorded"):
            g.enroll("ada", [NewTemplate(unit(0), {})], EMB, name="Ada Quuxworth")
        assert g.persons() == []  # nothing half-enrolled
        with pytest.raises(GalleryError, match="at"):
            g.enroll("ada", [NewTemplate(unit(0), {})], EMB, consent={"at": "yesterday", "how": "form",
                                                                         "notice_version": "v1"})
        g.enroll("ada", [NewTemplate(unit(0), {})], EMB, name="Ada Quuxworth",
                 consent={"at": "2026-03-01T09:00:00+01:00", "how": "signed form", "notice_version": "v3"})
        assert g.person("ada")["metadata"]["consent"] == {"at": "2026-03-01T08:00:00Z", "how": "signed form",
                                                          "notice_version": "v3"}
        g.enroll("ada", [NewTemplate(unit(1), {})], EMB)  # more photos later: the consent stays
        with pytest.raises(GalleryError, match="requires consent"):  # bulk: refused before any work
            enrol_photos(pipeline, g, [])

        # a bundle from an admin gallery without consent is refused as a whole
        admin = tmp_path / "admin.db"
        with Gallery(admin) as a:
            a.enroll("bob", [NewTemplate(unit(2), {})], EMB, name="Bob")
            from facegate.sync.export import export_bundle

            private, public, _ = keypair()
            data = export_bundle(a, private).data
        bundle = verify_bundle(data, public, 10_000_000)
        with pytest.raises(BundleError, match="require_consent"):
            apply_bundle(g, bundle, EMB)
        assert [p["id"] for p in g.persons()] == ["ada"]

    # the CLI: half a consent is an error; the full one is recorded
    with pytest.raises(FacegateError, match="both"):
        consent_arg(argparse.Namespace(consent_how="form", consent_notice=None, consent_at=None))
    assert consent_arg(argparse.Namespace(consent_how="form", consent_notice="v1", consent_at=None))["how"] == "form"


def test_subject_export_gives_record_policy_template_dates_and_journal_rows_without_vectors(tmp_path: Path) -> None:
    from facegate.access.policy import AccessPolicy

    s = sealer(tmp_path)
    path, jpath = tmp_path / "g.db", tmp_path / "j.db"
    with Gallery(path, s) as g:
        g.enroll("ada", [NewTemplate(unit(0), {"sharpness": 0.9}, "ada.jpg"), NewTemplate(unit(1), {})], "emb",
                 name="Ada Quuxworth", card_number=77, consent={"at": "2026-01-01T00:00:00Z", "how": "form",
                                                                "notice_version": "v2"})
        g.enroll("bob", [NewTemplate(unit(2), {})], "emb", name="Bob")
        with AccessPolicy(g) as policy:
            policy.set_person("ada", valid_until="2027-01-01T00:00:00Z", groups=["staff"])
    with Journal(jpath, sealer=s) as j:
        j.record_many([{"type": "access_granted", "person_id": "ada", "name": "Ada Quuxworth", "event_id": "e1"},
                       {"type": "access_granted", "person_id": "bob", "name": "Bob", "event_id": "e2"},
                       {"type": "unknown_face", "event_id": "e3"}])
    out = io.StringIO()
    assert main(["gallery", "subject-export", "--id", "ada", "--gallery", str(path), "--journal", str(jpath)],
                out=out, err=io.StringIO()) == 0
    data = json.loads(out.getvalue())
    assert data["record"]["name"] == "Ada Quuxworth" and data["record"]["card_number"] == 77
    assert data["record"]["consent"]["notice_version"] == "v2"
    assert data["policy"]["groups"] == ["staff"] and data["policy"]["valid_until"].startswith("2027-01-01")
    assert data["templates"]["count"] == 2 and data["templates"]["items"][0]["source"] == "ada.jpg"
    assert all("vector" not in t and t["created_at"].endswith("Z") for t in data["templates"]["items"])
    assert [e["event_id"] for e in data["journal"]["events"]] == ["e1"]  # not Bob's, not the unknown face
    out = io.StringIO()
    assert main(["gallery", "subject-export", "--id", "ada", "--gallery", str(path), "--with-vectors"],
                out=out, err=io.StringIO()) == 0
    vector = json.loads(out.getvalue())["templates"]["items"][0]["vector"]
    assert np.allclose(vector, unit(0), atol=1e-6)
    assert main(["gallery", "subject-export", "--id", "nobody", "--gallery", str(path)],
                out=io.StringIO(), err=io.StringIO()) == 2


def test_retention_removes_people_long_past_their_validity_with_journal_rows_and_one_event_each(
        tmp_path: Path) -> None:
    import datetime as dt

    from facegate.access.policy import AccessPolicy
    from facegate.rights.retention import Retention

    s = sealer(tmp_path)
    path, jpath = tmp_path / "g.db", tmp_path / "j.db"
    with Gallery(path, s) as g:
        for i, pid in enumerate(["gone", "recent", "forever", "valid"]):
                g.enroll(pid, [NewTemplate(unit(i), {})], "emb", name=f"Name {pid}")
        with AccessPolicy(g) as policy:
            policy.set_person("gone", valid_until="2026-01-01T00:00:00Z")  # 40 days before "now"
            policy.set_person("recent", valid_until="2026-01-25T00:00:00Z")  # 16 days before
            policy.set_person("valid", valid_until="2026-12-31T00:00:00Z")
    with Journal(jpath, sealer=s) as j:
        j.record_many([{"type": "access_granted", "person_id": pid, "name": f"Name {pid}", "event_id": pid}
                       for pid in ("gone", "recent", "forever")])
    now = dt.datetime(2026, 2, 10, tzinfo=dt.UTC)
    events: list[tuple[str, dict[str, Any]]] = []
    retention = Retention(30, True, clock=lambda: now)
    with Gallery(path) as g, Journal(jpath) as j:
        assert retention.due()
        assert retention.run(g, j, lambda kind, **f: events.append((kind, f))) == ["gone"]
        assert not retention.due()  # the next run is an hour later
        assert sorted(g.names()) == ["forever", "recent", "valid"]
        assert [e["person_id"] for e in j.query(limit=None)] == ["forever", "recent"]
    assert events == [("person_expired", {"person_id": "gone", "valid_until": "2026-01-01T00:00:00+00:00",
                                          "templates_removed": 1, "events_purged": 1,
                                          "retention_days_after_validity": 30})]
    assert Retention(None, True).run(Gallery(path), None, lambda *a, **k: None) == []  # off: nothing happens




@pytest.mark.parametrize("synchronised", [True, False])
def test_the_running_door_expires_people_and_records_the_consent_requirement(tmp_path, photos, factory,  # type: ignore[no-untyped-def]
                                                                          astro_templates, pipeline,
                                                                          synchronised) -> None:
    from facegate.access.clock import ClockProbe, KernelSync, SystemClock
    from facegate.access.policy import AccessPolicy

    # The wall clock as a door sees it with (or without, e.g. a Pi without RTC before NTP) a synchronised kernel.
    probe = ClockProbe(kernel=lambda: KernelSync(synchronised, f"kernel: synchronised={synchronised}"),
                       timesync_flag=tmp_path / "run" / "synchronized", rtc_root=tmp_path / "no-rtc")

    frames = write_frames(tmp_path / "frames", photos, [("bg", 120)])  # 4 s at 30 fps: past the first check
    config = make_config(tmp_path, frames, None, privacy={"retention_days_after_validity": 30,
                                                          "require_consent": True})
    config.state_dir.mkdir(parents=True)
    consent = {"at": "2020-01-01T00:00:00Z", "how": "form", "notice_version": "v1"}
    with Gallery(config.gallery_path) as g:
        g.enroll("astro", astro_templates, pipeline.embedder_sha256, name="Eileen Collins", consent=consent)
        g.enroll("left", [NewTemplate(unit(9, pipeline.embedder.dim), {})], pipeline.embedder_sha256,
                 name="Long Gone", consent=consent)
        with AccessPolicy(g) as policy:
            policy.set_person("left", valid_until="2020-06-30T00:00:00Z")
            policy.set_person("astro", valid_until="2999-01-01T00:00:00Z")
    service = Service(config, pin_factory=factory, clock=SystemClock(probe))
    assert service.gallery.require_consent  # every other writer of this gallery now refuses without consent
    assert service.run() == 0
    events = [e for _, e in Outbox(config.state_dir / "outbox.db", 1000).peek(limit=1000)]
    expired = [e for e in events if e["type"] == "person_expired"]
    # An untrusted clock (it could be years ahead) never deletes anyone: retention waits for a trusted one.
    assert [(e["person_id"], e["templates_removed"]) for e in expired] == ([("left", 1)] if synchronised else [])
    with Gallery(config.gallery_path) as g:
        assert sorted(g.names()) == (["astro"] if synchronised else ["astro", "left"]) and g.require_consent
        with pytest.raises(GalleryError, match="no consent"):
            g.enroll("new", [NewTemplate(unit(3, pipeline.embedder.dim), {})], pipeline.embedder_sha256)
