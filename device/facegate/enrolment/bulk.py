"""Bulk enrolment: many people's photos into a gallery, each photo through the same gates as ``facegate enroll``.

Used by ``facegate enroll --folder DIR`` and by the web console's zip upload (pass a :class:`ZipPhotos`).
Every refused photo is reported with its reason; a person is enrolled when at least one of their photos is
accepted (the rule of ``facegate enroll``), in one gallery transaction per person, so a person is either
enrolled with all their accepted photos or not at all. A person none of whose photos passes is not created and
is listed in ``persons_refused``. Names and groups come from people.csv when given (groups go into the access
policy; the person's validity dates and schedule, if any, are kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from facegate.base.imageio import decode_image
from facegate.enrolment.photo import assess
from facegate.enrolment.sources import PersonInfo, Photo
from facegate.errors import ImageError
from facegate.gallery.store import Gallery, NewTemplate
from facegate.vision.pipeline import FacePipeline

__all__ = ["BulkResult", "Progress", "enrol_photos"]

#: ``progress(done, total, source)`` after each photo; ``total`` is None when the source did not say.
Progress = Callable[[int, int | None, str], None]


@dataclass
class BulkResult:
    enrolled: list[dict[str, Any]] = field(default_factory=list)  # {"person_id", "name", "templates_added"}
    refused: list[dict[str, str]] = field(default_factory=list)  # {"person_id", "image", "reason"}
    persons_refused: list[dict[str, str]] = field(default_factory=list)  # {"person_id", "reason"}
    csv_without_photos: list[str] = field(default_factory=list)
    images: int = 0
    accepted: int = 0
    gallery_version: int | None = None

    @property
    def ok(self) -> bool:
        """Every person found was enrolled, and there was someone to enrol."""
        return bool(self.enrolled) and not self.persons_refused

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "images": self.images, "accepted": self.accepted, "refused_images": len(self.refused),
            "persons_enrolled": len(self.enrolled),
            "templates_added": sum(p["templates_added"] for p in self.enrolled),
            "enrolled": self.enrolled, "refused": self.refused, "persons_refused": self.persons_refused,
            "csv_without_photos": self.csv_without_photos, "gallery_version": self.gallery_version,
        }


def enrol_photos(
    pipeline: FacePipeline,
    gallery: Gallery,
    photos: Iterable[Photo],
    people: Mapping[str, PersonInfo] | None = None,
    *,
    largest: bool = False,
    total: int | None = None,
    progress: Progress | None = None,
) -> BulkResult:
    """Assess every photo, then enrol each person with their accepted templates; see the module docstring."""
    gallery.check_embedder(pipeline.embedder_sha256)  # before the work, not after it
    people = people or {}
    result = BulkResult()
    templates: dict[str, list[NewTemplate]] = {}
    seen: dict[str, int] = {}
    for photo in photos:
        result.images += 1
        if photo.person_id:
            seen.setdefault(photo.person_id, 0)
        reason = photo.refused
        if reason is None and photo.data is not None:
            try:
                template, reason = assess(pipeline, decode_image(photo.data, photo.source), photo.source, largest)
            except ImageError as exc:
                template, reason = None, str(exc)
            if template is not None:
                templates.setdefault(photo.person_id, []).append(template)
                seen[photo.person_id] += 1
                result.accepted += 1
        if reason != "accepted":
            result.refused.append({"person_id": photo.person_id, "image": photo.source,
                                   "reason": reason or "no data"})
        if progress is not None:
            progress(result.images, total, photo.source)

    policy = None
    for person_id in sorted(seen):
        if not templates.get(person_id):
            result.persons_refused.append({"person_id": person_id, "reason": "no photo was accepted"})
            continue
        info = people.get(person_id, PersonInfo())
        added = gallery.enroll(person_id, templates[person_id], pipeline.embedder_sha256, name=info.name,
                               dim=pipeline.embedder.dim)
        if info.groups is not None:
            if policy is None:
                from facegate.access.policy import AccessPolicy

                policy = AccessPolicy(gallery)
            _set_groups(policy, person_id, info.groups)
        result.enrolled.append({"person_id": person_id, "name": info.name, "templates_added": added,
                                **({"groups": list(info.groups)} if info.groups is not None else {})})
    if policy is not None:
        policy.close()
    result.csv_without_photos = sorted(set(people) - set(seen))
    result.gallery_version = gallery.version
    return result


def _set_groups(policy: Any, person_id: str, groups: tuple[str, ...]) -> None:
    """Replace only the groups: ``set_person`` replaces the whole row, so carry the rest over."""
    current = policy.get_person(person_id)
    if current is None:
        policy.set_person(person_id, groups=list(groups))
    else:
        policy.set_person(person_id, valid_from=current.valid_from, valid_until=current.valid_until,
                          groups=list(groups), schedule=current.schedule)
