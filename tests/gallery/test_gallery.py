"""Gallery: add, search, remove, versioning, atomicity and embedder checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from facegate.errors import GalleryError
from facegate.gallery.index import EmbeddingIndex
from facegate.gallery.store import Gallery, NewTemplate
from facegate.vision.embedder import l2_normalise

SHA = "a" * 64


def _vectors(n: int, seed: int) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=(n, 192)).astype(np.float32))


def _templates(vectors: np.ndarray) -> list[NewTemplate]:
    return [NewTemplate(v, {"face_px": 100.0}) for v in vectors]


def test_enroll_search_remove(tmp_path: Path) -> None:
    people = _vectors(3, 0)
    with Gallery(tmp_path / "g.db") as g:
        assert g.version == 0
        for i, v in enumerate(people):
            g.enroll(f"p{i}", _templates(v[None]), SHA, name=f"Person {i}")
        assert g.version == 3
        assert g.counts() == (3, 3)
        index = g.build_index()
        top = index.search(people[1], k=2)
        assert top[0].person_id == "p1" and top[0].similarity == pytest.approx(1.0, abs=1e-5)
        assert top[1].person_id != "p1"
        assert g.remove("p1") == 1
        assert g.counts() == (2, 2)
        assert all(m.person_id != "p1" for m in g.build_index().search(people[1], k=3))
        with pytest.raises(GalleryError, match="no person 'p1'"):
            g.remove("p1")


def test_search_returns_best_template_per_person() -> None:
    base = _vectors(2, 1)
    noisy = l2_normalise(base[0] + 0.8 * _vectors(1, 2)[0])
    index = EmbeddingIndex(["a", "b", "a"], np.stack([noisy, base[1], base[0]]))
    assert index.persons == 2 and index.templates == 3
    top = index.search(base[0], k=5)
    assert [m.person_id for m in top] == ["a", "b"]
    assert top[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_empty_index_finds_nobody() -> None:
    assert EmbeddingIndex([], np.zeros((0, 0), dtype=np.float32)).search(np.ones(192)) == []


def test_remove_deletes_every_template(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("p", _templates(_vectors(4, 3)), SHA)
        g.enroll("p", _templates(_vectors(2, 4)), SHA)
        assert g.person("p")["templates"] == 6  # type: ignore[index]
        assert g.remove("p") == 6
        assert g.counts() == (0, 0)


def test_other_embedder_is_refused(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("p", _templates(_vectors(1, 5)), SHA)
        with pytest.raises(GalleryError, match="enrolled with embedder"):
            g.enroll("q", _templates(_vectors(1, 6)), "b" * 64)
        assert g.counts() == (1, 1)


def test_non_finite_templates_are_refused(tmp_path: Path) -> None:
    bad = _vectors(2, 8)
    bad[1, 3] = np.nan
    with Gallery(tmp_path / "g.db") as g:
        with pytest.raises(GalleryError, match="non-finite"):
            g.enroll("p", _templates(bad), SHA)
        assert g.counts() == (0, 0)  # the good template of the same call is not kept either


def test_failed_change_leaves_gallery_and_version_unchanged(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("p", _templates(_vectors(1, 7)), SHA)
        before = g.version
        with pytest.raises(RuntimeError), g.transaction() as db:
            db.execute("DELETE FROM templates")
            raise RuntimeError("power cut")
        assert g.version == before
        assert g.counts() == (1, 1)


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    vectors = _vectors(2, 8)
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("p", _templates(vectors), SHA, name="P", metadata={"badge": 7})
    with Gallery(tmp_path / "g.db") as g:
        person = g.person("p")
        assert person is not None and person["name"] == "P" and person["metadata"] == {"badge": 7}
        assert g.embedder_sha256 == SHA
        assert g.build_index().search(vectors[1])[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_removed_embeddings_do_not_stay_on_disk(tmp_path: Path) -> None:
    """secure_delete: the bytes of a removed person's templates are gone from the file, not just unlinked."""
    secret = _vectors(1, 9)
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("p", _templates(secret), SHA)
        g.enroll("q", _templates(_vectors(1, 10)), SHA)
        g.remove("p")
        g._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    needle = np.asarray(secret[0], dtype="<f4").tobytes()[:64]
    assert needle not in (tmp_path / "g.db").read_bytes()
