"""Encryption at rest (facegate/privacy, docs/privacy.md): a copy of a door's state directory without the key
names no one; a plain door is sealed in place and survives SIGKILL at every step of it; a wrong key refuses."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facegate.cli import main
from facegate.events import Outbox
from facegate.gallery.store import Gallery, NewTemplate
from facegate.journal import Journal
from facegate.privacy.keys import PrivacyKeyError, load_sealer
from facegate.privacy.seal import Sealer, SealError
from facegate.service import Service
from facegate.sync.export import read_persons
from support.privacy import sealer, unit
from support.scenes import make_config, outbox_rows, write_frames

CARD = 3_735_928_559  # 0xDEADBEEF: a number whose bytes would stand out in a file
PEOPLE = [("ada", "Ada Quuxworth", 1_234_567_891), ("bob", "Bartholomew Zyxwert", 2_987_654_321)]


def needles(names: list[str], cards: list[int], templates: list[bytes]) -> dict[str, bytes]:
    """What must not be found: each name (as UTF-8, and its longest word), each card number as text and as the
    big-endian integer SQLite stores, and a 16-byte run from each template."""
    found: dict[str, bytes] = {}
    for name in names:
        found[f"name {name}"] = name.encode()
        found[f"word of {name}"] = max(name.split(), key=len).encode()
    for card in cards:
        found[f"card {card} text"] = str(card).encode()
        found[f"card {card} int"] = card.to_bytes(4, "big")
    for i, blob in enumerate(templates):
        found[f"template {i}"] = blob[32:48]
    return found


def search(folder: Path, what: dict[str, bytes]) -> list[str]:
    """A ``strings``-style scan: every needle in every byte of every file of ``folder``."""
    hits = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits += [f"{label} in {path.name}" for label, needle in what.items() if needle in data]
    return hits


# ------------------------------------------------------------------ the proof: a stolen card


def test_a_copy_of_a_running_doors_state_without_the_key_names_no_one(tmp_path, photos, astro_templates,  # type: ignore[no-untyped-def]
                                                                       pipeline, factory) -> None:
    frames = write_frames(tmp_path / "frames", photos, [("bg", 2), ("astro", 12), ("bg", 25)])
    config = make_config(tmp_path, frames, None)  # MQTT off: every event (with names) stays in the outbox
    assert config.privacy.encrypt and config.privacy.key_source == "auto"  # the default
    config.state_dir.mkdir(parents=True)
    with Gallery(config.gallery_path) as g:  # enrolled before the feature: the first start seals it in place
        g.enroll("astro", astro_templates, pipeline.embedder_sha256, name="Eileen Collins", card_number=CARD)
        for i, (pid, name, card) in enumerate(PEOPLE):
            g.enroll(pid, [NewTemplate(unit(i, pipeline.embedder.dim), {}, f"{pid}.jpg")],
                     pipeline.embedder_sha256, name=name, card_number=card, metadata={"note": name})
    templates = [t.embedding.astype("<f4").tobytes() for t in astro_templates]
    templates += [unit(i, pipeline.embedder.dim).tobytes() for i in range(len(PEOPLE))]
    secret = needles(["Eileen Collins"] + [n for _, n, _ in PEOPLE], [CARD] + [c for _, _, c in PEOPLE], templates)
    assert search(config.state_dir, secret)  # the plain gallery names them all: the scan finds what it seeks

    service = Service(config, pin_factory=factory)
    assert service.sealer is not None and "same card" in service.sealer.protection  # the weakest: it says so
    copies: list[Path] = []

    def copy_while_running(event: dict[str, Any]) -> None:  # the door is mid-run: WAL and SHM files are live
        if event["type"] == "access_granted" or (copies and len(copies) < 2 and event["type"] != "frame"):
            target = tmp_path / f"stolen{len(copies)}"
            shutil.copytree(config.state_dir, target, ignore=shutil.ignore_patterns("privacy.key"))
            copies.append(target)

    service.emitter.add_listener(copy_while_running)
    assert service.run() == 0
    final = tmp_path / "stolen-final"
    shutil.copytree(config.state_dir, final, ignore=shutil.ignore_patterns("privacy.key"))
    copies.append(final)
    assert len(copies) >= 2
    stolen = {p.name for c in copies[:-1] for p in c.iterdir()}
    assert {"gallery.db", "journal.db", "outbox.db", "gallery.db-wal", "journal.db-wal", "outbox.db-wal",
            "outbox.db-shm"} <= stolen, stolen
    for copy in copies:
        assert search(copy, secret) == [], copy.name
        assert not (copy / "privacy.key").exists()

    # The same files with the key are the whole door: the grant with its name, the persons, the outbox.
    with Journal(config.journal_path, readonly=True) as j:
        granted = j.query(types=["access_granted"], person="eileen COLLINS")  # the name, any case
        assert [e["person_id"] for e in granted] == ["astro"] and granted[0]["name"] == "Eileen Collins"
        assert j.count(person="astro") == len(granted)
    with Gallery(config.gallery_path) as g:
        assert g.card_number("astro") == CARD and g.names()["bob"] == "Bartholomew Zyxwert"
    assert any(e.get("name") == "Eileen Collins"
               for _, e in Outbox(config.state_dir / "outbox.db", 1000).peek(limit=1000))
    # Without it, the copy does not open: no key file where the copy says the key is.
    moved = tmp_path / "elsewhere"
    shutil.copytree(final, moved)
    os.rename(config.state_dir / "privacy.key", tmp_path / "privacy.key.kept")
    with pytest.raises(PrivacyKeyError, match="does not exist"):
        Gallery(moved / "gallery.db")


# ------------------------------------------------------------------ values are bound to their place


def test_a_sealed_value_moved_to_another_row_or_opened_with_another_key_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with Gallery(path, sealer(tmp_path)) as g:
        for i, (pid, name, card) in enumerate(PEOPLE):
            g.enroll(pid, [NewTemplate(unit(i), {})], "emb", name=name, card_number=card)
    db = sqlite3.connect(str(path))
    with db:  # an attacker with write access swaps the names of two persons
        ada, bob = (db.execute("SELECT name FROM persons WHERE id = ?", (p,)).fetchone()[0] for p in ("ada", "bob"))
        db.execute("UPDATE persons SET name = ? WHERE id = 'ada'", (bob,))
    db.close()
    with Gallery(path) as g, pytest.raises(SealError, match=r"persons\.name"):
        g.names()
    other = Sealer(b"\x01" * 32, "file:/nowhere")
    with pytest.raises(SealError):
        other.open(ada, "persons.name|ada")


def test_negative_templates_and_kept_grant_faces_are_sealed_too(tmp_path: Path) -> None:
    """The faces of "This was not them" are biometric data like templates: sealed in the gallery and in the
    grant store, and they still open (the index and a mark read them back)."""
    from facegate.recognition.grant_embeddings import GrantEmbeddings

    key = sealer(tmp_path)
    negative, granted = unit(7), unit(8)
    with Gallery(tmp_path / "g.db", key) as g:
        g.enroll("ada", [NewTemplate(unit(0), {})], "emb", name="Ada Lovelace")
        g.add_negative("ada", negative, "emb", source="someone-else.jpg")
        assert g.negative_rows() == [("ada", negative.tobytes())]
        assert g.negatives("ada")[0]["source"] == "someone-else.jpg"
    with GrantEmbeddings(tmp_path / "grants.db", 7, sealer=key) as grants:
        grants.put("event-1", "ada", granted)
        assert np.array_equal(grants.get("event-1").embedding, granted)
    (tmp_path / "privacy.key").unlink()
    what = {"negative": negative.tobytes()[32:48], "granted face": granted.tobytes()[32:48],
            "source": b"someone-else"}
    assert search(tmp_path, what) == []


def test_a_wrong_key_refuses_to_start_with_exit_78_and_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    key = load_sealer("file", state / "privacy.key", state)
    with Gallery(state / "gallery.db", key) as g:
        g.enroll("ada", [NewTemplate(unit(0), {})], "emb", name="Ada Quuxworth", card_number=7)
    with Journal(state / "journal.db", sealer=key) as j:
        j.record({"type": "access_granted", "person_id": "ada", "name": "Ada Quuxworth", "event_id": "e1"})
    before = {p.name: p.read_bytes() for p in state.iterdir() if p.name != "privacy.key"}
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    toml = tmp_path / "door.toml"
    toml.write_text(f'state_dir = "{state}"\n[privacy]\nkey_source = "file"\nkey_file = "{other}"\n'
                    '[door]\npin_factory = "mock"\n[mqtt]\nenabled = false\n')
    err = io.StringIO()
    assert main(["run", "--config", str(toml)], out=io.StringIO(), err=err) == 78
    assert "encrypted with another key" in err.getvalue() and "Nothing was changed" in err.getvalue()
    after = {p.name: p.read_bytes() for p in state.iterdir() if p.name in before}
    assert after.keys() == before.keys()
    assert not (state / "outbox.db").exists()  # refused before any file was made or sealed with the wrong key
    for name in ("gallery.db", "journal.db"):
        assert after[name] == before[name], name
    with Gallery(state / "gallery.db") as g, Journal(state / "journal.db", readonly=True) as j:
        assert g.names() == {"ada": "Ada Quuxworth"} and g.card_number("ada") == 7
        assert [e["event_id"] for e in j.query(person="ada")] == ["e1"]


# ------------------------------------------------------------------ migration: SIGKILL at every step

_MIGRATE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from facegate.events import Outbox
    from facegate.gallery.store import Gallery
    from facegate.journal import Journal
    from facegate.privacy.keys import load_sealer
    kind, path, key, stop = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    def progress(step):
        print(step, flush=True)
        if step == stop:
            os.kill(os.getpid(), signal.SIGKILL)
    sealer = load_sealer("file", key, key.parent)
    opener = {"gallery": lambda: Gallery(path, sealer, progress=progress),
              "journal": lambda: Journal(path, sealer=sealer, progress=progress),
              "outbox": lambda: Outbox(path, 1000, sealer=sealer, progress=progress)}[kind]
    opener().close()
""")

