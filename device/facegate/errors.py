"""Error types that carry enough context (file, key, reason) for a user to act on them."""

from __future__ import annotations


class FacegateError(Exception):
    """Base class: every error a user can cause or fix derives from this."""


class ModelError(FacegateError):
    """A model file is missing, altered (checksum) or not what the manifest says."""


class ImageError(FacegateError):
    """An input image cannot be read or decoded."""


class GalleryError(FacegateError):
    """The gallery database is unusable for the requested operation."""
