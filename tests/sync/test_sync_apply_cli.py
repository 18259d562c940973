"""`facegate gallery apply`: a door takes a signed bundle from a file (offline provisioning), same checks as sync."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from facegate.cli import main
from facegate.gallery.store import Gallery
from facegate.vision.models import Manifest
from support.sync_keys import add_random_persons, content, synced_part


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


@pytest.fixture
def setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    """An admin gallery made with the shipped embedder, its key pair, a signed full bundle and a door config."""
    embedder = Manifest.load().get("embedder").sha256
    admin_db = tmp_path / "admin.db"
    with Gallery(admin_db) as admin:
        add_random_persons(admin, 12, emb=embedder)
    paths = {"admin": admin_db, "key": tmp_path / "admin.key", "pub": tmp_path / "admin.pub",
             "bundle": tmp_path / "v1.bundle", "config": tmp_path / "door.toml", "door": tmp_path / "state" / "g.db"}
    assert run(capsys, "gallery", "keygen", "--private", str(paths["key"]), "--public", str(paths["pub"]))[0] == 0
    assert run(capsys, "gallery", "export", "--gallery", str(admin_db), "--key", str(paths["key"]),
               "--out", str(paths["bundle"]))[0] == 0
    paths["config"].write_text(f'device_id = "door1"\nstate_dir = "{tmp_path / "state"}"\n'
                               '[gallery]\npath = "g.db"\n[mqtt]\nenabled = false\n')
    return paths


def test_a_signed_bundle_provisions_a_door_and_cannot_be_replayed(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "gallery", "apply", str(setup["bundle"]), "--config", str(setup["config"]),
                       "--public-key", str(setup["pub"]))
    assert code == 0, out
    assert (out["persons"], out["templates"], out["kind"], out["gallery"]) == (12, 12, "full", str(setup["door"]))
    assert synced_part(content(setup["door"])) == synced_part(content(setup["admin"]))

    before = content(setup["door"])
    code, out, err = run(capsys, "gallery", "apply", str(setup["bundle"]), "--config", str(setup["config"]),
                         "--public-key", str(setup["pub"]))
    assert (code, out["rejected"]) == (2, "rollback")
    assert "gallery unchanged" in err
    assert content(setup["door"]) == before


def test_keys_from_the_config_are_trusted_without_a_sync_source(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    public = setup["pub"].read_text().strip()
    with setup["config"].open("a") as fh:
        fh.write(f'[sync]\npublic_keys = ["{public}"]\n')
    code, out, _ = run(capsys, "gallery", "apply", str(setup["bundle"]), "--config", str(setup["config"]))
    assert (code, out["persons"]) == (0, 12)


def test_no_trusted_key_or_a_stranger_key_leaves_the_door_untouched(setup, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "gallery", "apply", str(setup["bundle"]), "--config", str(setup["config"]))
    assert (code, out) == (2, None)
    assert "no trusted key" in err and str(setup["config"]) in err

    other = tmp_path / "other.pub"
    assert run(capsys, "gallery", "keygen", "--private", str(tmp_path / "other.key"), "--public", str(other))[0] == 0
    code, out, _ = run(capsys, "gallery", "apply", str(setup["bundle"]), "--config", str(setup["config"]),
                       "--public-key", str(other))
    assert (code, out["rejected"]) == (2, "unknown_key")
    assert not setup["door"].exists()  # refused before the gallery is even opened


def test_an_oversized_or_missing_bundle_is_refused_before_reading(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    with setup["config"].open("a") as fh:
        fh.write("[sync]\nmax_bundle_bytes = 1024\n")
    code, out, _ = run(capsys, "gallery", "apply", str(setup["bundle"]), "--config", str(setup["config"]),
                       "--public-key", str(setup["pub"]))
    assert (code, out["rejected"]) == (2, "too_large")

    missing = setup["bundle"].with_name("nope.bundle")
    code, out, err = run(capsys, "gallery", "apply", str(missing), "--config", str(setup["config"]),
                         "--public-key", str(setup["pub"]))
    assert code == 2 and str(missing) in err and "cannot read" in err


def test_a_bad_door_config_stops_with_exit_78(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    with setup["config"].open("a") as fh:
        fh.write("[sync]\nmax_bundle_size = 1024\n")
    code, _, err = run(capsys, "gallery", "apply", str(setup["bundle"]), "--config", str(setup["config"]))
    assert code == 78 and "max_bundle_size" in err