STEPS = {
    "gallery": ["begin", "persons", "templates", "marked", "committed", "vacuumed", "checkpointed", "never"],
    "journal": ["begin", "events", "marked", "committed", "vacuumed", "checkpointed", "never"],
    "outbox": ["begin", "events", "marked", "committed", "vacuumed", "checkpointed", "never"],
}


def _plain(kind: str, path: Path) -> Any:
    """A plain file as a door before the feature wrote it, and what reading it back must give."""
    if kind == "gallery":
        with Gallery(path) as g:
            for i in range(30):
                g.enroll(f"p{i:02d}", [NewTemplate(unit(i), {"q": 0.5}, f"photo of person {i}.jpg"),
                                       NewTemplate(unit(100 + i), {})], "emb", name=f"Person Number{i:02d}",
                         metadata={"i": i}, card_number=50_000 + i)
            g.remove("p29")  # a tombstone in the change log, which must survive the sealing
        return _gallery_state
    if kind == "journal":
        with Journal(path) as j:
            j.record_many([{"type": "access_granted", "person_id": f"p{i % 7}", "name": f"Person Number{i % 7:02d}",
                            "event_id": f"e{i}", "ts": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"}
                           for i in range(300)])
        return _journal_state
    with Outbox(path, 1000) as box:
        for i in range(40):
            box.append({"type": "access_granted", "name": f"Person Number{i:02d}", "event_id": f"e{i}"})
        box.ack_many(range(1, 11))
        box.next_seq()
    return _outbox_state


def _gallery_state(path: Path, s: Sealer | None) -> Any:
    with Gallery(path, s) as g:
        assert g.template_problems(None) == {}
        with g.snapshot() as db:
            changes = db.execute("SELECT * FROM sync_changes ORDER BY person_id").fetchall()
            return g.persons(), read_persons(db, gallery=g), g.version, g.revision, changes


def _journal_state(path: Path, s: Sealer | None) -> Any:
    with Journal(path, sealer=s) as j:
        return j.query(limit=None), j.count(person="Person Number03"), j.count(person="p3")


def _outbox_state(path: Path, s: Sealer | None) -> Any:
    with Outbox(path, 1000, sealer=s) as box:
        return box.peek(limit=1000), box.next_seq()


@pytest.mark.parametrize("kind", ["gallery", "journal", "outbox"])
def test_sealing_in_place_survives_sigkill_at_every_step_with_nothing_lost(tmp_path: Path, kind: str) -> None:
    original = tmp_path / f"{kind}.db"
    state_of = _plain(kind, original)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(original, work / "reference.db")
    expected = state_of(work / "reference.db", None)
    key = tmp_path / "keys" / "privacy.key"
    s = load_sealer("file", key, tmp_path / "keys")
    for stop in STEPS[kind]:
        folder = tmp_path / f"run-{stop}"
        folder.mkdir()
        path = folder / f"{kind}.db"
        shutil.copy(original, path)
        run = subprocess.run([sys.executable, "-c", _MIGRATE, kind, str(path), str(key), stop],
                             capture_output=True, text=True, timeout=120)
        steps = run.stdout.split()
        if stop == "never":
            assert run.returncode == 0, run.stderr
            assert steps == STEPS[kind][:-1]  # every step was reached, so every kill above was real
        else:
            assert run.returncode == -signal.SIGKILL and steps[-1] == stop, (stop, run.stdout, run.stderr)
        # The next start finishes the job: the data is all there, sealed, and no plain copy is left.
        got = state_of(path, s)
        assert got == expected, stop  # persons, templates, change log, versions; events; the outbox's counter
        assert search(folder, {"name": b"Person Number", "template": unit(5).tobytes()[32:48]}) == [], stop
        with pytest.raises(PrivacyKeyError, match="another key"):
            state_of(path, Sealer(b"\x02" * 32, "file:/other"))


def test_a_damaged_sealed_outbox_still_gives_back_its_events(tmp_path, photos, factory) -> None:  # type: ignore[no-untyped-def]
    from support.damage import damage, old_outbox
    from support.scenes import run_service

    frames = write_frames(tmp_path / "frames", photos, [("bg", 3)])
    config = make_config(tmp_path, frames, None)
    box = config.state_dir / "outbox.db"
    old = old_outbox(box, 400)
    Outbox(box, 100_000, sealer=load_sealer("file", config.state_dir / "privacy.key", config.state_dir)).close()
    assert b"old-0001" not in box.read_bytes()  # sealed before the damage
    damage(box, "truncated")
    run_service(config, factory)
    rows = outbox_rows(config)
    notice = next(e for e in rows if e["type"] == "outbox_quarantined")
    recovered = [e for e in rows if str(e["event_id"]).startswith("old-")]
    assert 0 < len(recovered) == notice["recovered"] < len(old)
    assert recovered == [e for e in old if e["event_id"] in {r["event_id"] for r in recovered}]


# ------------------------------------------------------------------ key sources and what doctor says


def test_key_sources_and_the_protection_doctor_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facegate.config import parse_config
    from facegate.doctor import check_privacy

    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = parse_config({"state_dir": str(state)})
    check = check_privacy(config)  # before the first start: no key yet, and nothing sealed that it could open
    assert not check.ok and "no key yet" in check.detail and "lost" not in check.detail and check.fix
    auto = load_sealer("auto", Path("privacy.key"), state)  # no credential, no OTP here: the key file, made 0600
    assert auto.locator == f"file:{state / 'privacy.key'}" and (state / "privacy.key").stat().st_mode & 0o777 == 0o600
    check = check_privacy(config)
    assert not check.ok and "key on the same card: a stolen card is readable" in check.detail and check.fix
    assert "not encrypted" in check_privacy(parse_config({"state_dir": str(state),
                                                          "privacy": {"encrypt": False}})).detail

    # A key file on other media (a tmpfs here) is reported as such.
    if Path("/dev/shm").is_dir() and Path("/dev/shm").stat().st_dev != state.stat().st_dev:
        other = Path("/dev/shm") / f"facegate-test-{os.getpid()}.key"
        try:
            s = load_sealer("file", other, state)
            assert "other media" in s.protection and "same card" not in s.protection
        finally:
            other.unlink(missing_ok=True)

    # A key file others can read is refused, naming the fix.
    loose = tmp_path / "loose.key"
    loose.write_bytes(os.urandom(32))
    loose.chmod(0o644)
    with pytest.raises(PrivacyKeyError, match="chmod 600"):
        load_sealer("file", loose, state)

    # systemd's LoadCredentialEncrypted= hands the service a directory with the decrypted credential: auto
    # prefers it; without a TPM2 the protection is said to be the host key's, on the same card.
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "facegate-key").write_bytes(os.urandom(32))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cred = load_sealer("auto", Path("privacy.key"), state)
    assert cred.locator == "systemd-creds:facegate-key" and cred.key_id != auto.key_id
    tpm = Path("/dev/tpmrm0").exists() or Path("/dev/tpm0").exists()
    assert ("bound to this board" in cred.protection) == tpm
    with Gallery(state / "gallery.db", cred) as g:
        g.enroll("ada", [NewTemplate(unit(0), {})], "emb", name="Ada Quuxworth")
    with Gallery(state / "gallery.db") as g:  # found through the credential the file names
        assert g.names() == {"ada": "Ada Quuxworth"}
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(PrivacyKeyError, match="systemd-creds:facegate-key"):
        Gallery(state / "gallery.db")
    with pytest.raises(PrivacyKeyError, match="systemd-creds"):
        load_sealer("systemd-creds", Path("privacy.key"), state)


