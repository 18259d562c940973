"""Bulk enrolment from a folder or a zip: the same gates and reasons as `facegate enroll`, hostile zips refused."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from facegate.access.policy import AccessPolicy
from facegate.base.imageio import image_dimensions
from facegate.cli import main
from facegate.enrolment.bulk import enrol_photos
from facegate.enrolment.cli import ProgressBar
from facegate.enrolment.sources import (
    BulkInputError,
    FolderPhotos,
    ZipLimits,
    ZipPhotos,
    parse_people_csv,
)
from facegate.gallery.store import Gallery
from support import write_image

from tools.demo import augment, shipped_photos


def run(*argv: str | Path) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


@pytest.fixture(scope="module")
def staff(tmp_path_factory, no_face_image) -> Path:  # type: ignore[no-untyped-def]
    """A site's folder of staff photos: registry-shipped faces only (the astronaut and Grace Hopper)."""
    astronaut, hopper, _ = shipped_photos()
    d = tmp_path_factory.mktemp("staff")
    (d / "astro").mkdir()
    write_image(d / "astro" / "front.jpg", astronaut)
    write_image(d / "astro" / "tilted.png", augment(astronaut, 5, 0.9, True))
    write_image(d / "astro" / "coffee.jpg", no_face_image)  # no face
    (d / "astro" / "notes.txt").write_text("badge 42\n")
    (d / "hopper").mkdir()
    write_image(d / "hopper" / "portrait.jpg", hopper)
    data = (d / "hopper" / "portrait.jpg").read_bytes()
    (d / "hopper" / "half.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (d / "nobody").mkdir()
    write_image(d / "nobody" / "cup.jpg", no_face_image)
    (d / ".DS_Store").write_bytes(b"\0\0")
    (d / "people.csv").write_text("id,name,groups\nastro,Eileen Collins,staff;security\nhopper,Grace Hopper,\n"
                                  "ghost,Casper,\n")
    return d


def test_folder_enrols_everyone_it_can_and_says_why_each_refused_photo_was_refused(staff, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gallery = tmp_path / "g.db"
    code, lines, err = run("enroll", "--gallery", gallery, "--folder", staff)
    assert code == 2  # 'nobody' has no usable photo: the contract says not everyone made it
    summary = lines[0]
    assert summary["ok"] is False and summary["persons_enrolled"] == 2 and summary["templates_added"] == 3
    assert summary["images"] == 7 and summary["accepted"] == 3
    reasons = {r["image"]: r["reason"] for r in summary["refused"]}
    assert reasons["astro/coffee.jpg"] == "no face found"
    assert reasons["astro/notes.txt"] == "not an image file (.txt)"
    assert "truncated JPEG" in reasons["hopper/half.jpg"]
    assert reasons["nobody/cup.jpg"] == "no face found"
    assert summary["persons_refused"] == [{"person_id": "nobody", "reason": "no photo was accepted"}]
    assert summary["csv_without_photos"] == ["ghost"]
    assert "astro/coffee.jpg: rejected: no face found" in err and "enrolling: 7/7 photos" in err
    with Gallery(gallery) as g:
        people = {p["id"]: p for p in g.persons()}
        assert set(people) == {"astro", "hopper"} and people["astro"]["name"] == "Eileen Collins"
        assert people["astro"]["templates"] == 2 and people["hopper"]["name"] == "Grace Hopper"
    with AccessPolicy(gallery) as pol:
        astro = pol.get_person("astro")
        assert astro is not None and astro.groups == ("staff", "security")
        assert pol.get_person("hopper") is None  # empty groups cell: left as it was

    # the same photo refused by single-person enrolment gives the same reason
    code, lines, _ = run("enroll", "--gallery", tmp_path / "single.db", "--id", "x", staff / "astro" / "coffee.jpg")
    assert code == 2 and lines[0]["rejected"][0]["reason"] == "no face found"

    # and the enrolled people are recognised
    code, lines, _ = run("identify", "--gallery", gallery, staff / "astro" / "front.jpg")
    assert code == 0 and lines[0]["faces"][0]["person_id"] == "astro"


def test_exit_0_when_everyone_is_enrolled_and_groups_keep_the_rest_of_the_policy(staff, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "ok"
    shutil.copytree(staff, folder)
    shutil.rmtree(folder / "nobody")
    gallery = tmp_path / "g.db"
    code, lines, _ = run("enroll", "--gallery", gallery, "--folder", folder, "--quiet")
    assert code == 0 and lines[0]["ok"] is True
    with AccessPolicy(gallery) as pol:
        pol.set_person("astro", groups=["old"], valid_until="2030-01-01T00:00:00+00:00")
    code, lines, _ = run("enroll", "--gallery", gallery, "--folder", folder, "--quiet")
    assert code == 0
    with AccessPolicy(gallery) as pol:
        astro = pol.get_person("astro")
        assert astro is not None and astro.groups == ("staff", "security") and astro.valid_until is not None


def test_bad_folder_or_csv_stops_before_anything_is_enrolled(staff, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "bad"
    shutil.copytree(staff, folder)
    (folder / "people.csv").write_text("astro,Eileen,staff,extra\n")
    gallery = tmp_path / "g.db"
    code, _, err = run("enroll", "--gallery", gallery, "--folder", folder)
    assert code == 2 and "people.csv:1: 4 columns" in err and not gallery.exists()
    code, _, err = run("enroll", "--gallery", gallery, "--folder", tmp_path / "missing")
    assert code == 2 and "not a folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run("enroll", "--gallery", gallery, "--folder", tmp_path / "empty")
    assert code == 2 and "no photos found" in err
    code, _, err = run("enroll", "--gallery", gallery, "--folder", staff, "--id", "astro")
    assert code == 2 and "drop --id" in err
    code, _, err = run("enroll", "--gallery", gallery)
    assert code == 2 and "needs --id" in err


def test_symlinked_person_folders_and_loops(staff, tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    site.mkdir()
    (site / "astro").symlink_to(staff / "astro", target_is_directory=True)
    (site / "hopper").mkdir()
    (site / "hopper" / "portrait.jpg").symlink_to(staff / "hopper" / "portrait.jpg")
    (site / "hopper" / "again").symlink_to(site / "hopper", target_is_directory=True)  # a loop
    source = FolderPhotos(site)
    assert sorted(source.person_ids()) == ["astro", "hopper"] and source.total == 5
    with Gallery(tmp_path / "g.db") as g:
        result = enrol_photos(pipeline, g, source, total=source.total)
    assert [p["person_id"] for p in result.enrolled] == ["astro", "hopper"] and result.accepted == 3


def test_people_csv_forms() -> None:
    people = parse_people_csv("# staff list\nalice,Alice A.,day;night\nbob\n\ncarol,,\n")
    assert people["alice"].name == "Alice A." and people["alice"].groups == ("day", "night")
    assert people["bob"].name is None and people["bob"].groups is None and people["carol"].groups is None
    with pytest.raises(BulkInputError, match="appears twice"):
        parse_people_csv("a,A\na,B\n")
    with pytest.raises(BulkInputError, match="not a plain name"):
        parse_people_csv("../x,X\n")


def test_progress_bar_on_a_terminal_redraws_one_line() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = ProgressBar(stream)
    for i in range(1, 5):
        bar._last_draw = 0.0
        bar(i, 4, f"p/{i}.jpg")
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and "[" + "#" * 30 + "] 4/4" in text


# ------------------------------------------------------------------ zip uploads


def zip_of(folder: Path, path: Path, prefix: str = "staff/") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, prefix + f.relative_to(folder).as_posix())
    return path


def test_zip_gives_the_same_result_as_the_folder(staff, tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    archive = zip_of(staff, tmp_path / "staff.zip")  # everything under one top folder, as zipping a folder gives
    with ZipPhotos(archive) as photos, Gallery(tmp_path / "z.db") as g:
        assert photos.total == 7 and set(photos.people) == {"astro", "hopper", "ghost"}
        from_zip = enrol_photos(pipeline, g, photos, photos.people, total=photos.total).as_dict()
    source = FolderPhotos(staff)
    with Gallery(tmp_path / "f.db") as g:
        from_folder = enrol_photos(pipeline, g, source, source.people, total=source.total).as_dict()
    assert from_zip == from_folder
    code, lines, _ = run("enroll", "--gallery", tmp_path / "cli.db", "--zip", archive, "--quiet")
    assert code == 2 and lines[0]["persons_enrolled"] == 2


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 64


def _mark_encrypted(archive: Path, name: bytes) -> None:
    """Set the 'encrypted' flag bit in the member's local and central headers."""
    data = bytearray(archive.read_bytes())
    at = data.find(name)
    while at != -1:
        for signature, name_offset, flag_offset in ((b"PK\x03\x04", 30, 6), (b"PK\x01\x02", 46, 8)):
            start = at - name_offset
            if start >= 0 and data[start:start + 4] == signature:
                data[start + flag_offset] |= 0x1
        at = data.find(name, at + 1)
    archive.write_bytes(bytes(data))


def test_hostile_zip_members_are_refused_one_by_one(staff, tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    good = (staff / "astro" / "front.jpg").read_bytes()
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("astro/front.jpg", good)
        zf.writestr("../../etc/cron.d/x.jpg", good)  # zip-slip
        zf.writestr("/abs/olute.jpg", good)
        zf.writestr("astro/../../up.jpg", good)
        zf.writestr("C:/windows/x.jpg", good)
        zf.writestr("bomb/zeros.jpg", b"\0" * (30 * 1024 * 1024))  # 30 MiB of zeros: ~1000:1
        zf.writestr("bomb/dense.jpg", b"\0" * (2 * 1024 * 1024))
        link = zipfile.ZipInfo("astro/link.jpg")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/shadow")
        zf.writestr("astro/locked.jpg", good)  # marked encrypted below (zipfile cannot write encryption)
        zf.writestr("giant/huge.png", _png_header(100_000, 100_000))  # a gigapixel declared in 100 bytes
        zf.writestr("loose.jpg", good)
    _mark_encrypted(archive, b"astro/locked.jpg")
    with ZipPhotos(archive, ZipLimits(max_ratio=100)) as photos, Gallery(tmp_path / "g.db") as g:
        result = enrol_photos(pipeline, g, photos, photos.people, total=photos.total)
        assert [p["id"] for p in g.persons()] == ["astro"]
    reasons = {r["image"]: r["reason"] for r in result.refused}
    for name in ("../../etc/cron.d/x.jpg", "/abs/olute.jpg", "astro/../../up.jpg", "C:/windows/x.jpg"):
        assert reasons[name] == "unsafe path in archive", name
    assert "larger than 20 MiB" in reasons["bomb/zeros.jpg"]
    assert "zip bomb" in reasons["bomb/dense.jpg"]
    assert reasons["astro/link.jpg"] == "symbolic link in archive"
    assert reasons["astro/locked.jpg"] == "encrypted member"
    assert "10000 megapixels" in reasons["giant/huge.png"]
    assert reasons["loose.jpg"] == "not inside a person's folder"
    assert result.accepted == 1 and not any(Path(p).exists() for p in ("/abs/olute.jpg", tmp_path / "up.jpg"))


def test_archives_too_big_or_with_too_many_members_are_refused_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(51):
            zf.writestr(f"p{i}/x.jpg", b"x")
    with pytest.raises(BulkInputError, match="51 entries; at most 50"):
        ZipPhotos(many, ZipLimits(max_members=50))
    with pytest.raises(BulkInputError, match="bytes uncompressed"):
        ZipPhotos(many, ZipLimits(max_total_bytes=10))
    (tmp_path / "not.zip").write_bytes(b"PK\3\4 nope")
    with pytest.raises(BulkInputError, match="not a readable zip"):
        ZipPhotos(tmp_path / "not.zip")
    assert ZipLimits().max_members == 10_000  # the console's defaults


def test_photo_sizes_are_read_from_real_headers(staff) -> None:  # type: ignore[no-untyped-def]
    from facegate.enrolment.sources import check_photo_bytes

    assert image_dimensions((staff / "astro" / "front.jpg").read_bytes()) == ("JPEG", 512, 512)
    assert image_dimensions((staff / "astro" / "tilted.png").read_bytes()) == ("PNG", 512, 512)
    assert check_photo_bytes((staff / "astro" / "front.jpg").read_bytes()) is None
    assert "size can be read" in (check_photo_bytes(b"GIF89a") or "")


def _tiny_giants() -> dict[str, bytes]:
    """Files of a few hundred bytes that OpenCV decodes (by content, whatever the name) into hundreds of
    megapixels: measured, the 1 kB BMP took 2.3 GB of memory and a 140 kB TIFF 1 GB."""
    palette = b"\0\0\0\0" * 256
    offset = 14 + 40 + len(palette)
    bmp = (b"BM" + struct.pack("<IHHI", offset + 2, 0, 0, offset)
           + struct.pack("<IiiHHIIiiII", 40, 20000, 20000, 1, 8, 1, 2, 2835, 2835, 256, 0) + palette + b"\0\1")
    tiff = b"II*\0" + struct.pack("<IH", 8, 2) + struct.pack("<HHII", 256, 4, 1, 12000) \
        + struct.pack("<HHII", 257, 4, 1, 12000) + b"\0\0\0\0"
    webp = b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8X" + struct.pack("<I", 10) + b"\0\0\0\0" \
        + (15999).to_bytes(3, "little") + (15999).to_bytes(3, "little")
    pgm = b"P5\n30000 30000\n255\n" + b"\0" * 16
    return {"bmp": bmp, "tiff": tiff, "webp": webp, "pgm": pgm}


def test_every_format_opencv_decodes_is_sized_before_decoding() -> None:
    from facegate.enrolment.sources import check_photo_bytes

    for kind, data in _tiny_giants().items():
        reason = check_photo_bytes(data)
        assert reason is not None, f"a {len(data)}-byte {kind} declaring a giant image would be decoded"
    for ext in (".bmp", ".webp", ".png", ".jpg", ".ppm"):
        ok, encoded = cv2.imencode(ext, np.zeros((48, 64, 3), np.uint8))
        assert ok
        assert image_dimensions(encoded.tobytes())[1:] == (64, 48), ext  # type: ignore[index]
        assert check_photo_bytes(encoded.tobytes()) is None, ext
    ok, tiff = cv2.imencode(".tiff", np.zeros((48, 64, 3), np.uint8))
    assert ok and check_photo_bytes(tiff.tobytes()) is not None  # no header reader for TIFF: never decoded


# ------------------------------------------------------------------ real people (../shared, when present)


def test_bulk_enrol_real_people_and_recognise_held_out_photos(lfw_dir, tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    """LFW's own layout is one folder per person: enrol all but one photo of each, identify the one held out."""
    folder, held_out = tmp_path / "site", {}
    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 4)[:12]
    for person in people:
        photos = sorted(person.glob("*.jpg"))
        (folder / person.name).mkdir(parents=True)
        for photo in photos[:-1]:
            (folder / person.name / photo.name).symlink_to(photo)  # nothing copied from ../shared
        held_out[person.name] = photos[-1]
    gallery = tmp_path / "g.db"
    code, lines, _ = run("enroll", "--gallery", gallery, "--folder", folder, "--quiet")
    summary = lines[0]
    assert summary["persons_enrolled"] >= 10, summary["persons_refused"]
    assert all(r["reason"] for r in summary["refused"])
    enrolled = {p["person_id"] for p in summary["enrolled"]}
    code, lines, _ = run("identify", "--gallery", gallery, *(held_out[p] for p in sorted(enrolled)))
    assert code == 0
    hits = sum(line["faces"][0]["person_id"] == p for p, line in zip(sorted(enrolled), lines, strict=True)
               if line.get("faces"))
    assert hits >= len(enrolled) - 1, (hits, len(enrolled))


def test_bulk_result_counts(tmp_path, pipeline) -> None:  # type: ignore[no-untyped-def]
    from facegate.enrolment.sources import Photo

    with Gallery(tmp_path / "g.db") as g:
        result = enrol_photos(pipeline, g, [Photo("a", "a/x.jpg", None, "encrypted member")], total=1)
    assert result.as_dict()["ok"] is False and result.persons_refused[0]["person_id"] == "a"
    assert result.images == 1 and result.accepted == 0 and result.enrolled == []
