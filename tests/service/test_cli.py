"""The CLI contract: JSON on stdout, reasons on stderr, exit 0 ok / 2 bad input naming the file."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from facegate.cli import main
from support import ROOT, write_image


def run(*argv: str | Path) -> tuple[int, list[dict], str]:  # type: ignore[type-arg]
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def _augment(image: np.ndarray, angle: float, gain: float, flip: bool) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 3), angle, 1.0)
    out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    out = np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return out[:, ::-1].copy() if flip else out


@pytest.fixture(scope="module")
def images(tmp_path_factory, astronaut, no_face_image) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("images")
    paths = {
        "astro": write_image(d / "astro.jpg", astronaut),
        "astro_a": write_image(d / "astro_a.jpg", _augment(astronaut, 6, 0.8, False)),
        "astro_b": write_image(d / "astro_b.jpg", _augment(astronaut, -5, 1.15, True)),
        "astro_c": write_image(d / "astro_c.png", _augment(astronaut, 3, 0.7, True)),
        "coffee": write_image(d / "coffee.jpg", no_face_image),
    }
    face = astronaut[0:256, 100:356]
    two = np.full((300, 560, 3), 110, dtype=np.uint8)
    two[20:276, 10:266] = face
    two[40:260, 330:550] = cv2.resize(face, (220, 220), interpolation=cv2.INTER_AREA)
    paths["two"] = write_image(d / "two_faces.jpg", two)
    data = paths["astro"].read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    paths["truncated"] = d / "truncated.jpg"
    (d / "notes.jpg").write_text("this is not an image\n")
    paths["text"] = d / "notes.jpg"
    return paths


def test_embed_outputs_unit_embedding_of_largest_face(images) -> None:  # type: ignore[no-untyped-def]
    code, lines, _ = run("embed", images["astro"])
    assert code == 0 and len(lines) == 1
    rec = lines[0]
    assert rec["image"].endswith("astro.jpg")
    assert len(rec["embedding"]) == 192
    assert np.linalg.norm(rec["embedding"]) == pytest.approx(1.0, abs=1e-3)
    x, y, w, _h = rec["box"]
    assert 100 < x < 300 and 0 < y < 200 and 60 < w < 200
    assert rec["quality"]["failures"] == []


def test_embed_all_faces(images) -> None:  # type: ignore[no-untyped-def]
    code, lines, _ = run("embed", "--all-faces", images["two"])
    assert code == 0
    assert len(lines[0]["faces"]) == 2


@pytest.mark.parametrize(
    ("key", "reason"),
    [("coffee", "no face found"), ("truncated", "truncated"), ("text", "not a decodable image")],
)
def test_embed_bad_inputs_are_reported_per_file(images, key, reason) -> None:  # type: ignore[no-untyped-def]
    code, lines, err = run("embed", images["astro"], images[key])
    assert code == 2
    assert "embedding" in lines[0]
    assert reason in lines[1]["error"] and lines[1]["image"] == str(images[key])
    assert str(images[key].name) in err or reason in err


def test_enroll_identify_remove(tmp_path, images) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "g.db"
    code, lines, err = run("enroll", "--gallery", db, "--id", "astro", "--name", "Eileen Collins",
                           images["astro"], images["astro_a"], images["coffee"])
    assert code == 0, err
    assert lines[0]["templates_added"] == 2
    assert lines[0]["rejected"] == [{"image": str(images["coffee"]), "reason": "no face found"}]

    code, lines, _ = run("identify", "--gallery", db, images["astro_b"], images["astro_c"], images["coffee"])
    assert code == 0
    assert [r["faces"][0]["person_id"] for r in lines[:2]] == ["astro", "astro"]
    assert lines[2]["faces"] == []

    code, lines, _ = run("gallery", "list", "--gallery", db)
    assert code == 0 and lines[0]["id"] == "astro" and lines[0]["templates"] == 2

    code, lines, _ = run("gallery", "remove", "--gallery", db, "astro")
    assert code == 0 and lines[0]["templates_removed"] == 2
    code, _, err = run("identify", "--gallery", db, images["astro_b"])
    assert code == 2 and "gallery is empty" in err


def test_enroll_several_faces_needs_largest(tmp_path, images) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "g.db"
    code, lines, _ = run("enroll", "--gallery", db, "--id", "x", images["two"])
    assert code == 2 and "2 faces found" in lines[0]["rejected"][0]["reason"]
    assert not db.exists() or run("gallery", "list", "--gallery", db)[1] == []
    code, lines, _ = run("enroll", "--gallery", db, "--id", "x", "--largest", images["two"])
    assert code == 0 and lines[0]["templates_added"] == 1


def test_identify_missing_gallery(tmp_path, images) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("identify", "--gallery", tmp_path / "none.db", images["astro"])
    assert code == 2 and "no such gallery" in err


def test_verify_same_person(images) -> None:  # type: ignore[no-untyped-def]
    code, lines, _ = run("verify", images["astro"], images["astro_b"])
    assert code == 0
    assert lines[0]["match"] is True and lines[0]["similarity"] > lines[0]["threshold"]
    code, _, err = run("verify", images["astro"], images["coffee"])
    assert code == 2 and "no face found" in err


def _models_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "models"
    shutil.copytree(ROOT / "models", dest)
    return dest


def _embedder_file(models: Path) -> Path:
    manifest = json.loads((models / "manifest.json").read_text())
    entry = next(m for m in manifest["models"] if m["role"] == "embedder" and m.get("default"))
    return models / entry["file"]


def test_missing_model_names_the_file(tmp_path, images) -> None:  # type: ignore[no-untyped-def]
    models = _models_copy(tmp_path)
    target = _embedder_file(models)
    target.unlink()
    code, _, err = run("embed", "--models", models, images["astro"])
    assert code == 2 and "model file missing" in err and str(target) in err


def test_checksum_mismatch_names_the_file(tmp_path, images) -> None:  # type: ignore[no-untyped-def]
    models = _models_copy(tmp_path)
    target = _embedder_file(models)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    code, _, err = run("embed", "--models", models, images["astro"])
    assert code == 2 and "checksum mismatch" in err and str(target) in err


def test_console_script_exit_codes(images) -> None:  # type: ignore[no-untyped-def]
    exe = Path(sys.executable).with_name("facegate")
    if not exe.exists():
        pytest.skip("facegate console script not installed in this environment")
    ok = subprocess.run([exe, "embed", images["astro"]], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and json.loads(ok.stdout)["embedding"]
    bad = subprocess.run([exe, "embed", images["text"]], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "not a decodable image" in bad.stderr


def test_enroll_refuses_an_existing_id_without_update(tmp_path, images) -> None:  # type: ignore[no-untyped-def]
    """Enrolling someone under an id already in use renamed that person without a word; now it is refused,
    naming the id, and nothing changes until --update says it is meant."""
    db = tmp_path / "g.db"
    code, _, err = run("enroll", "--gallery", db, "--id", "astro", "--name", "Eileen Collins", images["astro"])
    assert code == 0, err
    code, lines, err = run("enroll", "--gallery", db, "--id", "astro", "--name", "Somebody Else", images["astro_a"])
    assert code == 2 and lines == []
    assert "'astro' is already enrolled as 'Eileen Collins'" in err and "--update" in err
    [person] = run("gallery", "list", "--gallery", db)[1]
    assert person["name"] == "Eileen Collins" and person["templates"] == 1

    code, lines, err = run("enroll", "--gallery", db, "--id", "astro", "--name", "Eileen M. Collins", "--update",
                           images["astro_a"])
    assert code == 0 and lines[0]["templates_added"] == 1, err
    [person] = run("gallery", "list", "--gallery", db)[1]
    assert person["name"] == "Eileen M. Collins" and person["templates"] == 2


def test_cli_commands_do_not_print_litert_delegate_notice(tmp_path, images) -> None:  # type: ignore[no-untyped-def]
    """LiteRT's C++ 'Created TensorFlow Lite XNNPACK delegate for CPU.' reached stderr of every command."""
    import subprocess
    import sys
    from pathlib import Path

    facegate = str(Path(sys.executable).with_name("facegate"))
    proc = subprocess.run([facegate, "embed", str(images["astro"]), str(tmp_path / "missing.png")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and '"embedding"' in proc.stdout
    assert "XNNPACK" not in proc.stderr
    assert "missing.png" in proc.stderr  # the command's own messages still arrive


def test_without_delegate_notice_keeps_every_other_native_line(capfd) -> None:  # type: ignore[no-untyped-def]
    import os

    from facegate.vision.runtime import without_delegate_notice

    with without_delegate_notice():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: a real runtime error\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "ERROR: a real runtime error\nafter\n"