def test_a_door_sealing_its_files_asks_systemd_for_more_start_time(tmp_path, photos, factory, monkeypatch,  # type: ignore[no-untyped-def]
                                                                   astro_templates, pipeline) -> None:
    import socket

    frames = write_frames(tmp_path / "frames", photos, [("bg", 2)])
    config = make_config(tmp_path, frames, None)
    config.state_dir.mkdir(parents=True)
    with Gallery(config.gallery_path) as g:
        g.enroll("astro", astro_templates, pipeline.embedder_sha256, name="Eileen Collins")
    address = str(tmp_path / "notify.sock")  # what systemd hands a Type=notify service
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    try:
        assert Service(config, pin_factory=factory).run() == 0
        messages = []
        with contextlib.suppress(TimeoutError):
            while True:
                messages.append(sock.recv(4096).decode())
                sock.settimeout(0.2)
        assert messages[0] == "EXTEND_TIMEOUT_USEC=1800000000"  # before the sealing, before READY
        assert any(m.startswith("READY=1") for m in messages[1:])
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        sock.settimeout(5)
        assert Service(config, pin_factory=factory).run() == 0  # already sealed: no extension asked
        first = sock.recv(4096).decode()
        assert not first.startswith("EXTEND_TIMEOUT_USEC")
    finally:
        sock.close()


def test_doctor_calls_a_missing_key_lost_once_a_file_was_sealed_with_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from facegate.config import parse_config
    from facegate.doctor import check_privacy

    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = parse_config({"state_dir": str(state)})
    sealer = load_sealer("auto", Path("privacy.key"), state)
    with Gallery(config.gallery_path, sealer) as g:
        g.enroll("ada", [NewTemplate(unit(0), {})], "emb", name="Ada Quuxworth")
    (state / "privacy.key").unlink()
    check = check_privacy(config)
    assert not check.ok and "no usable key" in check.detail and "a lost key" in check.detail
    assert "lost key" in check.fix
