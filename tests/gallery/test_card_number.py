"""Per-person card numbers: schema migration of existing galleries, the CLI, and signed sync bundles."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from facegate.cli import main
from facegate.errors import GalleryError
from facegate.gallery.store import Gallery
from facegate.sync import bundle as bundle_module
from facegate.sync.apply import apply_bundle
from facegate.sync.bundle import BundleError, verify_bundle
from facegate.sync.export import export_bundle
from support.sync_keys import EMB, add_random_persons, keypair

MAX = 64 * 1024 * 1024

# The persons table as galleries were created before card numbers existed.
OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE persons (id TEXT PRIMARY KEY, name TEXT, metadata TEXT NOT NULL DEFAULT '{}',
                      created_at REAL NOT NULL, updated_at REAL NOT NULL);
INSERT INTO meta VALUES ('version', '7'), ('revision', '9'), ('schema', '1');
INSERT INTO persons VALUES ('old', 'Old Timer', '{}', 1.0, 1.0);
"""


def run(*argv: str) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_an_existing_gallery_gains_the_column_and_keeps_its_versions(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    with Gallery(path) as g:
        assert g.version == 7 and g.revision == 9  # nothing a door or fleet sync would read as a change
        assert g.persons()[0]["card_number"] is None
        g.set_card_number("old", 4242)
        assert g.card_number("old") == 4242 and g.version == 8
    with Gallery(path) as g:  # opening again migrates nothing twice
        assert g.card_number("old") == 4242


def test_card_numbers_are_unique_and_validated(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        add_random_persons(g, 2)
        a, b = (p["id"] for p in g.persons())
        g.set_card_number(a, 100)
        with pytest.raises(GalleryError, match=f"already belongs to '{a}'"):
            g.set_card_number(b, 100)
        with pytest.raises(GalleryError, match="must be an integer"):
            g.set_card_number(b, -1)
        with pytest.raises(GalleryError, match="no person 'nobody'"):
            g.set_card_number("nobody", 5)
        g.set_card_number(a, None)
        g.set_card_number(b, 100)
        assert [p["card_number"] for p in g.persons()] == [None, 100]


def test_cli_sets_lists_and_refuses(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        add_random_persons(g, 1)
        pid = g.persons()[0]["id"]
    code, out, _ = run("gallery", "card", "--gallery", str(path), pid, "12345")
    assert code == 0 and out[0]["card_number"] == 12345
    code, out, _ = run("gallery", "list", "--gallery", str(path))
    assert code == 0 and out[0]["card_number"] == 12345
    with pytest.raises(SystemExit) as exc:  # argparse: exit 2 with the reason on stderr
        run("gallery", "card", "--gallery", str(path), pid, "70000")
    assert exc.value.code == 2
    code, out, err = run("gallery", "card", "--gallery", str(path), "ghost", "1")
    assert code == 2 and "no person 'ghost'" in err
    code, out, _ = run("gallery", "card", "--gallery", str(path), pid, "none")
    assert code == 0 and out[0]["card_number"] is None


def test_enroll_refuses_a_card_number_no_format_carries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["enroll", "--gallery", str(tmp_path / "g.db"), "--id", "x", "--card-number", "65536", "a.jpg"])
    assert exc.value.code == 2 and "does not fit the supported card formats" in capsys.readouterr().err


def test_full_and_delta_bundles_carry_card_numbers(tmp_path: Path) -> None:
    private, keys, _ = keypair()
    admin, door = Gallery(tmp_path / "admin.db"), Gallery(tmp_path / "door.db")
    add_random_persons(admin, 3)
    ids = [p["id"] for p in admin.persons()]
    admin.set_card_number(ids[0], 11)
    full = export_bundle(admin, private)
    apply_bundle(door, verify_bundle(full.data, keys, MAX), EMB)
    assert door.card_number(ids[0]) == 11 and door.card_number(ids[1]) is None
    admin.set_card_number(ids[1], 22)
    admin.set_card_number(ids[0], None)
    delta = export_bundle(admin, private, base=full.version)
    assert delta.persons == 2
    apply_bundle(door, verify_bundle(delta.data, keys, MAX), EMB)
    assert door.card_number(ids[0]) is None and door.card_number(ids[1]) == 22


def test_a_bundle_from_before_card_numbers_still_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private, keys, _ = keypair()
    admin, door = Gallery(tmp_path / "admin.db"), Gallery(tmp_path / "door.db")
    add_random_persons(admin, 2)
    original = bundle_module._person_json

    def without_card(p: Any) -> dict[str, Any]:
        doc = original(p)
        del doc["card_number"]
        return doc

    monkeypatch.setattr(bundle_module, "_person_json", without_card)
    data = export_bundle(admin, private).data
    monkeypatch.undo()
    result = apply_bundle(door, verify_bundle(data, keys, MAX), EMB)
    assert result.persons == 2 and all(p["card_number"] is None for p in door.persons())


def test_a_bundle_giving_two_people_one_card_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private, keys, _ = keypair()
    admin = Gallery(tmp_path / "admin.db")
    add_random_persons(admin, 2)
    original = bundle_module._person_json
    monkeypatch.setattr(bundle_module, "_person_json", lambda p: {**original(p), "card_number": 54321})
    data = export_bundle(admin, private).data
    with pytest.raises(BundleError, match="card_number") as refused:
        verify_bundle(data, keys, MAX)
    assert "54321" not in refused.value.detail  # the detail goes to MQTT in gallery_rejected: no card number
